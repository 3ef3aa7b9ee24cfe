"""Boundary checks shared by the public functions.

Every check raises ``TypeError`` (wrong kind of object or dtype) or ``ValueError``
(wrong shape or content) with a message that says what to do instead.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import array_api_compat
import numpy as np
from numpy.typing import NDArray

from condimmune.core.arrays import (
    Array,
    detached,
    dtype_name,
    is_array,
    is_torch,
    machine_epsilon,
    namespace,
)

if TYPE_CHECKING:
    from torch import Tensor

_FLOAT_DTYPES = ("float32", "float64")


def check_float_tensor(x: Array, name: str) -> Array:
    """Return ``x`` if it is a non-empty, finite float32/float64 torch tensor or numpy array
    (:mod:`condimmune.core.arrays`)."""
    if not is_array(x):
        raise TypeError(
            f"{name} must be a torch.Tensor or a numpy array, got {type(x).__name__}; "
            "convert it with torch.as_tensor(..., dtype=torch.float64)"
        )
    if dtype_name(x.dtype) not in _FLOAT_DTYPES:
        raise TypeError(
            f"{name} has dtype {x.dtype}; spectral computations need float32 or float64, "
            f"convert it with {name}.to(torch.float64) (numpy: {name}.astype(numpy.float64))"
        )
    if math.prod(x.shape) == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)}); pass at least one row/column")
    meta = not isinstance(x, np.ndarray) and x.device.type == "meta"  # shapes only
    xp = namespace(x)
    if not meta and not bool(xp.all(xp.isfinite(x))):
        raise ValueError(
            f"{name} contains NaN or Inf; clean the data (impute or drop the rows) before this call"
        )
    return x


def check_matrix(x: Array, name: str) -> Array:
    """A non-empty, finite, 2-D float tensor."""
    x = check_float_tensor(x, name)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {tuple(x.shape)}")
    return x


def check_symmetric_psd(x: Array, name: str) -> Array:
    """A square, symmetric, finite float matrix (PSD-ness is checked by the caller's rtol)."""
    s = check_matrix(x, name)
    if s.shape[0] != s.shape[1]:
        raise ValueError(
            f"{name} must be square, got shape {tuple(s.shape)}; to use features Φ (n × k) "
            "call the *_features variant instead"
        )
    xp, values = namespace(s), detached(s)
    scale = float(xp.max(xp.abs(values)))
    asym = float(xp.max(xp.abs(values - values.mT)))
    tol = 100 * s.shape[0] * machine_epsilon(s.dtype) * scale
    if asym > tol:
        raise ValueError(
            f"{name} is not symmetric (max |S - Sᵀ| = {float(asym):.3g}, "
            f"scale {float(scale):.3g}); "
            "pass (S + S.mT) / 2 if the asymmetry is rounding"
        )
    return s


def check_same_device_dtype(**arrays: Tensor | NDArray[np.floating[Any]]) -> None:
    """All arrays share one backend, one dtype and one device."""
    items = list(arrays.items())
    first_name, first = items[0]
    for name, t in items[1:]:
        if is_torch(t) != is_torch(first):
            raise TypeError(
                f"{name} is a {type(t).__name__} but {first_name} a {type(first).__name__}; "
                "pass both as torch tensors or both as numpy arrays"
            )
        if t.dtype != first.dtype:
            raise TypeError(
                f"{name} has dtype {t.dtype} but {first_name} has {first.dtype}; "
                "convert both to the same dtype (float64 recommended)"
            )
        if array_api_compat.device(t) != array_api_compat.device(first):
            raise ValueError(
                f"{name} is on {array_api_compat.device(t)} but {first_name} is on "
                f"{array_api_compat.device(first)}; move both to the same device"
            )


def check_rtol(rtol: float | None) -> float | None:
    """``None`` or a finite float in [0, 1)."""
    if rtol is None:
        return None
    if isinstance(rtol, bool) or not isinstance(rtol, int | float):
        raise TypeError(f"rtol must be a float or None, got {type(rtol).__name__}")
    if not (0.0 <= float(rtol) < 1.0):
        raise ValueError(f"rtol must lie in [0, 1), got {rtol}; it is relative to σ_max")
    return float(rtol)


def check_positive_float(value: object, name: str, *, allow_zero: bool = False) -> float:
    """A finite positive (or non-negative) real number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    v = float(value)
    ok = v >= 0.0 if allow_zero else v > 0.0
    if not ok or v != v or v == float("inf"):
        bound = "≥ 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound}, got {value}")
    return v
