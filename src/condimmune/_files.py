"""Atomic file writes shared by every package that writes files (checkpoints, run directories).

A file is written under a temporary name beside its destination and renamed over it, so a
reader never sees a half-written file, whatever kills the writer.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

__all__ = ["replace_atomically"]


def replace_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """Write through ``write(tmp_path)`` then rename over ``path`` (never half-written)."""
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")  # keeps the extension
    try:
        write(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
