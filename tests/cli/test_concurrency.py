"""Two writers of one run: the second ``attack`` is refused at once, the first one's results
are complete, and the run is free again afterwards (a run's or a sweep's second writer is
refused the same way: tests/cli/test_bad_inputs.py, ``out-busy``, ``sweep-busy``)."""

from __future__ import annotations

import json
import shutil
import threading

import pytest
from _cli_support import leftovers

from condimmune.core.errors import UserError
from condimmune.experiments.attack import attack_run_dir


def _only(attacker: str) -> list[str]:
    return [f"attack.attackers={attacker}", "attack.suite_budget=5"]


def test_concurrent_attacks_on_one_run_never_interleave(tiny_run, tmp_path) -> None:
    """While one ``attack`` holds the run, a second one is refused at once; the first one's
    results are complete in metrics.json and its report, and the run is free again after."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    started, release = threading.Event(), threading.Event()
    outcome: list[object] = []

    def first(_attacker: str) -> None:
        started.set()
        release.wait(timeout=60)

    def run_first() -> None:
        try:
            outcome.append(attack_run_dir(run, _only("linear-gd"), on_progress=first))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run_first)
    thread.start()
    assert started.wait(timeout=60)
    with pytest.raises(UserError, match="another condimmune process"):
        attack_run_dir(run, _only("linear-lstsq"))
    release.set()
    thread.join()
    assert not isinstance(outcome[0], BaseException), outcome
    assert set(json.loads((run / "metrics.json").read_text())["attacks"]) == {"linear-gd"}
    attack_run_dir(run, _only("linear-lstsq"))  # free again
    assert set(json.loads((run / "metrics.json").read_text())["attacks"]) == {"linear-lstsq"}
    assert leftovers(tmp_path) == []
