"""Run directories: refuse a used output path, write a directory atomically, record versions."""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from condimmune._files import replace_atomically

__all__ = ["new_output_dir", "package_versions", "replace_atomically", "write_directory_atomically"]


def new_output_dir(path: str | Path, *, hint: str = "choose a new directory") -> Path:
    """Resolve ``path``, refuse it if it exists with content, and create its parent."""
    out = Path(path).expanduser().resolve()
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"--out {out} exists and is not empty; {hint}")
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def write_directory_atomically(final: Path, write: Callable[[Path], object]) -> None:
    """Fill a temporary sibling of ``final`` through ``write(tmp_dir)``, then rename it into
    place: an interrupted or failed write never leaves a half-written run directory."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        write(tmp)
        if final.exists():
            final.rmdir()
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def package_versions(*extra: str) -> dict[str, str]:
    """Python's and the core packages' versions (plus ``extra``), for ``config.yaml``."""
    out = {"python": platform.python_version()}
    for pkg in ("condimmune", "torch", "numpy", "scikit-learn", "mlxtend", "pandas", *extra):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out
