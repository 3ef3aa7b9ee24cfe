"""Files the user points at (weights, checkpoints, run directories), read strictly.

Every problem with such a file is a :class:`~condimmune.core.errors.UserError` that names
the file (and the config key that points at it): a path the operating system cannot take,
a missing file, a pickle under a ``.safetensors`` name, a truncated or damaged safetensors
file, a missing tensor, a tensor of the wrong kind, or NaN/infinite values.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Generic, Literal, TypeVar

import numpy as np
from numpy.typing import NDArray

from condimmune.core.errors import UserError

if TYPE_CHECKING:  # numpy arrays are read without importing torch (issue #30)
    from torch import Tensor

__all__ = ["TensorFile", "check_finite", "read_array_file", "read_tensor_file", "user_path"]

ArrayT = TypeVar("ArrayT", "Tensor", NDArray[np.generic])

_PICKLE_STARTS = (b"PK\x03\x04", b"\x80")
"""``torch.save`` writes a zip archive (new format) or a raw pickle (legacy format)."""


def user_path(text: str | os.PathLike[str], key: str) -> Path:
    """``text`` as a local path with ``~`` expanded; a path no file system can hold (a NUL
    character, ``~unknown-user``) is a :class:`UserError` naming ``key``."""
    raw = os.fspath(text)
    if "\x00" in raw:
        raise UserError("the path contains a NUL character", f"{key}={raw!r}", "remove it")
    try:
        return Path(raw).expanduser()
    except RuntimeError as exc:  # ~name of an unknown user, or no home directory
        raise UserError(
            f"cannot expand '~' ({exc})", f"{key}={raw}", "write the path out in full"
        ) from None


def check_finite(
    tensors: Mapping[str, Tensor] | Mapping[str, NDArray[np.generic]], where: str, fix: str
) -> None:
    """Refuse NaN or infinite values in any floating-point tensor (or numpy array) of
    ``tensors``."""
    for name, tensor in tensors.items():
        if isinstance(tensor, np.ndarray):
            finite = not np.issubdtype(tensor.dtype, np.floating) or bool(np.isfinite(tensor).all())
        else:
            finite = not tensor.is_floating_point() or bool(tensor.isfinite().all())
        if not finite:
            raise UserError(f"tensor {name!r} holds NaN or infinite values", where, fix)


@dataclass(frozen=True)
class TensorFile(Generic[ArrayT]):
    """The tensors (torch tensors or numpy arrays) and the metadata (string → string) of one
    safetensors file."""

    tensors: dict[str, ArrayT]
    metadata: dict[str, str]


def read_tensor_file(
    path: Path,
    *,
    where: str | None = None,
    fix: str = "",
    required: Sequence[str] = (),
    finite: bool = True,
) -> TensorFile[Tensor]:
    """Read a safetensors file as torch tensors, refusing a missing, foreign, damaged or
    incomplete one.

    ``where`` names the file in messages (default: its path, e.g. ``"model.weights=PATH"``),
    ``fix`` says how to fix it; ``required`` tensors must be present, and with ``finite``
    every floating-point tensor must be finite.
    """
    return _read(path, "pt", where, fix, required, finite)


def read_array_file(
    path: Path,
    *,
    where: str | None = None,
    fix: str = "",
    required: Sequence[str] = (),
    finite: bool = True,
) -> TensorFile[NDArray[np.generic]]:
    """:func:`read_tensor_file` as numpy arrays, without importing torch (a linear run's
    files)."""
    return _read(path, "numpy", where, fix, required, finite)


def _read(
    path: Path,
    framework: Literal["pt", "numpy"],
    where: str | None,
    fix: str,
    required: Sequence[str],
    finite: bool,
) -> TensorFile[ArrayT]:
    from safetensors import SafetensorError, safe_open

    place = where or str(path)
    if not path.is_file():
        what = "not a file" if path.exists() else "no such file"
        raise UserError(what, place, fix)
    with path.open("rb") as fh:
        start = fh.read(8)
    if start.startswith(_PICKLE_STARTS):
        raise UserError("a pickled torch file (torch.save), not safetensors", place, fix)
    try:
        with safe_open(path, framework=framework) as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open API
    except (SafetensorError, OSError) as exc:
        reason = " ".join(str(exc).split())
        raise UserError(f"not a readable safetensors file ({reason})", place, fix) from None
    except TypeError as exc:  # numpy has no bfloat16 (nor float8): safetensors raises this
        reason = " ".join(str(exc).split())
        raise UserError(f"holds a tensor numpy cannot read ({reason})", place, fix) from None
    missing = [name for name in required if name not in tensors]
    if missing:
        raise UserError(f"tensor {missing[0]!r} is missing", place, fix)
    if finite:
        check_finite(tensors, place, fix)
    return TensorFile(tensors, metadata)
