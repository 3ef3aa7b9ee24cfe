"""Worker processes that never outlive the process that started them.

:func:`results_in_workers` computes ``fn(item)`` for every item in a pool of worker
processes and yields the results as they finish.

* A worker exits when its parent dies, whatever ended it (SIGKILL included): on Linux the
  kernel sends it SIGTERM (``prctl(PR_SET_PDEATHSIG)``; a parent that died before that call
  took effect is noticed right after it); elsewhere a thread of the worker checks its
  parent's pid twice a second.
* A worker ignores SIGINT (Ctrl-C reaches every process of the terminal's foreground group:
  the parent decides) and dies at once on SIGTERM.
* A worker holds none of its parent's run-directory locks: :mod:`~condimmune.experiments.
  rundir` closes them in every forked process.
* When the caller stops early (an exception in its loop, such as
  :class:`~condimmune.experiments.interrupt.Interrupted` or ``KeyboardInterrupt``, or a
  failed job), the jobs not started are cancelled and the workers are sent SIGTERM (SIGKILL
  after 5 s) and reaped before the exception goes on: no job keeps running.

Workers are forked on Linux: they start at once (spawn would import torch and condimmune
again in each worker: about 3 s of CPU each on a 2-core machine), and methods registered at
run time (``register_method``) are known to them. Elsewhere the platform's default start
method is used (spawn on macOS), which knows only what importing the modules registers.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing.connection import wait
from typing import Any, TypeVar

__all__ = ["exit_with_parent", "results_in_workers", "watch_parent"]

T = TypeVar("T")
R = TypeVar("R")

_PR_SET_PDEATHSIG = 1
"""``prctl`` option of ``<linux/prctl.h>``: the signal a process gets when its parent dies."""

_POLL_SECONDS = 0.5
"""How often the watchdog thread (where there is no ``prctl``) checks the parent."""

_GRACE_SECONDS = 5.0
"""How long a stopped worker has to exit after SIGTERM before it gets SIGKILL."""


def results_in_workers(
    fn: Callable[[T], R],
    items: Sequence[T],
    processes: int,
    initializer: Callable[..., object],
    initargs: tuple[Any, ...] = (),
) -> Generator[R, None, None]:
    """``fn(item)`` for every item, computed in ``processes`` worker processes that each run
    ``initializer(*initargs)`` first, yielded as they finish; see the module docstring for
    how workers end. Close the generator (``contextlib.closing``) when leaving it early, so
    that the workers stop at once rather than when it is garbage-collected."""
    finished: queue.SimpleQueue[Future[R]] = queue.SimpleQueue()
    method = "fork" if sys.platform.startswith("linux") else None
    pool = ProcessPoolExecutor(
        processes,
        mp_context=multiprocessing.get_context(method),
        initializer=_start_worker,
        initargs=(os.getpid(), initializer, initargs),
    )
    try:
        for item in items:
            pool.submit(fn, item).add_done_callback(finished.put)
        for _ in items:
            # a signal handler may raise while this waits: SimpleQueue.get holds no lock
            # that the pool's thread needs (concurrent.futures.as_completed would)
            yield finished.get().result()
    except BaseException:
        _stop(pool)
        raise
    pool.shutdown()


def _stop(pool: ProcessPoolExecutor) -> None:
    """Terminate the pool's workers (SIGTERM, SIGKILL after :data:`_GRACE_SECONDS`), cancel
    its pending jobs and wait for its thread, which reaps the workers."""
    workers = list((pool._processes or {}).values())  # Python ≥ 3.14: pool.terminate_workers()
    for process in workers:
        process.terminate()
    running = {process.sentinel: process for process in workers}
    deadline = time.monotonic() + _GRACE_SECONDS
    while running and (left := deadline - time.monotonic()) > 0:
        ended = set(wait(list(running), timeout=left))
        running = {sentinel: p for sentinel, p in running.items() if sentinel not in ended}
    for process in running.values():
        process.kill()
    pool.shutdown(wait=True, cancel_futures=True)


def _start_worker(
    parent: int, initializer: Callable[..., object], initargs: tuple[Any, ...]
) -> None:
    """A worker's first step: its signals, its death with ``parent``, then ``initializer``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the handler a fork inherited
    exit_with_parent(parent)
    initializer(*initargs)


def exit_with_parent(parent: int) -> None:
    """Make this process end by SIGTERM as soon as ``parent`` is no longer its parent (it
    died; the process was handed to init or a subreaper)."""
    if not _parent_death_signal():
        watchdog = threading.Thread(
            target=watch_parent, args=(parent,), name="condimmune-parent-watch", daemon=True
        )
        watchdog.start()
    if os.getppid() != parent:  # it died before the signal was asked for
        os.kill(os.getpid(), signal.SIGTERM)


def _parent_death_signal() -> bool:
    """Ask the kernel for SIGTERM when this process's parent dies; whether it could (only
    Linux can)."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    args = (signal.SIGTERM, 0, 0, 0)
    return int(libc.prctl(_PR_SET_PDEATHSIG, *(ctypes.c_ulong(a) for a in args))) == 0


def watch_parent(parent: int) -> None:
    """Poll until ``parent`` is no longer this process's parent, then end it by SIGTERM."""
    while os.getppid() == parent:
        time.sleep(_POLL_SECONDS)
    os.kill(os.getpid(), signal.SIGTERM)
