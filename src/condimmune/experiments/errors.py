"""The one table that explains an error a user can cause, as ``<what>: <where>; <how to fix>``.

The command line prints :func:`user_message` as ``error: <message>`` with exit code 2; an
exception the table does not know is an internal error (a bug). Rows, first match wins:

======================================  ===============================================
exception                               message
======================================  ===============================================
``UserError``                           its own (loaders name the file and config key)
``ConfigError``                         its own (the dotted config key)
``ArgumentError``                       its own, the arguments called by their config keys
                                        (:func:`config_keys`)
``RecordError``                         the damaged field of ``metrics.json``; re-run
``MemoryError``                         out of memory; lower the sizes in the config
``OSError``                             the system's reason, the file, a fix per errno
                                        (full disk, permissions, read-only, not a dir)
``yaml.YAMLError``                      not valid YAML
safetensors' ``SafetensorError``        not a readable safetensors file
``zlib.error``, ``EOFError``            truncated or corrupt compressed data
``torch.linalg.LinAlgError``            linear algebra failed: NaN/inf or degenerate data
Lightning's ``MisconfigurationException``  ``train.accelerator``/``devices``/``strategy``/
                                        ``precision`` do not fit this machine
``FloatingPointError``                  its own (training diverged: lower a rate)
======================================  ===============================================

Any other exception, a plain ``ValueError`` included, is a bug: the code below the command
line raises the types above for what a user can cause.

Types of packages that are not imported yet are skipped (an exception of torch cannot
happen before torch is imported), so the table costs no imports.
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

from condimmune.core.errors import ArgumentError, UserError
from condimmune.core.records import RecordError

__all__ = ["config_keys", "user_message"]

_ERRNO_FIX = {
    errno.ENOSPC: "free some space, or choose another --out on a disk with room",
    errno.EDQUOT: "free some space, or choose another --out on a disk with room",
    errno.EACCES: "check its permissions, or choose another path",
    errno.EPERM: "check its permissions, or choose another path",
    errno.EROFS: "the file system is read-only: choose another path",
    errno.ENOENT: "check the path",
    errno.ENOTDIR: "a part of the path is a file, not a directory: check the path",
    errno.EISDIR: "it is a directory: name a file",
    errno.EEXIST: "remove it, or choose another path",
    errno.ENAMETOOLONG: "choose a shorter path",
    errno.ENOTEMPTY: "remove it, or choose another path",
}


def _shorten(text: str, limit: int = 240) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


def _os_error(exc: BaseException) -> str:
    assert isinstance(exc, OSError)
    what = exc.strerror or str(exc) or type(exc).__name__
    files = [str(f) for f in (exc.filename, exc.filename2) if f is not None]
    where = " → ".join(_shorten(f, 200) for f in files) if files else "(no file named)"
    fix = _ERRNO_FIX.get(exc.errno or 0, "check the file and the path")
    return f"{what}: {where}; {fix}"


def _fixed(fix: str) -> Callable[[BaseException], str]:
    def explain(exc: BaseException) -> str:
        return f"{_shorten(str(exc) or type(exc).__name__)}; {fix}"

    return explain


def _what(what: str, where: str, fix: str) -> Callable[[BaseException], str]:
    def explain(exc: BaseException) -> str:
        reason = _shorten(str(exc))
        return f"{what}{f' ({reason})' if reason else ''}: {where}; {fix}"

    return explain


def _own(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _loaded(module: str, name: str) -> Callable[[], type[BaseException] | None]:
    """The exception class ``module.name`` if ``module`` is imported, else ``None``."""

    def resolve() -> type[BaseException] | None:
        found: object = sys.modules.get(module)
        for part in name.split("."):
            found = getattr(found, part, None)
        return found if isinstance(found, type) and issubclass(found, BaseException) else None

    return resolve


def _always(cls: type[BaseException]) -> Callable[[], type[BaseException] | None]:
    return lambda: cls


_LIGHTNING = "train.accelerator, train.devices, train.strategy, train.precision"

_TABLE: tuple[tuple[Callable[[], type[BaseException] | None], Callable[[BaseException], str]], ...]
_TABLE = (
    (_always(UserError), _own),
    (
        _always(RecordError),
        _fixed("the file is damaged or was written by another version: run the command again"),
    ),
    (
        _always(MemoryError),
        _what(
            "out of memory",
            "the data or a size in the config",
            "lower the sizes (data.*, batch sizes) or free memory",
        ),
    ),
    (_always(OSError), _os_error),
    (
        _loaded("yaml", "YAMLError"),
        _what("not valid YAML", "a YAML file", "fix the file named in the command"),
    ),
    (
        _loaded("safetensors", "SafetensorError"),
        _what(
            "not a readable safetensors file",
            "a weights or run file",
            "check model.weights and the run directory's *.safetensors files",
        ),
    ),
    (
        _loaded("zlib", "error"),
        _what("corrupt compressed data", "a .gz data file", "check the files under data.root"),
    ),
    (
        _always(EOFError),
        _what("a file ended too early", "a data file", "check the files under data.root"),
    ),
    (
        _loaded("torch", "linalg.LinAlgError"),
        _what(
            "linear algebra failed on the data",
            "the data files or model.weights",
            "they hold NaN/inf or degenerate values: check them and the config",
        ),
    ),
    (
        _loaded("lightning.fabric.utilities.exceptions", "MisconfigurationException"),
        _what(
            "Lightning cannot run this configuration",
            _LIGHTNING,
            "set them to what this machine has, e.g. --set train.accelerator=cpu",
        ),
    ),
    (_always(FloatingPointError), _own),
    (_loaded("condimmune.experiments.config.errors", "ConfigError"), _own),
    (_always(ArgumentError), _own),
)


def user_message(exc: BaseException) -> str | None:
    """The one-line message for an error the user can fix, or ``None`` for an internal one."""
    for resolve, explain in _TABLE:
        cls = resolve()
        if cls is not None and isinstance(exc, cls):
            return _shorten(explain(exc), 2000)
    return None


@contextmanager
def config_keys(keys: Mapping[str, str]) -> Iterator[None]:
    """Inside, an :class:`ArgumentError` is raised again as a :class:`ConfigError` that calls
    each library argument by the config key that sets it (``keys``: argument → key)."""
    from condimmune.experiments.config.errors import ConfigError

    try:
        yield
    except ArgumentError as exc:
        raise ConfigError(exc.naming(keys)) from None
