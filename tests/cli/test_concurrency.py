"""Two writers of one run: the second ``attack`` is refused at once, the first one's results
are complete, and the run is free again afterwards (a run's or a sweep's second writer is
refused the same way: tests/cli/test_bad_inputs.py, ``out-busy``, ``sweep-busy``). The
refusal names the holder's pid, or says that it has exited while some process it started
keeps the lock; a forked process never keeps its parent's lock (real processes, real
``flock``)."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from _cli_support import leftovers

from condimmune.core.errors import UserError
from condimmune.experiments.attack import attack_run_dir
from condimmune.experiments.rundir import lock_path, run_dir_lock


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
    with pytest.raises(UserError, match="another thread of this process is writing"):
        attack_run_dir(run, _only("linear-lstsq"))
    release.set()
    thread.join()
    assert not isinstance(outcome[0], BaseException), outcome
    assert set(json.loads((run / "metrics.json").read_text())["attacks"]) == {"linear-gd"}
    attack_run_dir(run, _only("linear-lstsq"))  # free again; attackers are merged
    attacks = json.loads((run / "metrics.json").read_text())["attacks"]
    assert set(attacks) == {"linear-gd", "linear-lstsq"}
    assert leftovers(tmp_path) == []


# --- who holds a lock ------------------------------------------------------------------------
HOLD = (
    "import fcntl, os, sys\n"
    "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
    "fcntl.flock(fd, fcntl.LOCK_EX)\n"
    "os.write(fd, sys.argv[2].replace('SELF', str(os.getpid())).encode())\n"
    "print('locked', flush=True)\n"
    "sys.stdin.read()\n"
)
"""Hold an ``flock`` on ``argv[1]`` with ``argv[2]`` in the file (``SELF``: the holder's
pid) until stdin closes."""


def _exited_pid() -> int:
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    return done.pid


HOLDERS = {
    # the holder wrote its pid, as run_dir_lock does
    "holder-alive": (
        lambda: "SELF\n",
        r"another condimmune process \(pid \d+\) is writing this directory: {run}; "
        r"wait for it to finish \(it holds \.run\.lock\)",
    ),
    # the pid in the file has exited, yet the lock is held: an fd a process inherited
    "holder-exited": (
        lambda: f"{_exited_pid()}\n",
        r"\.run\.lock is held open by some process, but condimmune process \d+ that took the "
        r"lock has exited \(a process it started keeps the lock\): {run}; stop that process "
        r"\(`fuser -v {lock}` or `lsof {lock}` shows it\), then run the command again",
    ),
    # nothing written yet (or by another program)
    "no-pid": (
        lambda: "",
        r"another condimmune process is writing this directory: {run}; wait for it",
    ),
}


@pytest.mark.parametrize("content, message", HOLDERS.values(), ids=HOLDERS.keys())
def test_a_busy_lock_names_its_holder(tmp_path, content, message) -> None:
    run = tmp_path / "run"
    lock = lock_path(run)
    text = content()
    with subprocess.Popen(
        [sys.executable, "-c", HOLD, str(lock), text],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(UserError) as err, run_dir_lock(run):
            pass
        assert holder.stdin is not None
        holder.stdin.close()
    expected = message.format(run=re.escape(str(run)), lock=re.escape(str(lock)))
    assert re.match(expected, str(err.value)), str(err.value)
    if "SELF" in text:
        assert f"(pid {holder.pid})" in str(err.value)
    with run_dir_lock(run):  # free once the holder has gone
        pass
    assert leftovers(tmp_path) == []


def held(lock: Path) -> bool:
    """Whether some open file of ``lock`` (this process's included) holds its ``flock``."""
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_a_forked_child_neither_keeps_nor_releases_its_parents_lock(tmp_path) -> None:
    """A process forked while the lock is held (a sweep's worker) closes the lock file at
    once: leaving the block in the child releases nothing, and the parent's release frees
    the lock although the child still runs."""
    run = tmp_path / "run"
    left_r, left_w = os.pipe()
    go_r, go_w = os.pipe()
    child = -1
    with run_dir_lock(run):
        child = os.fork()
        if child:
            assert os.read(left_r, 1) == b"x"  # the child has left the block too
            assert held(lock_path(run))
    if child == 0:  # the forked child, after leaving the block: waits until told to exit
        try:
            os.write(left_w, b"x")
            os.read(go_r, 1)
        finally:
            os._exit(0)
    try:
        assert not lock_path(run).exists()
        with run_dir_lock(run):  # free, while the child that inherited it still runs
            assert held(lock_path(run))
    finally:
        os.write(go_w, b"x")
        os.waitpid(child, 0)
        for fd in (left_r, left_w, go_r, go_w):
            os.close(fd)
