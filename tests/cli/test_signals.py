"""Real signals on a real sweep: a ``condimmune sweep`` process with two workers is stopped
while its first jobs run, by SIGTERM (``kill``, ``timeout``, a batch scheduler), by SIGINT
to its process group (Ctrl-C in a terminal) or by SIGKILL. Its workers never outlive it,
its lock is free at once, SIGTERM and SIGINT leave nothing behind (exit 143 and 130, one
``interrupted:`` line), and ``--resume`` finishes the sweep.

Each sweep process is forked from a warm launcher process that has imported the command
line once: it then runs ``condimmune sweep ...`` exactly as the console script does (its
own session, SIGINT and SIGTERM at their defaults, ending through ``SystemExit`` and the
interpreter's normal exit), without paying the seconds of importing torch each time.

Below that, the two ways a worker notices its parent's death (``prctl`` on Linux, the
watchdog thread elsewhere) and the handlers that turn SIGINT and SIGTERM into
``Interrupted``.
"""

from __future__ import annotations

import fcntl
import json
import os
import queue
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from _cli_support import TINY_LINEAR, invoke, leftovers, sets

from condimmune.experiments.interrupt import Interrupted, signals_raise
from condimmune.experiments.rundir import lock_path

PAIRS = ("1-7", "7-1", "2-3")
"""Three jobs for two workers: when the first ones run, one is still waiting."""

WAIT_SECONDS = 120.0
"""The longest any wait below may take on a slow, loaded machine (polled, never slept)."""


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.01)


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first), or ``None``."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text[text.rindex(")") + 2 :].split()


def children(parent: int) -> dict[int, str]:
    """The live child processes of ``parent``: pid → start time (against pid reuse)."""
    found = {}
    for entry in Path("/proc").iterdir():
        fields = _stat(int(entry.name)) if entry.name.isdigit() else None
        if fields is not None and int(fields[1]) == parent and fields[0] not in "ZX":
            found[int(entry.name)] = fields[19]
    return found


def alive(pid: int, started: str) -> bool:
    """Whether ``pid`` is still the process started at ``started`` and has not exited (a
    zombie whose new parent does not reap it has exited)."""
    fields = _stat(pid)
    return fields is not None and fields[0] not in "ZX" and fields[19] == started


def ended(pid: int) -> bool:
    """Whether ``pid`` has exited (gone, or a zombie)."""
    fields = _stat(pid)
    return fields is None or fields[0] in "ZX"


def lock_is_free(path: Path) -> bool:
    """Whether nobody holds the ``flock`` of ``path`` (no file: nobody)."""
    if not path.exists():
        return True
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


LAUNCHER = textwrap.dedent(
    """
    import json, os, signal, sys
    import condimmune.experiments.sweep  # what `condimmune sweep` imports, once for all
    from condimmune.cli import app

    for line in sys.stdin:
        args, stderr = json.loads(line)
        pid = os.fork()
        if pid == 0:  # the command: its own session, signals as a terminal starts it
            os.setsid()
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
            os.dup2(os.open(stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)
            sys.argv = ["condimmune", *args]
            sys.exit(app())  # SystemExit, then the interpreter's own exit
        print(pid, flush=True)
        print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
    """
)
"""Reads ``[args, stderr path]`` lines; for each, forks ``condimmune ARGS`` and prints its
pid, then its exit status (negative: the signal that killed it)."""


class Launcher:
    """The warm launcher process (:data:`LAUNCHER`), one per module."""

    def __init__(self) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
        self.process = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def start(self, args: list[str], stderr: Path) -> int:
        """Fork ``condimmune ARGS`` (stderr to the file ``stderr``); its pid."""
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps([args, str(stderr)]) + "\n")
        self.process.stdin.flush()
        return int(self.lines.get(timeout=WAIT_SECONDS))

    def status(self) -> int:
        """The exit status of the last command started, once it has ended."""
        return int(self.lines.get(timeout=WAIT_SECONDS))

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=WAIT_SECONDS)


@pytest.fixture(scope="module")
def launcher() -> Iterator[Launcher]:
    started = Launcher()
    yield started
    started.close()


@dataclass(frozen=True)
class Stop:
    signum: signal.Signals
    to: str  # "sweep"; "group": all its processes, as a terminal's Ctrl-C; "worker": one
    status: int  # the sweep process's exit status (negative: killed by that signal)
    line: str  # its one line on stderr, whitespace collapsed ("": not checked)


def _stopped(name: str) -> str:
    """The ``interrupted:`` line a signal ``name`` leads to (a pattern; ``{out}`` to fill)."""
    return (
        rf"interrupted: stopped by {name} after [0-2] of 3 runs: {{out}}; to run the other "
        r"[1-3], repeat the command with --resume --out {out} \(finished runs are kept\)"
    )


STOPS = {
    "sigterm": Stop(signal.SIGTERM, "sweep", 143, _stopped("SIGTERM")),
    "ctrl-c": Stop(signal.SIGINT, "group", 130, _stopped("SIGINT")),
    "sigkill": Stop(signal.SIGKILL, "sweep", -signal.SIGKILL, ""),
    "worker-killed": Stop(
        signal.SIGKILL,
        "worker",
        2,
        r"error: a worker process ended abruptly \(killed from outside, or by the system when "
        r"memory ran out\) after [0-2] of 3 runs: {out}; repeat the command with --resume "
        r"--out {out} to run the other [1-3] \(with fewer --workers if memory ran out\)",
    ),
}


@pytest.mark.parametrize("stop", STOPS.values(), ids=STOPS.keys())
def test_a_stopped_sweep_leaves_no_worker_and_no_lock_and_resumes(
    launcher: Launcher, tmp_path: Path, stop: Stop
) -> None:
    out = tmp_path / "sweep"
    args = ["sweep", "digits", "--methods", "none", "--pairs", ",".join(PAIRS)]
    args += ["--workers", "2", "--no-progress", *sets(TINY_LINEAR)]
    job_locks = [lock_path(out / "runs" / "none" / pair / "seed0") for pair in PAIRS]
    sweep = launcher.start([*args, "--out", str(out)], tmp_path / "stderr.txt")
    workers: dict[int, str] = {}
    status: int | None = None
    try:
        wait_until(
            lambda: any(p.exists() for p in job_locks) or ended(sweep),
            "a worker to start a job",
        )
        workers = children(sweep)
        assert len(workers) == 2, (tmp_path / "stderr.txt").read_text()
        if stop.to == "group":
            os.killpg(sweep, stop.signum)
        else:
            os.kill(sweep if stop.to == "sweep" else min(workers), stop.signum)
        status = launcher.status()
        assert status == stop.status
        assert lock_is_free(lock_path(out))  # at once: no worker holds it
        wait_until(lambda: not any(alive(*w) for w in workers.items()), "the workers to exit")
    finally:  # never leave a process behind, whatever failed
        if status is None:
            os.kill(sweep, signal.SIGKILL)
            launcher.status()
        for pid, started in workers.items():
            if alive(pid, started):
                os.kill(pid, signal.SIGKILL)
    if stop.line:  # the sweep process cleaned up and said so in one line
        assert leftovers(tmp_path) == []
        lines = (tmp_path / "stderr.txt").read_text().splitlines()
        (line,) = [" ".join(line.split()) for line in lines if line.strip()]
        assert re.fullmatch(stop.line.format(out=re.escape(str(out))), line), line
    resumed = invoke(*args, "--out", out, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert (out / "sweep.csv").read_text().count("\n") == 1 + len(PAIRS)
    assert leftovers(tmp_path) == []


# --- a worker dies with its parent, by either mechanism ---------------------------------
CHILD = textwrap.dedent(
    """
    import os, sys, time
    from condimmune.experiments.workers import exit_with_parent, watch_parent

    how, parent = sys.argv[1], os.getpid()
    if os.fork():  # the parent: waits to be killed, or dies at once
        if how != "parent-gone-first":
            time.sleep(600)
        os._exit(0)
    if how == "prctl":
        exit_with_parent(parent)
    print(os.getpid(), flush=True)
    if how == "watchdog":
        watch_parent(parent)
    if how == "parent-gone-first":
        while os.getppid() == parent:
            time.sleep(0.01)
        exit_with_parent(parent)
    time.sleep(600)
    """
)


@pytest.mark.parametrize("how", ["prctl", "watchdog", "parent-gone-first"])
def test_a_worker_exits_when_its_parent_dies(how: str) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, how], stdout=subprocess.PIPE, text=True
    ) as parent:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        fields = _stat(child)
        assert fields is not None
        started = fields[19]
        try:
            parent.kill()  # SIGKILL: nothing of the parent runs any more
            parent.wait()
            wait_until(lambda: not alive(child, started), "the child to exit")
        finally:
            if alive(child, started):
                os.kill(child, signal.SIGKILL)


# --- the handlers ---------------------------------------------------------------------------
def test_sigterm_raises_interrupted_once_and_the_handlers_come_back() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted) as raised, signals_raise():
        assert signal.getsignal(signal.SIGTERM) is not before
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            pytest.fail("SIGTERM did not raise")
        finally:  # the cleanup: a second signal does not cut it short
            os.kill(os.getpid(), signal.SIGTERM)
    assert raised.value.__context__ is None  # not raised again during the cleanup
    assert (raised.value.signum, raised.value.exit_status) == (signal.SIGTERM, 143)
    assert str(raised.value) == "stopped by SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before


def test_an_ignored_signal_stays_ignored() -> None:
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as nohup or `cmd &` leave it
    try:
        with signals_raise():
            os.kill(os.getpid(), signal.SIGINT)  # an installed handler would raise here
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)
