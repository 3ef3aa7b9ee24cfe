"""SIGINT and SIGTERM as an exception, for the commands that must clean up when stopped.

:func:`signals_raise` installs, for the duration of a block only, handlers that raise
:class:`Interrupted` in the main thread on the first SIGINT or SIGTERM (``kill``,
``timeout``, batch schedulers, Ctrl-C), so that ``finally`` blocks and context managers
clean up as after any error; later signals are ignored while that cleanup runs (it is
bounded: it never waits for a job to finish). The previous handlers are restored when the
block ends. Nothing is installed on import; the block runs unchanged outside the main
thread (Python handles signals there only) and for a signal whose disposition is to be
ignored (``nohup``, the background jobs of a non-interactive shell) or was set outside
Python. The command line prints an :class:`Interrupted` as one ``interrupted:`` line and
exits with the conventional status 128 + the signal's number (130 for SIGINT, 143 for
SIGTERM). SIGKILL cannot be caught: what it leaves is removed by the next run (see
:mod:`condimmune.experiments.rundir`).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

__all__ = ["Interrupted", "signals_raise"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
"""The signals that stop a command with a cleanup (SIGKILL cannot be caught)."""


class Interrupted(BaseException):
    """A command was stopped by ``signum``; ``detail`` says what was left and how to go on.

    A ``BaseException``, like ``KeyboardInterrupt``: ``except Exception`` blocks (one failed
    run of a sweep becomes a row) must not swallow it."""

    def __init__(self, signum: int, detail: str = "") -> None:
        super().__init__(signum, detail)
        self.signum = signum
        self.detail = detail

    @property
    def exit_status(self) -> int:
        """128 + the signal's number, as a shell reports a process the signal ended."""
        return 128 + self.signum

    def __str__(self) -> str:
        name = signal.Signals(self.signum).name
        return f"stopped by {name}" + (f" {self.detail}" if self.detail else "")


@contextmanager
def signals_raise() -> Iterator[None]:
    """Inside the block, the first SIGINT or SIGTERM raises :class:`Interrupted` (see the
    module docstring); the previous handlers are back when it ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[int, Callable[[int, FrameType | None], Any] | int] = {}
    owner = os.getpid()
    stopping = False

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        if os.getpid() != owner:  # a forked child that has not set its own handlers yet
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        if stopping:  # the cleanup the first one started must not be cut short
            return
        stopping = True
        raise Interrupted(signum)

    for wanted in STOP_SIGNALS:
        old = signal.getsignal(wanted)
        if old is None or old == signal.SIG_IGN:
            continue
        previous[wanted] = old
        signal.signal(wanted, stop)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
