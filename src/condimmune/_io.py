"""Output-file helpers shared by the run directory, the report and the sweep."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def replace_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """Write through ``write(tmp_path)`` then rename over ``path`` (never half-written)."""
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")  # keeps the extension
    try:
        write(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def new_output_dir(path: str | Path, *, hint: str = "choose a new directory") -> Path:
    """Resolve ``path``, refuse it if it exists with content, and create its parent."""
    out = Path(path).expanduser().resolve()
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"--out {out} exists and is not empty; {hint}")
    out.parent.mkdir(parents=True, exist_ok=True)
    return out
