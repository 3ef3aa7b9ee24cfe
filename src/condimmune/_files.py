"""Atomic file writes shared by every package that writes files (checkpoints, run directories).

A file is written under a temporary name beside its destination and renamed over it, so a
reader never sees a half-written file, whatever kills the writer. A write that fails for an
operating-system reason (full disk, no permission, a path through a file) raises an
``OSError`` naming the destination, also when the writer wrapped it in its own exception
type (safetensors reports ``... (os error 28)`` in a ``SafetensorError``).

Temporary names start with ``.`` and contain ``.tmp`` (:data:`TEMPORARY_MARK`), so that the
next writer of a run directory can find and remove those a killed process left behind.

A cache directory has no lock (parallel sweep workers read and write it at once), so
:func:`remove_abandoned_temporaries` removes only the temporaries whose writer is gone: its
process id (in the name) is not alive here and the file has not been modified for
:data:`WRITING_GRACE_S` (a process of another host or container that shares the directory
has a process id that means nothing here, but a file it is writing keeps being modified),
or the file has not been modified for :data:`ABANDONED_AGE_S` (a process id is reused, so
an alive one may belong to another program).
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import stat
import time
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "ABANDONED_AGE_S",
    "TEMPORARY_MARK",
    "WRITING_GRACE_S",
    "default_cache_dir",
    "file_sha256",
    "os_error_naming",
    "remove_abandoned_temporaries",
    "replace_atomically",
    "temporary_writer",
]

TEMPORARY_MARK = ".tmp"
"""Part of every temporary name written here (``.<stem>.tmp<pid>-<token><suffix>``)."""

WRITING_GRACE_S = 300.0
"""Seconds since its last modification before a dead writer's temporary is removed: a file
being written is modified continuously (network file systems may show a change a minute
late), so one untouched this long is not being written, even by another host."""

ABANDONED_AGE_S = 86_400.0
"""Seconds since its last modification after which a temporary is removed whoever wrote it."""

_TEMPORARY_NAME = re.compile(
    rf"\..*{re.escape(TEMPORARY_MARK)}(?P<pid>[1-9][0-9]*)-[0-9a-f]{{8}}(?:\.[^.]*)?"
)
"""A name :func:`replace_atomically` gives its temporaries."""

_OS_ERROR = re.compile(r"os error (\d+)")


def default_cache_dir() -> Path:
    """The one cache setting (the MNIST array cache, installed weights, prefix caches):
    ``$CONDIMMUNE_CACHE_DIR``, else ``$XDG_CACHE_HOME/condimmune``, else
    ``~/.cache/condimmune``. A deep run's ``model.cache_dir`` overrides it for that run."""
    explicit = os.environ.get("CONDIMMUNE_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "condimmune"


def file_sha256(path: Path) -> str:
    """The sha256 of ``path``'s bytes (hex), read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def os_error_naming(
    exc: BaseException, path: Path, *, temporary: Path | None = None
) -> OSError | None:
    """``exc`` as an ``OSError`` that names ``path`` (instead of no file or the temporary
    one), if it is an operating-system error or wraps one; ``None`` otherwise."""
    if isinstance(exc, OSError):
        unnamed = exc.filename is None or (temporary is not None and exc.filename == str(temporary))
        if exc.errno is not None and unnamed:
            return OSError(exc.errno, exc.strerror or str(exc), str(path))
        return exc
    match = _OS_ERROR.search(str(exc))
    if match is None:
        return None
    number = int(match.group(1))
    return OSError(number, os.strerror(number), str(path))


def replace_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """Write through ``write(tmp_path)`` then rename over ``path`` (never half-written)."""
    # keeps the extension; process id and token keep concurrent writers of one file apart
    token = f"{os.getpid()}-{secrets.token_hex(4)}"
    tmp = path.with_name(f".{path.stem}{TEMPORARY_MARK}{token}{path.suffix}")
    try:
        write(tmp)
        tmp.replace(path)
    except Exception as exc:
        named = os_error_naming(exc, path, temporary=tmp)
        if named is None or named is exc:
            raise
        raise named from exc
    finally:
        tmp.unlink(missing_ok=True)


def temporary_writer(name: str) -> int | None:
    """The process id in ``name`` if it is the name of a :func:`replace_atomically`
    temporary (``.<stem>.tmp<pid>-<token><suffix>``), else ``None``."""
    match = _TEMPORARY_NAME.fullmatch(name)
    return int(match.group("pid")) if match else None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except (ProcessLookupError, OverflowError):  # none has that number (or one that large)
        return False
    except PermissionError:  # it exists and belongs to another user
        pass
    return True


def remove_abandoned_temporaries(folder: Path) -> list[Path]:
    """Remove the :func:`replace_atomically` temporaries in ``folder`` whose writer is gone
    (module docstring: a dead writer and unmodified for :data:`WRITING_GRACE_S`, or
    unmodified for :data:`ABANDONED_AGE_S`); returns those removed, sorted. Other files,
    a missing or unreadable folder and files it may not remove are left alone."""
    try:
        entries = list(folder.iterdir())
    except OSError:
        return []
    now = time.time()
    removed = []
    for path in entries:
        pid = temporary_writer(path.name)
        if pid is None:
            continue
        try:
            info = path.lstat()
        except OSError:  # renamed into place or removed meanwhile
            continue
        age = now - info.st_mtime
        gone = age > ABANDONED_AGE_S or (age > WRITING_GRACE_S and not _process_alive(pid))
        if not stat.S_ISREG(info.st_mode) or not gone:
            continue
        try:
            path.unlink()
        except OSError:  # removed by another process meanwhile, or not ours to remove
            continue
        removed.append(path)
    return sorted(removed)
