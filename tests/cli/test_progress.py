"""What the user sees while a command computes: each long phase names what it does, how far
it is (``k/n``) and the time left (tqdm's ``[elapsed<left``); no bar before an error line;
nothing with ``--no-progress`` (src/condimmune/cli/progress.py, core/progress.py).

tqdm draws a bar when it appears and then at most every 0.1 s, so these tests look only at
what is drawn whatever the speed: each bar's first line, and each depth-0 event (the command
line redraws those)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from _cli_support import TINY_DEEP, invoke, sets

from condimmune.cli.boundary import say
from condimmune.cli.progress import Bars
from condimmune.core.progress import Progress, step_counter, steps_within

TIME_LEFT = r"\[\d\d:\d\d<\d\d:\d\d"
"""tqdm's ``[elapsed<time left`` once a unit is done."""


def _lines(stderr: str) -> list[str]:
    """What the terminal showed, one redraw per line (tqdm redraws with ``\\r``)."""
    return [line.strip() for line in re.split(r"[\r\n]", stderr) if line.strip()]


def _shown(stderr: str, pattern: str) -> bool:
    return any(re.search(pattern, line) for line in _lines(stderr))


def test_linear_attack_names_each_attacker_with_k_of_n_time_left_and_its_steps(
    tiny_run: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    result = invoke(
        "attack", run, "--attackers", "linear-gd,full-sgd", *sets(["attack.suite_budget=20"])
    )
    assert result.exit_code == 0, result.output
    err = result.stderr
    assert _shown(err, r"^attackers \(linear-gd\):\s+0%.*\b0/2\b")
    assert _shown(err, rf"^attackers \(full-sgd\):.*\b1/2 {TIME_LEFT}")
    assert _shown(err, rf"^attackers:\s+100%.*\b2/2 {TIME_LEFT}")
    # inside an attacker: its steps, 4 runs (task × features) × its settings × the budget
    assert _shown(err, r"^full-sgd \(harmful, raw inputs, lr=0\.05/L\):.*\b\d+/320\b.*step")
    assert _shown(err, r"^linear-gd \(harmful, raw inputs, lr=1/L\):.*/80\b")
    assert "linear-gd" in result.stdout  # the table follows the bars


def test_no_progress_draws_nothing(tiny_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    args = ["--attackers", "linear-gd", *sets(["attack.suite_budget=5"]), "--no-progress"]
    result = invoke("attack", run, *args)
    assert result.exit_code == 0, result.output
    assert result.stderr == ""


@pytest.mark.parametrize(
    "args",
    [
        ["attack", "no-such-run"],
        ["attack", "RUN", "--attackers", "no-such-attacker"],
        ["attack", "RUN", "--set", "attack.suite_budget=0"],
        ["run", "digits", "--set", "train.epochs=-1"],
    ],
)
def test_an_error_line_comes_with_no_bar_before_it(
    tiny_run: Path, tmp_path: Path, args: list[str]
) -> None:
    args = [str(tiny_run) if a == "RUN" else a for a in args]
    if args[0] == "run":
        args += ["--out", str(tmp_path / "out")]
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert _lines(result.stderr)[0].startswith("error:"), result.stderr
    assert "%|" not in result.stderr and "it [" not in result.stderr


@pytest.mark.slow
def test_a_deep_run_shows_its_evaluation_and_its_attack(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = invoke("run", "mnist-cnn", "--out", out, *sets(TINY_DEEP))
    assert result.exit_code == 0, result.output
    err = result.stderr
    assert _shown(err, r"^pre-train θ0 \(epoch 1/1\):")
    assert _shown(err, r"^immunize \(condnum\):.*\d+/\d+")
    assert _shown(err, r"^evaluate \(features θ0\):\s+0%.*\b0/6\b")
    assert _shown(err, rf"^evaluate \(probe θ_I\):.*\b5/6 {TIME_LEFT}")
    assert _shown(err, r"^features θ_I \(benign train\):.*batch")
    assert _shown(err, r"^probe θ0 \(lr=0\.001\):.*step")
    quick = sets(["attack.trials=2", "attack.probe_steps=4"])
    result = invoke("attack", out, "--attackers", "linear-gd,linear-adam", *quick)
    assert result.exit_code == 0, result.output
    err = result.stderr
    assert _shown(err, r"^attack inputs \(prefix θ0\):")
    assert _shown(err, rf"^attackers \(linear-adam\):.*\b1/2 {TIME_LEFT}")
    # linear-adam searches 2 trials per model and task: 8 in all
    assert _shown(err, r"^linear-adam \(harmful\):.*\b0/8\b.*trial")


def test_bars_draw_each_depth_and_come_back_after_an_error_line(capsys) -> None:
    with Bars() as bars:
        bars(Progress("phase", 0, 2, "first", "part"))
        count = step_counter(steps_within(bars, "first", 2, 0, "left"), "x", 1, 10, 0, "lr=1")
        for step in range(11):
            count(step)
        say("warning:", "a line of its own")  # closes every bar
        bars(Progress("phase", 1, 2, "second", "part"))
    err = capsys.readouterr().err
    assert _shown(err, r"^phase \(first\):\s+0%.*\b0/2\b")
    assert _shown(err, r"^first \(left, lr=1\):.*\b0/20\b")
    assert _shown(err, r"^phase \(second\):.*\b1/2\b")  # drawn again after the warning


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"done": 3, "total": 2}, "need 0 ≤ done ≤ total"),
        ({"done": -1, "total": 2}, "need 0 ≤ done ≤ total"),
        ({"done": 0, "total": 0}, "total ≥ 1"),
        ({"done": 0, "total": 1, "depth": 2}, "use 0 or 1"),
    ],
)
def test_an_impossible_progress_event_is_refused(kwargs: dict[str, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Progress("phase", **kwargs)
