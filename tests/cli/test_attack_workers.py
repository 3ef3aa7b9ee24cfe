"""``attack.workers``: a deep attack's searches shared out among worker processes give the
numbers of the same attack in one process, and the suite then reads every trial back."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from _cli_support import QUICK_ATTACK, TINY_DEEP, invoke, sets, without

from condimmune.attacks.deep_records import DeepAttackOptions
from condimmune.attacks.deep_suite import run_deep_searches
from condimmune.attacks.registry import DEEP_ATTACKERS, DeepAttacker, DeepFamily
from condimmune.core.progress import Progress
from condimmune.experiments.attack import attack_run_dir
from condimmune.experiments.config import apply_overrides, default_config
from condimmune.experiments.config.results import result_settings
from condimmune.experiments.pipelines.deep import attack_workers as workers_module
from condimmune.experiments.pipelines.deep.attack_workers import (
    attack_workers,
    dearest_first,
    search_in_workers,
)

QUICK = [*QUICK_ATTACK, "attack.weight_free_steps=3"]  # the settling rule (Eq. R1) runs too

# where the searches live and how long they took: the rest must be equal
_APART = frozenset({"storage", "original_storage", "wall_seconds", "seconds"})


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("workers") / "run"
    result = invoke("run", "mnist-cnn", "--out", out, "--no-progress", *sets(TINY_DEEP))
    assert result.exit_code == 0, result.output
    return out


def _attacked(run: Path, where: Path, workers: int) -> tuple[dict[str, Any], list[Progress]]:
    shutil.copytree(run, where)
    heard: list[Progress] = []
    outcome = attack_run_dir(where, [*QUICK, f"attack.workers={workers}"], on_progress=heard.append)
    assert outcome.metrics.attack_suite is not None
    return json.loads((where / "metrics.json").read_text())["attack_suite"], heard


def test_searches_in_workers_give_the_numbers_of_one_process(run, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # each worker computes on one thread: the same rounding
    try:
        alone, alone_heard = _attacked(run, tmp_path / "alone", 1)
    finally:
        torch.set_num_threads(threads)
    # one worker: the suite runs its trials in this process, as before workers existed
    assert not [p for p in alone_heard if p.task == "searches"]
    assert any(p.depth == 1 and p.done > 0 for p in alone_heard)
    shared, heard = _attacked(run, tmp_path / "shared", 2)
    assert without(shared, _APART) == without(alone, _APART)
    assert shared["yardstick"] is not None
    searches = [p for p in heard if p.task == "searches"]
    assert searches[-1].done == searches[-1].total == len(DeepAttacker)
    # the suite after the workers ran no trial itself: every one was read back
    after = heard[heard.index(searches[-1]) + 1 :]
    trials = [p for p in after if p.depth == 1]
    assert trials and all(p.done == 0 for p in trials)


def test_a_failed_search_in_a_worker_is_raised_here(monkeypatch):
    def fails(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the search failed")

    monkeypatch.setattr(workers_module, "run_deep_searches", fails)  # forked workers see it
    options = DeepAttackOptions(storage="sqlite:///unused.db")
    chosen = [DeepAttacker.LINEAR_GD, DeepAttacker.SKIP_ADAM]
    with pytest.raises(RuntimeError, match="the search failed"):
        search_in_workers(chosen, None, None, options, 2)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("setting", "attackers", "expected"),
    [
        pytest.param(1, 26, 1, id="one"),
        pytest.param(3, 26, 3, id="as-set"),
        pytest.param(8, 2, 2, id="at-most-one-per-attacker"),
        pytest.param(0, 1000, len(os.sched_getaffinity(0)), id="zero-is-one-per-core"),
    ],
)
def test_attack_workers(setting, attackers, expected):
    assert attack_workers(setting, attackers) == expected


def test_attack_workers_refuses_a_negative_count():
    with pytest.raises(ValueError, match=r"attack\.workers must be ≥ 0"):
        attack_workers(-1, 5)


def test_without_fork_the_searches_stay_in_this_process():
    assert attack_workers(0, 26, platform="darwin") == 1
    assert attack_workers(1, 26, platform="win32") == 1
    with pytest.raises(ValueError, match=r"Linux only \(this is darwin\): set attack\.workers=1"):
        attack_workers(2, 26, platform="darwin")


def test_search_in_workers_needs_two():
    with pytest.raises(ValueError, match="at least 2 workers"):
        search_in_workers([DeepAttacker.LINEAR_GD], None, None, DeepAttackOptions(), 1)  # type: ignore[arg-type]


def test_searches_apart_from_their_suite_must_be_stored():
    with pytest.raises(ValueError, match="must be stored"):
        run_deep_searches(["linear-gd"], None, None, DeepAttackOptions())  # type: ignore[arg-type]


def test_the_worker_count_is_not_a_result_setting():
    """Runs attacked with other worker counts have the same numbers: a matrix combines them."""
    settings = result_settings(apply_overrides(default_config("mnist-cnn"), ["attack.workers=3"]))
    assert "attack.workers" not in settings and "attack.trials" in settings


def test_the_dearest_attackers_come_first():
    order = dearest_first(list(DeepAttacker))
    assert sorted(order) == sorted(DeepAttacker)
    families = [DEEP_ATTACKERS[a].family for a in order]
    assert families[0] is DeepFamily.FULL and families[-1] is DeepFamily.PROBE
    first_probe = families.index(DeepFamily.PROBE)
    assert order[first_probe] is DeepAttacker.MLP_ADAM  # the hidden layer before the heads
    assert families.index(DeepFamily.BLOCKS) < families.index(DeepFamily.RAW)
