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

from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, TypeVar

import array_api_compat
import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "Array",
    "add_product",
    "detached",
    "dtype_name",
    "eye_like",
    "from_numpy",
    "is_array",
    "is_cpu_float64",
    "is_torch",
    "machine_epsilon",
    "matmul_into",
    "namespace",
    "no_grad",
    "numpy_view",
    "seeded_normal_column",
    "sigmoid",
    "softmax",
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
    """``x`` without its autograd graph (a tensor's ``detach()``; numpy arrays, scalars and
    tensors that need no gradient as they are, so that identity checks still hold)."""
    if isinstance(x, np.ndarray | np.generic) or not x.requires_grad:
        return x
    return x.detach()


def dtype_name(dtype: object) -> str:
    """numpy's name of a dtype of either backend: ``"float64"`` for ``torch.float64``,
    ``numpy.float64`` and ``numpy.dtype("float64")`` alike."""
    name = str(dtype)  # torch's dtypes print as "torch.float64"
    if name.startswith("torch."):
        return name.removeprefix("torch.")
    try:
        return np.dtype(dtype).name  # type: ignore[call-overload,no-any-return]
    except TypeError:
        return name


def machine_epsilon(dtype: object) -> float:
    """``eps`` of a float dtype of either backend (``torch.float64`` or ``numpy.float64``)."""
    try:
        return float(np.finfo(np.dtype(dtype_name(dtype))).eps)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{dtype} is not a floating-point dtype") from error


def is_cpu_float64(x: Array) -> bool:
    """Whether ``x`` holds float64 in CPU memory (what scipy's BLAS and the fast path read)."""
    return dtype_name(x.dtype) == "float64" and str(array_api_compat.device(x)) == "cpu"


def eye_like(size: int, like: Array) -> Array:
    """The ``size × size`` identity in ``like``'s backend, dtype and device."""
    device = array_api_compat.device(like)
    eye: Array = namespace(like).eye(size, dtype=like.dtype, device=device)
    return eye


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


def numpy_view(x: Array) -> NDArray[np.floating[Any]]:
    """``x`` as a numpy array, sharing memory (a CPU tensor's ``numpy()``, detached)."""
    return x if isinstance(x, np.ndarray) else x.detach().numpy()


def from_numpy(values: NDArray[np.floating[Any]], like: Array) -> Array:
    """``values`` in ``like``'s backend, sharing memory (``torch.from_numpy`` for a tensor)."""
    if isinstance(like, np.ndarray):
        return values
    return _torch_from_numpy(values)


def _torch_from_numpy(values: NDArray[np.floating[Any]]) -> Tensor:
    import torch

    return torch.from_numpy(values)


def matmul_into(a: Array, b: Array, out: Array) -> Array:
    """``out ← a @ b`` without allocating the product (``torch.mm``/``numpy.matmul`` with
    ``out``); ``out`` must be contiguous."""
    if isinstance(out, np.ndarray):
        return np.matmul(a, b, out=out)
    return _torch_mm_into(a, b, out)


def _torch_mm_into(a: Tensor, b: Tensor, out: Tensor) -> Tensor:
    import torch

    return torch.mm(a, b, out=out)


def add_product(c: Array, a: Array, b: Array, *, beta: float) -> Array:
    """``beta · c + a @ b``, in one ``addmm`` for tensors (its rounding: the numbers of the
    torch-only code), ``beta * c + a @ b`` for arrays."""
    if isinstance(c, np.ndarray):
        total: Array = beta * c + a @ b
        return total
    return _torch_addmm(c, a, b, beta)


def _torch_addmm(c: Tensor, a: Tensor, b: Tensor, beta: float) -> Tensor:
    import torch

    return torch.addmm(c, a, b, beta=beta)


def no_grad(like: object) -> AbstractContextManager[object]:
    """``torch.no_grad()`` when ``like`` is a tensor (work that autograd must not record), a
    context that does nothing for numpy."""
    if not is_torch(like):
        return nullcontext()
    import torch

    return torch.no_grad()


def sigmoid(x: Array) -> Array:
    """The logistic function elementwise (``torch.sigmoid``; ``scipy.special.expit``)."""
    if isinstance(x, np.ndarray):
        from scipy.special import expit

        values: Array = expit(x)
        return values
    return x.sigmoid()


def softmax(x: Array, axis: int) -> Array:
    """Softmax along ``axis`` (``torch.softmax``; ``scipy.special.softmax``)."""
    if isinstance(x, np.ndarray):
        from scipy.special import softmax as scipy_softmax

        values: Array = scipy_softmax(x, axis=axis)
        return values
    return x.softmax(dim=axis)
