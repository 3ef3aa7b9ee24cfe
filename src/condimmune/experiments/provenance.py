"""What ran: the record ``config.yaml`` keeps beside the recipe, under ``versions``.

The recipe (the resolved config) says what to compute; the same recipe on the same machine
gives the same ``metrics.json`` apart from timings. How it was computed is recorded beside
it, outside the recipe (the run's manifest fingerprints the recipe without ``versions``):

====================  =======================================================================
``python`` …          Python's and the packages' versions (:func:`package_versions`; torch's
                      for a deep run only)
``git_commit``        the commit of the condimmune checkout that ran (:func:`git_commit`),
                      only when condimmune runs from a git checkout
``git_tree_changed``  whether that checkout's tracked files differ from the commit
                      (:func:`git_tree_changed`: the commit alone then does not say what
                      ran), only when ``git`` can answer
``torch_threads``     a deep run's ``torch.get_num_threads()`` when the run was written: the
                      threads it ran with (the config's ``threads: 0`` means torch's default;
                      Lightning's DDP and a sweep's workers set their own)
``blas_threads``      a linear run's (numpy and scipy, no torch) BLAS threads, read by
                      ``threadpoolctl``, and ``blas``: each BLAS loaded (numpy's and
                      scipy's wheels carry one each), its version and the kernels it chose
                      for this CPU (``numpy: openblas 0.3.31 SkylakeX; scipy: …``)
``device``            ``cpu`` or ``cuda`` (a deep run's ``train.accelerator`` resolved as
                      Lightning resolves ``auto``), and ``device_name`` when known
``cpu_capability``    a deep run's SIMD kernels that ATen chose (``AVX512``, ``AVX2``,
``onednn``            ``default``) and whether oneDNN (mkldnn) was on: both change float
                      rounding across CPUs
``precision``         a deep run's ``train.precision``; ``64-true`` for linear runs (float64)
====================  =======================================================================
"""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["git_commit", "git_tree_changed", "package_versions", "run_record"]

_CORE_PACKAGES = ("condimmune", "numpy", "scipy", "scikit-learn", "mlxtend", "pandas")
_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
"""A full commit id (SHA-1, or SHA-256 in a repository that uses it)."""
_CHECKOUT = Path(__file__).resolve().parents[3]
"""The folder above ``src/`` when condimmune runs from its source tree (an editable install)."""


def package_versions(*extra: str) -> dict[str, str]:
    """Python's and the core packages' versions (plus ``extra``), for ``config.yaml``."""
    out = {"python": platform.python_version()}
    for pkg in (*_CORE_PACKAGES, *extra):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def git_commit(checkout: Path | None = None) -> str | None:
    """The commit ``HEAD`` names in ``checkout``'s ``.git`` (default: condimmune's own source
    tree; a folder, or a ``gitdir:`` file as in a worktree), read from the files without
    running git; ``None`` when ``checkout`` is no git checkout of a Python project (an
    installed condimmune) or its ``.git`` cannot be read: recording what ran never fails a
    run."""
    checkout = _CHECKOUT if checkout is None else checkout
    try:
        if not (checkout / "pyproject.toml").is_file():
            return None
        git = checkout / ".git"
        if git.is_file():
            pointer = git.read_text(encoding="utf-8").strip()
            if not pointer.startswith("gitdir:"):
                return None
            git = checkout / pointer.removeprefix("gitdir:").strip()
        head = (git / "HEAD").read_text(encoding="utf-8").strip()
        if _SHA.fullmatch(head):  # a detached HEAD
            return head
        if not head.startswith("ref:"):
            return None
        return _resolve_ref(git, head.removeprefix("ref:").strip())
    except (OSError, UnicodeDecodeError):
        return None


def _resolve_ref(git: Path, ref: str) -> str | None:
    """The commit of branch ``ref`` (``refs/heads/main``): its loose file, in ``git`` or in
    the common folder a worktree's ``commondir`` names, else its line in ``packed-refs``."""
    common = git
    if (git / "commondir").is_file():
        common = git / (git / "commondir").read_text(encoding="utf-8").strip()
    for folder in (git, common):
        loose = folder / ref
        if loose.is_file():
            sha = loose.read_text(encoding="utf-8").strip()
            return sha if _SHA.fullmatch(sha) else None
    packed = common / "packed-refs"
    if packed.is_file():
        for line in packed.read_text(encoding="utf-8").splitlines():
            sha, _, name = line.partition(" ")
            if name.strip() == ref and _SHA.fullmatch(sha):
                return sha
    return None


def git_tree_changed(checkout: Path | None = None) -> bool | None:
    """Whether ``git status`` lists a tracked file of ``checkout`` (default: condimmune's own
    source tree) as changed or staged; ``None`` when no ``git`` program is installed or it
    cannot answer in 10 s (untracked files, such as run directories, do not count)."""
    checkout = _CHECKOUT if checkout is None else checkout
    program = shutil.which("git")
    if program is None:
        return None
    try:
        done = subprocess.run(
            [program, "-C", str(checkout), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(done.stdout.strip()) if done.returncode == 0 else None


def _cpu_name() -> str | None:
    """The CPU's model name (Linux's ``/proc/cpuinfo``, else :func:`platform.processor`)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or None


def run_record(
    recipe: Mapping[str, Any], *packages: str, torch_run: bool = True
) -> dict[str, str | int | bool]:
    """``config.yaml``'s ``versions`` section for a run of ``recipe`` (a resolved config as
    plain data) written by this process (module docstring); ``packages``: the family's
    packages besides the core ones; ``torch_run``: False for a run on numpy and scipy alone
    (a linear run), whose record then names their BLAS and never imports torch."""
    record: dict[str, str | int | bool] = {}
    versions = package_versions(*(("torch", *packages) if torch_run else packages))
    commit = git_commit()
    for package, version in versions.items():
        record[package] = version
        if package == "condimmune" and commit is not None:
            record["git_commit"] = commit
            changed = git_tree_changed()
            if changed is not None:
                record["git_tree_changed"] = changed
    if not torch_run:
        record.update(_blas_record())
        record["device"] = "cpu"
        name = _cpu_name()
        if name:
            record["device_name"] = name
        record["precision"] = "64-true"
        return record
    import torch

    train = recipe.get("train", {})
    accelerator = train.get("accelerator", "cpu")  # a linear run has none: always the CPU
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    record["torch_threads"] = torch.get_num_threads()
    record["device"] = "cuda" if gpu else "cpu"
    name = torch.cuda.get_device_name() if gpu else _cpu_name()
    if name:
        record["device_name"] = name
    record["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    onednn = torch.backends.mkldnn.is_available()  # type: ignore[no-untyped-call]
    record["onednn"] = bool(torch.backends.mkldnn.enabled and onednn)
    record["precision"] = str(train.get("precision", "64-true"))
    return record


def _blas_record() -> dict[str, str | int | bool]:
    """The BLAS libraries loaded, as ``threadpoolctl`` sees them: the threads they run on
    (the largest, ``blas_threads``) and, per library, the package folder that ships it, its
    name, version and the kernels it chose (``blas``)."""
    import numpy  # noqa: F401 - loads the BLAS libraries that threadpoolctl inspects
    import scipy.linalg  # noqa: F401
    from threadpoolctl import threadpool_info

    blas = [info for info in threadpool_info() if info.get("user_api") == "blas"]
    if not blas:
        return {}

    def named(info: dict[str, Any]) -> str:
        folder = Path(str(info.get("filepath", ""))).parent.name.removesuffix(".libs")
        what = " ".join(
            str(info[key]) for key in ("internal_api", "version", "architecture") if info.get(key)
        )
        return f"{folder}: {what}" if folder else what

    threads = max(int(info["num_threads"]) for info in blas)
    return {"blas_threads": threads, "blas": "; ".join(named(info) for info in blas)}
