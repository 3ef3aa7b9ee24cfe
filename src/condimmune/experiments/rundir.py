"""Run directories: claim an output path, lock it, write it atomically, read it strictly.

A run directory (or a sweep directory) has one writer at a time: :func:`run_dir_lock`
holds an exclusive ``flock`` on the sibling file ``.<name>.lock`` (removed on release; the
kernel releases the lock of a killed process, so a stale lock file never blocks), and a
second writer gets a :class:`~condimmune.core.errors.UserError` at once, naming the pid of
the holder (which it writes into the lock file). An ``flock`` lasts while any process has
the file open, so a forked child (a sweep's worker, a data-loader process) closes its
parent's lock files at once and never releases them: a lock always dies with the process
that took it. Should an older program still hold it through a process that took no lock
itself, the error says that the pid in the lock file has exited and how to find the
process. Whoever takes the lock removes the temporary files and directories an interrupted
writer of the same path left behind (:func:`remove_stale_temporaries`) and says so with a
:class:`~condimmune.core.errors.StaleFilesWarning`.

:func:`claim_output_dir` checks a new output path before any compute (not a file, parents
are directories, writable, empty) and takes its lock; :func:`write_directory_atomically`
fills a temporary sibling and renames it into place.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

from condimmune._files import TEMPORARY_MARK, os_error_naming, replace_atomically
from condimmune.core.errors import StaleFilesWarning, UserError
from condimmune.core.user_files import user_path
from condimmune.experiments.lock_holder import busy_lock_error
from condimmune.experiments.yaml_reading import read_yaml

__all__ = [
    "claim_output_dir",
    "lock_path",
    "read_json",
    "read_yaml_mapping",
    "remove_stale_temporaries",
    "replace_atomically",
    "run_dir_lock",
    "write_directory_atomically",
]

_held = threading.local()
"""The run directories whose lock this thread holds (re-entrant within a thread)."""

_lock_fds: set[int] = set()
"""The open lock files of this process, closed in a forked child (:func:`_forget_locks`)."""


def _forget_locks() -> None:
    """In a forked child: close the parent's lock files (the locks stay the parent's and end
    with it) and forget which directories it held."""
    global _held
    for fd in _lock_fds:
        with suppress(OSError):
            os.close(fd)
    _lock_fds.clear()
    _held = threading.local()


if hasattr(os, "register_at_fork"):  # POSIX; flock is POSIX-only anyway
    os.register_at_fork(after_in_child=_forget_locks)


def lock_path(run_dir: Path) -> Path:
    """The lock file of ``run_dir``: ``.<name>.lock`` beside it."""
    return run_dir.with_name(f".{run_dir.name}.lock")


def _open_locked(path: Path, run_dir: Path) -> int:
    import fcntl

    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            error = busy_lock_error(fd, path, run_dir)
            os.close(fd)
            raise error from None
        try:  # the previous holder may have removed the file after we opened it
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


@contextmanager
def run_dir_lock(run_dir: Path) -> Iterator[None]:
    """Hold the exclusive lock of ``run_dir`` (see the module docstring); re-entrant within
    one thread. Another holder raises :class:`UserError` naming the directory."""
    held: set[Path] = _held.__dict__.setdefault("dirs", set())
    if run_dir in held:
        yield
        return
    path = lock_path(run_dir)
    fd = _open_locked(path, run_dir)
    _lock_fds.add(fd)
    held.add(run_dir)
    owner = os.getpid()
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{owner}\n".encode())  # named by a second writer's error
        removed = remove_stale_temporaries(run_dir)
        if removed:
            names = ", ".join(p.name for p in removed[:3]) + (" …" if len(removed) > 3 else "")
            warnings.warn(
                f"removed {len(removed)} temporary file(s) left by an interrupted run of "
                f"{run_dir}: {names}",
                StaleFilesWarning,
                stacklevel=3,
            )
        yield
    finally:
        if os.getpid() == owner:  # a forked child leaving the block has nothing to release
            held.discard(run_dir)
            _lock_fds.discard(fd)
            path.unlink(missing_ok=True)
            os.close(fd)


_DIR_TEMPORARY = re.compile(r"[A-Za-z0-9_]+")
"""The random part of a :func:`tempfile.mkdtemp` name."""


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Remove what an interrupted writer of ``run_dir`` left behind: temporary siblings
    ``.<name>.tmp-*`` (:func:`write_directory_atomically`) and temporary files ``.*.tmp*``
    inside ``run_dir`` and ``<name>.checkpoints/`` (``replace_atomically``). Call it only
    while holding the directory's lock; returns what was removed."""
    prefix = f".{run_dir.name}{TEMPORARY_MARK}-"
    found = []
    if run_dir.parent.is_dir():
        found = [
            p
            for p in run_dir.parent.iterdir()
            if p.name.startswith(prefix) and _DIR_TEMPORARY.fullmatch(p.name[len(prefix) :])
        ]
    for folder in (run_dir, run_dir.with_name(f"{run_dir.name}.checkpoints")):
        if folder.is_dir():
            found += [
                p for p in folder.iterdir() if p.name.startswith(".") and TEMPORARY_MARK in p.name
            ]
    for p in found:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return sorted(found)


def _create_parents(directory: Path, out: Path, key: str) -> list[Path]:
    """Create ``directory`` and its missing parents; returns those created (outermost first)."""
    missing = []
    node = directory
    while not node.exists() and node != node.parent:
        missing.append(node)
        node = node.parent
    if not node.is_dir():
        raise UserError(
            f"{node} is a file, not a directory", f"{key} {out}", f"choose another {key}"
        )
    created = []
    try:
        for folder in reversed(missing):
            try:
                folder.mkdir()
            except FileExistsError:  # another process (a sweep's worker) made it meanwhile
                if not folder.is_dir():
                    raise
                continue
            created.append(folder)
    except OSError as exc:
        _remove_empty(created)
        raise UserError(
            f"cannot create {exc.filename or folder} ({exc.strerror or exc})",
            f"{key} {out}",
            f"choose a writable location for {key}",
        ) from None
    return created


def _remove_empty(folders: list[Path]) -> None:
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:
            return


@contextmanager
def claim_output_dir(
    path: str | os.PathLike[str],
    *,
    hint: str = "choose a new directory",
    resume: bool = False,
    key: str = "--out",
) -> Iterator[Path]:
    """The resolved ``path`` of a new run (or sweep) directory, locked until the block ends.

    Checked before any compute: not empty text, not an existing directory (``.`` included:
    a command never replaces a directory it did not create) unless ``resume`` (the caller
    then checks that its own command made it), its parents are directories (missing ones are
    created, and removed again if the block fails while they are still empty), and something
    can be written there (the lock file is the probe). Each refusal is a
    :class:`UserError` naming ``key`` and the path."""
    if not os.fspath(path).strip():
        raise UserError("is empty", key, f"give {key} the path of a new directory")
    try:
        out = user_path(path, key).resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop, a name too long
        raise UserError(
            f"not a usable path ({exc})", f"{key} {path}", f"choose another {key}"
        ) from None
    if not out.name or out == out.parent:
        raise UserError("not a new directory's path", f"{key} {out}", f"choose another {key}")
    if out.exists() and not out.is_dir():
        raise UserError("exists and is a file, not a directory", f"{key} {out}", hint)
    if out.is_dir() and not resume:
        what = "is the current directory" if out == Path.cwd().resolve() else "already exists"
        raise UserError(
            f"{what} ({key} is a new directory that the command creates)", f"{key} {out}", hint
        )
    created: list[Path] = []
    try:
        with ExitStack() as stack:
            for attempt in range(3):
                created += _create_parents(out.parent, out, key)
                try:
                    stack.enter_context(run_dir_lock(out))
                    break
                except FileNotFoundError:  # a failing neighbour removed an empty parent
                    if out.parent.is_dir():  # it is there: files cannot be made in it (/proc)
                        raise UserError(
                            f"cannot create files in {out.parent}",
                            f"{key} {out}",
                            f"choose a writable location for {key}",
                        ) from None
                    if attempt == 2:
                        raise UserError(
                            f"{out.parent} keeps disappearing", f"{key} {out}", hint
                        ) from None
                except OSError as exc:
                    raise UserError(
                        f"cannot write in {out.parent} ({exc.strerror or exc})",
                        f"{key} {out}",
                        f"choose a writable location for {key}",
                    ) from None
            yield out
    except BaseException:
        _remove_empty(created)
        raise


def write_directory_atomically(final: Path, write: Callable[[Path], object]) -> None:
    """Fill a temporary sibling of ``final`` through ``write(tmp_dir)``, then rename it into
    place: an interrupted or failed write never leaves a half-written run directory. An
    operating-system error (a full disk) is raised as an ``OSError`` naming ``final``."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}{TEMPORARY_MARK}-", dir=final.parent))
    try:
        write(tmp)
        if final.exists():  # made by someone else while this was written: never replaced
            raise UserError(
                "was created by another program while this command wrote it",
                final,
                "choose another output directory",
            )
        os.replace(tmp, final)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        named = os_error_naming(exc, final, temporary=tmp)
        if named is None or named is exc:
            raise
        raise named from exc


def read_yaml_mapping(path: Path, fix: str) -> dict[str, Any]:
    """A YAML file that holds a mapping, read strictly
    (:func:`~condimmune.experiments.yaml_reading.read_yaml`: no repeated keys, no anchors,
    size and depth limits); anything else is a :class:`UserError` naming it."""
    data = read_yaml(path, fix)
    if not isinstance(data, dict):
        kind = "nothing" if data is None else f"a {type(data).__name__}"
        raise UserError(f"holds {kind}, not a mapping", path, fix)
    return data


def read_json(path: Path, fix: str) -> object:
    """A JSON document; an unreadable or invalid file is a :class:`UserError` naming it."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError("not UTF-8 text", path, fix) from None
    except OSError as exc:
        raise UserError(f"cannot be read ({exc.strerror or exc})", path, fix) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(
            f"not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})", path, fix
        ) from None
    except RecursionError:
        raise UserError("not valid JSON (nested too deeply)", path, fix) from None
