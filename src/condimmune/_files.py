"""Atomic file writes shared by every package that writes files (checkpoints, run directories).

A file is written under a temporary name beside its destination and renamed over it, so a
reader never sees a half-written file, whatever kills the writer. A write that fails for an
operating-system reason (full disk, no permission, a path through a file) raises an
``OSError`` naming the destination, also when the writer wrapped it in its own exception
type (safetensors reports ``... (os error 28)`` in a ``SafetensorError``).

Temporary names start with ``.`` and contain ``.tmp`` (:data:`TEMPORARY_MARK`), so that the
next writer of a run directory can find and remove those a killed process left behind.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "TEMPORARY_MARK",
    "default_cache_dir",
    "file_sha256",
    "os_error_naming",
    "replace_atomically",
]

TEMPORARY_MARK = ".tmp"
"""Part of every temporary name written here (``.<stem>.tmp<pid>-<token><suffix>``)."""

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
