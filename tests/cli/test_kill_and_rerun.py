"""Fault tests: a linear run, a deep run (tiny mnist-cnn) and a sweep are killed with SIGKILL
at a random point after they start work, then the same command runs again (``--resume`` for
the sweep). The result equals an uninterrupted run's, and no temporary file, temporary
directory or lock file is left anywhere.

The kill point is drawn uniformly over the uninterrupted run's duration; its seed is
``CONDIMMUNE_FAULT_SEED`` (default: fixed), and every assertion message shows the delay.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _cli_support import TIMING_KEYS, TINY_DEEP, TINY_LINEAR, invoke, leftovers, sets, without
from safetensors.torch import load_file

RNG = random.Random(int(os.environ.get("CONDIMMUNE_FAULT_SEED", "12")))


def kill_during(args: list[str], lock: Path, duration: float) -> float:
    """Start ``condimmune ARGS`` in a process, wait until it holds its output's lock (it has
    started work), SIGKILL it after a random delay in [0, duration]; returns the delay."""
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen(
        [sys.executable, "-m", "condimmune.cli", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not lock.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    delay = RNG.uniform(0, duration)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return delay


def comparable(document: object) -> object:
    """A metrics document without its timings and resume bookkeeping."""
    return without(document, TIMING_KEYS)


def assert_same(a: object, b: object, where: str = "") -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-6), where
    else:
        assert a == b, where


def assert_same_run(run: Path, control: Path, files: tuple[str, ...], delay: float) -> None:
    note = f"killed after {delay:.2f} s"
    for name in files:
        got, want = load_file(run / name), load_file(control / name)
        assert got.keys() == want.keys(), note
        for key in got:
            torch.testing.assert_close(got[key], want[key], msg=f"{name}:{key}, {note}")
    metrics = [comparable(json.loads((d / "metrics.json").read_text())) for d in (run, control)]
    assert_same(*metrics, where=note)


def test_linear_run_killed_anywhere_then_rerun_equals_an_uninterrupted_run(
    tiny_run: Path, tmp_path: Path
) -> None:
    args = ["run", "digits", "--no-progress", *sets(TINY_LINEAR)]
    out = tmp_path / "run"
    wall = json.loads((tiny_run / "metrics.json").read_text())["wall_seconds"]
    delay = kill_during([*args, "--out", str(out)], tmp_path / ".run.lock", 1.5 * wall + 1)
    if not (out / "metrics.json").exists():  # killed before it finished
        assert not out.exists(), f"a half-written run directory, killed after {delay:.2f} s"
        result = invoke(*args, "--out", out)
        assert result.exit_code == 0, result.output
    files = ("extractor.safetensors", "head.safetensors", "data.safetensors")
    assert_same_run(out, tiny_run, files, delay)
    assert leftovers(tmp_path) == [], f"killed after {delay:.2f} s"


def test_deep_run_killed_anywhere_then_rerun_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    args = ["run", "mnist-cnn", "--no-progress", *sets(TINY_DEEP)]
    control = tmp_path / "control"
    start = time.monotonic()
    result = invoke(*args, "--out", control)
    assert result.exit_code == 0, result.output
    duration = time.monotonic() - start
    out = tmp_path / "run"
    delay = kill_during([*args, "--out", str(out)], tmp_path / ".run.lock", 1.5 * duration + 1)
    if not (out / "metrics.json").exists():
        assert not out.exists(), f"a half-written run directory, killed after {delay:.2f} s"
        result = invoke(*args, "--out", out)
        assert result.exit_code == 0, result.output
    assert not (tmp_path / "run.checkpoints").exists()
    assert_same_run(out, control, ("original.safetensors", "immunized.safetensors"), delay)
    assert leftovers(tmp_path) == [], f"killed after {delay:.2f} s"


def sweep_rows(folder: Path) -> list[dict[str, str]]:
    with (folder / "sweep.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    return [{k: v for k, v in r.items() if k not in {"wall_seconds", "run_dir"}} for r in rows]


def test_sweep_killed_anywhere_then_resumed_equals_an_uninterrupted_sweep(
    tmp_path: Path,
) -> None:
    args = ["sweep", "digits", "--methods", "none,closed-form", "--pairs", "1-7"]
    args += ["--workers", "1", "--no-progress", *sets(TINY_LINEAR)]
    control = tmp_path / "control"
    start = time.monotonic()
    result = invoke(*args, "--out", control)
    assert result.exit_code == 0, result.output
    duration = time.monotonic() - start
    out = tmp_path / "sweep"
    delay = kill_during([*args, "--out", str(out)], tmp_path / ".sweep.lock", 1.5 * duration + 1)
    result = invoke(*args, "--out", out, "--resume")
    assert result.exit_code == 0, f"killed after {delay:.2f} s: {result.output}"
    assert sweep_rows(out) == sweep_rows(control), f"killed after {delay:.2f} s"
    for run in (out / "runs").rglob("metrics.json"):
        twin = control / run.relative_to(out)
        assert_same(
            comparable(json.loads(run.read_text())),
            comparable(json.loads(twin.read_text())),
            where=f"{run}, killed after {delay:.2f} s",
        )
    assert leftovers(tmp_path) == [], f"killed after {delay:.2f} s"


@pytest.mark.parametrize(
    "stale",
    [
        ".out.tmp-abc123/metrics.json",
        ".out.lock",
        "out.checkpoints/.checkpoint.tmp99-ab.safetensors",
    ],
    ids=["temporary-run-directory", "lock-file", "temporary-checkpoint"],
)
def test_the_next_run_removes_what_a_killed_run_left(tmp_path: Path, stale: str) -> None:
    """Deterministic leftovers of a kill, removed by the next command that takes the run's
    lock (here one that then fails on its data, so that it runs in a blink)."""
    path = tmp_path / stale
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{")
    result = invoke(
        "run", "--out", tmp_path / "out", "--no-progress", "--set", "data.root=/nonexistent"
    )
    assert result.exit_code == 2, result.output
    assert leftovers(tmp_path) == []
    if not stale.endswith(".lock"):  # a lock file nobody holds is simply taken over
        assert "warning: removed 1 temporary file(s)" in " ".join(result.stderr.split())


def test_attack_removes_a_temporary_file_a_killed_attack_left(
    tiny_run: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / ".metrics.tmp4711-abcd.json").write_text("{")
    result = invoke("attack", run, "--attackers", "magic", "--no-progress")
    assert result.exit_code == 2, result.output
    assert leftovers(tmp_path) == []
