"""Who holds a run directory's lock: the error a second writer gets.

The process that takes a lock writes its pid into the lock file
(:func:`~condimmune.experiments.rundir.run_dir_lock`), so the error names it. Since forked
children close their parent's lock files, a lock ends with the process that took it; if the
pid in the file has exited while the lock is still held, some other process has the file
open (a process an older program started, which inherited it), and the error says how to
find it instead of asking to wait for a process that is gone.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from condimmune.core.errors import UserError

__all__ = ["busy_lock_error"]

_REREAD_SECONDS = 0.1
"""Pause before reading the pid again: a new holder writes it just after taking the lock."""


def busy_lock_error(fd: int, path: Path, run_dir: Path) -> UserError:
    """The error for the lock file ``path`` of ``run_dir`` (open as ``fd``) that another
    process holds, naming the pid in the file and whether that process is still alive."""
    pid = _pid_in(fd)
    if pid is not None and not _alive(pid):
        time.sleep(_REREAD_SECONDS)  # it may still be the previous (killed) holder's pid
        pid = _pid_in(fd)
    again = "run the command again, or choose another output directory"
    if pid is not None and not _alive(pid):
        return UserError(
            f"{path.name} is held open by some process, but condimmune process {pid} that "
            "took the lock has exited (a process it started keeps the lock)",
            run_dir,
            f"stop that process (`fuser -v {path}` or `lsof {path}` shows it), then {again}",
        )
    who = "another condimmune process" + ("" if pid is None else f" (pid {pid})")
    if pid == os.getpid():
        who = "another thread of this process"
    return UserError(
        f"{who} is writing this directory",
        run_dir,
        f"wait for it to finish (it holds {path.name}) and {again}",
    )


def _pid_in(fd: int) -> int | None:
    """The pid written into the lock file ``fd`` (``None``: nothing yet, or not a pid)."""
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() and int(text) > 0 else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True
