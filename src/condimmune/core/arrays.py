r"""Arrays of either backend for the maths of :mod:`condimmune.core` (issue #30).

The deep path and the public API hand torch tensors (autograd, GPUs); the linear pipeline
is moving to numpy arrays, so that a linear run never pays for importing torch. A function
of ``core`` written once against the Python array API serves both: :func:`namespace` gives
the module of its inputs' backend (``array_api_compat``'s wrappers of numpy or of torch,
the latter only ever for a tensor, so numpy inputs never import torch), and the few
operations the standard leaves out (detaching from autograd, machine epsilon of a dtype)
are here. Which modules of ``core`` take both is listed in ``docs/architecture.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

import array_api_compat
import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "Array",
    "detached",
    "is_array",
    "is_torch",
    "machine_epsilon",
    "namespace",
    "seeded_normal_column",
]

Array = TypeVar("Array", "Tensor", NDArray[np.floating[Any]])
"""A torch tensor or a numpy array of floats: a function typed ``Array → Array`` returns the
backend it was given."""


def is_torch(x: object) -> bool:
    """Whether ``x`` is a torch tensor (without importing torch when it was never imported)."""
    return bool(array_api_compat.is_torch_array(x))


def is_array(x: object) -> bool:
    """Whether ``x`` is a numpy array or a torch tensor: the two backends ``core`` takes."""
    return isinstance(x, np.ndarray) or is_torch(x)


def namespace(*arrays: object) -> Any:
    """The array-API namespace shared by ``arrays`` (``array_api_compat.numpy`` or
    ``array_api_compat.torch``); ``TypeError`` when they mix backends."""
    return array_api_compat.array_namespace(*arrays)


def detached(x: Array) -> Array:
    """``x`` without its autograd graph (a tensor's ``detach()``; numpy arrays and scalars as
    they are)."""
    return x if isinstance(x, np.ndarray | np.generic) else x.detach()


def machine_epsilon(dtype: object) -> float:
    """``eps`` of a float dtype of either backend (``torch.float64`` or ``numpy.float64``)."""
    name = str(dtype)  # torch's dtypes print as "torch.float64"; numpy's dtypes are read as is
    try:
        plain = np.dtype(name.removeprefix("torch.") if name.startswith("torch.") else dtype)  # type: ignore[call-overload]
        return float(np.finfo(plain).eps)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{dtype} is not a floating-point dtype") from error


def seeded_normal_column(like: Array) -> Array:
    """A fixed standard-normal column (p × 1, p = ``like.shape[0]``) in ``like``'s backend,
    dtype and device, the same at every call (start vectors of iterative eigensolvers, so
    their results are reproducible): torch's generator seeded 0 for a tensor (the numbers the
    torch-only code had), numpy's ``default_rng(0)`` for an array."""
    if isinstance(like, np.ndarray):
        column: Array = np.random.default_rng(0).standard_normal((like.shape[0], 1))
        return column.astype(like.dtype)
    return _torch_normal_column(like)


def _torch_normal_column(like: Tensor) -> Tensor:
    import torch

    generator = torch.Generator(device=like.device).manual_seed(0)
    return torch.randn(like.shape[0], 1, generator=generator, dtype=like.dtype, device=like.device)
