"""Run manifests: the files of a run directory bound to each other and to their recipe.

Every run directory ends with ``manifest.json``, written last::

    {"format": 1, "recipe": "<fingerprint of config.yaml's recipe>",
     "files": {"config.yaml": "<sha256>", "metrics.json": "<sha256>", ...}}

It lists the sha256 of every file the run wrote (sub-folders included) except itself, hidden
files (temporaries, the update journal) and the files the family declares *unsealed* (a
deep run's Optuna storage, which a resumable attack search writes while it runs).
:func:`verify_manifest` is what ``evaluate``, ``attack``, ``attack-matrix`` and a sweep's
``--resume`` call before they trust a directory: a file changed, swapped in from another
run or missing, or a ``config.yaml`` edited after the run, is a
:class:`~condimmune.core.errors.UserError` naming the file.

Commands that add to a finished run (``attack``) change several files at once. They go
through :func:`update_run_files`: the new files are written into a hidden folder of the run
directory together with the new manifest, a journal naming them is written atomically, and
only then are they moved into place. A process killed before the journal exists leaves the
run as it was (the folder is removed by the next command); one killed after it is finished
by the next command (:func:`finish_interrupted_update`), so the files on disk always belong
together.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from condimmune._files import file_sha256, replace_atomically
from condimmune.core.errors import UserError
from condimmune.experiments.rundir import run_dir_lock

__all__ = [
    "MANIFEST",
    "finish_interrupted_update",
    "require_listed",
    "seal_run_dir",
    "stage_update",
    "update_run_files",
    "verify_manifest",
]

MANIFEST = "manifest.json"
_FORMAT = 1
_JOURNAL = ".update-journal.json"
_PENDING = ".update-pending-"
_RERUN = "run the experiment again into a new --out"


def _sealed_files(directory: Path, unsealed: Sequence[str]) -> Iterator[Path]:
    for path in sorted(directory.rglob("*")):
        name = path.relative_to(directory).as_posix()
        hidden = any(part.startswith(".") for part in Path(name).parts)
        kept = not any(fnmatch.fnmatchcase(name, pattern) for pattern in unsealed)
        if path.is_file() and not hidden and name != MANIFEST and kept:
            yield path


def _digests(directory: Path, unsealed: Sequence[str]) -> dict[str, str]:
    return {
        p.relative_to(directory).as_posix(): file_sha256(p)
        for p in _sealed_files(directory, unsealed)
    }


def _manifest_text(recipe: str, files: dict[str, str]) -> str:
    document = {"format": _FORMAT, "recipe": recipe, "files": dict(sorted(files.items()))}
    return json.dumps(document, indent=2) + "\n"


def seal_run_dir(directory: Path, recipe: str, *, unsealed: Sequence[str] = ()) -> None:
    """Write ``directory``'s ``manifest.json`` (module docstring) for the files it holds
    now; ``recipe`` is the run plan's fingerprint."""
    text = _manifest_text(recipe, _digests(directory, unsealed))
    replace_atomically(directory / MANIFEST, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _read_manifest(run_dir: Path) -> dict[str, object]:
    path = run_dir / MANIFEST
    if not path.is_file():
        raise UserError(
            "not a sealed run directory (no manifest.json: written before run directories "
            "were sealed, or the manifest was removed)",
            run_dir,
            _RERUN,
        )
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise UserError(f"not a readable manifest ({type(exc).__name__})", path, _RERUN) from None
    files = document.get("files") if isinstance(document, dict) else None
    if (
        not isinstance(document, dict)
        or document.get("format") != _FORMAT
        or not isinstance(document.get("recipe"), str)
        or not isinstance(files, dict)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items())
    ):
        raise UserError("not a condimmune manifest (format 1)", path, _RERUN)
    return document


def verify_manifest(run_dir: Path, recipe: str | None) -> frozenset[str]:
    """Check that ``run_dir``'s files are the ones its run wrote (module docstring): every
    file the manifest lists exists with its sha256, and the manifest's recipe is ``recipe``
    (the fingerprint of ``config.yaml``'s recipe; ``None`` for a directory without one). The
    first difference is a :class:`UserError` naming the file. Returns the listed names (a
    caller checks that the files it needs are among them: :func:`require_listed`)."""
    document = _read_manifest(run_dir)
    files = document["files"]
    assert isinstance(files, dict)  # checked by _read_manifest
    if recipe is not None and document["recipe"] != recipe:
        raise UserError(
            "and manifest.json belong to different runs (the config is not the one the "
            "manifest was written for)",
            run_dir / "config.yaml",
            f"restore the run's own files, or {_RERUN}",
        )
    for name, digest in files.items():
        path = run_dir / name
        if not path.is_file():
            raise UserError("is missing (manifest.json lists it)", path, _RERUN)
        if file_sha256(path) != digest:
            raise UserError(
                "was changed or replaced after the run wrote it (its sha256 differs from "
                "manifest.json's)",
                path,
                f"restore the run's own file, or {_RERUN}",
            )
    return frozenset(files)


def require_listed(run_dir: Path, listed: frozenset[str], required: Sequence[str]) -> None:
    """A :class:`UserError` naming the first of ``required`` that the manifest does not list
    (a file put into the directory after the run)."""
    for name in required:
        if name not in listed:
            raise UserError(
                "was not written by this run (manifest.json does not list it)",
                run_dir / name,
                _RERUN,
            )


def update_run_files(
    run_dir: Path, write: Callable[[Path], object], *, unsealed: Sequence[str] = ()
) -> None:
    """Replace or add files of the sealed ``run_dir`` all at once (module docstring):
    ``write(folder)`` writes the new versions into an empty folder (flat file names), then
    they replace the run's files together with a new manifest (for the same recipe). Hold
    the directory's lock, and verify the run first (:func:`verify_manifest`)."""
    stage_update(run_dir, write, unsealed=unsealed)
    finish_interrupted_update(run_dir)


def stage_update(
    run_dir: Path, write: Callable[[Path], object], *, unsealed: Sequence[str] = ()
) -> None:
    """The first half of :func:`update_run_files`: the new files and manifest written into a
    hidden folder and the journal naming them written; nothing of the run replaced yet (a
    process killed right after it leaves this state, which the next command completes)."""
    finish_interrupted_update(run_dir)
    recipe = str(_read_manifest(run_dir)["recipe"])
    pending = Path(tempfile.mkdtemp(prefix=_PENDING, dir=run_dir))
    try:
        write(pending)
        names = sorted(p.name for p in pending.iterdir())
        # the manifest of the run as it will be: its files, the new ones on top
        files = {k: v for k, v in _digests(run_dir, unsealed).items() if k not in names}
        text = _manifest_text(recipe, {**files, **_digests(pending, unsealed)})
        (pending / MANIFEST).write_text(text, encoding="utf-8")
        journal = {"pending": pending.name, "files": [*names, MANIFEST]}
        replace_atomically(run_dir / _JOURNAL, lambda tmp: tmp.write_text(json.dumps(journal)))
    except BaseException:
        shutil.rmtree(pending, ignore_errors=True)
        raise


def finish_interrupted_update(run_dir: Path) -> bool:
    """Complete an update whose journal was written (its files are moved into place, the
    manifest last) and remove the folders of updates that never reached their journal,
    holding the directory's lock while there is something to do. Returns whether an update
    was completed."""
    journal_path = run_dir / _JOURNAL
    if not journal_path.exists() and not any(run_dir.glob(f"{_PENDING}*")):
        return False
    with run_dir_lock(run_dir):
        return _finish(run_dir, journal_path)


def _finish(run_dir: Path, journal_path: Path) -> bool:
    completed = journal_path.is_file()
    if completed:
        journal = json.loads(journal_path.read_text(encoding="utf-8"))
        pending = run_dir / str(journal["pending"])
        for name in journal["files"]:
            source = pending / str(name)
            if source.exists():  # moved already by the process that was interrupted
                os.replace(source, run_dir / str(name))
        journal_path.unlink()
    for leftover in run_dir.glob(f"{_PENDING}*"):
        shutil.rmtree(leftover, ignore_errors=True)
    return completed
