r"""Spectra and condition numbers of symmetric PSD matrices and of feature covariances.

The condition number is the paper's Eq. 1, :math:`\kappa(S) = \sigma_{\max}/\sigma_{\min}`
with :math:`\sigma_{\min}` the smallest **non-zero** eigenvalue. In floating point
"non-zero" means above a *relative* threshold ``rtol · σ_max`` (the rule
``numpy.linalg.matrix_rank`` uses), so κ does not change when the data is rescaled.
The default ``rtol`` for a matrix of size ``p`` is ``p · eps(dtype)``. :func:`nonzero_mask`
is the one implementation of this rule on arrays (:func:`first_nonzero` on a sorted list of
floats); every spectrum in the package goes through it.

Every function takes torch tensors (differentiable through the eigenvalues) or numpy arrays
(:mod:`condimmune.core.arrays`) and returns the backend it was given.

The reference code instead adds ``1e-6 · I`` and takes the smallest eigenvalue above
``1e-6``; on its rank-deficient covariances that σ_min is always ≈ 1e-6, so its κ is a
rescaled σ_max. :func:`paper_compatible_condition_number` reproduces that rule so
results can be compared with the paper's tables; it is never our headline number.
"""

from __future__ import annotations

import bisect
import math
from typing import TYPE_CHECKING, Any, overload

import numpy as np
from numpy.typing import NDArray

from condimmune.core._validation import check_matrix, check_rtol, check_symmetric_psd
from condimmune.core.arrays import Array, detached, eye_like, machine_epsilon, namespace
from condimmune.core.errors import DegenerateSpectrumError

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "condition_number",
    "condition_number_features",
    "covariance_eigenvalues",
    "default_rtol",
    "first_nonzero",
    "log_condition_number",
    "log_condition_number_features",
    "nonzero_eigenvalues",
    "nonzero_mask",
    "numerical_rank",
    "paper_compatible_condition_number",
]

PAPER_RIDGE = 1e-6
"""The reference code's absolute ridge and eigenvalue cut-off."""


def default_rtol(size: int, dtype: object) -> float:
    """``size · eps(dtype)``: the relative threshold below which an eigenvalue counts as zero
    (``dtype`` of either backend)."""
    return size * machine_epsilon(dtype)


@overload
def nonzero_mask(
    values: Tensor,
    *,
    rtol: float | None = None,
    size: int | None = None,
    sigma_max: Tensor | None = None,
) -> Tensor: ...


@overload
def nonzero_mask(
    values: NDArray[np.floating[Any]],
    *,
    rtol: float | None = None,
    size: int | None = None,
    sigma_max: NDArray[np.floating[Any]] | None = None,
) -> NDArray[np.bool_]: ...


def nonzero_mask(
    values: Tensor | NDArray[np.floating[Any]],
    *,
    rtol: float | None = None,
    size: int | None = None,
    sigma_max: Tensor | NDArray[np.floating[Any]] | None = None,
) -> Tensor | NDArray[np.bool_]:
    r"""Which ``values`` count as non-zero: the numerical-range rule of the whole package.

    ``values`` are eigenvalues of a PSD matrix (or squared singular values of its factor),
    in any order. A value is non-zero when :math:`\lambda > \mathrm{rtol}\cdot\sigma_{\max}`,
    so σ_min of Eq. 1 is the smallest value this mask keeps. ``rtol`` defaults to
    :func:`default_rtol` of ``size`` (the size of the matrix the values come from; default
    the number of values, pass it when structural zeros are omitted, as by the Gram trick).
    ``sigma_max`` defaults to the largest value; pass it when ``values`` are measured against
    another matrix's largest eigenvalue. Returns a boolean array shaped like ``values``;
    the comparison is made on detached values (a mask carries no gradient).
    """
    rtol = check_rtol(rtol)
    given: Any = (values, sigma_max)  # one backend: the overloads pair them
    plain = detached(given[0])
    if rtol is None:
        rtol = default_rtol(_count(plain) if size is None else size, plain.dtype)
    top = namespace(plain).max(plain) if sigma_max is None else detached(given[1])
    mask: Tensor | NDArray[np.bool_] = plain > rtol * top
    return mask


def _count(values: Tensor | NDArray[Any]) -> int:
    """The number of entries of ``values``."""
    return math.prod(values.shape)


def first_nonzero(
    values: list[float], *, size: int, dtype: object, rtol: float | None = None
) -> int:
    """Index of the first value :func:`nonzero_mask` keeps in ascending ``values`` (of a
    matrix of ``size``; ``len(values)`` if none): the same rule on a list of floats, for the
    scalar work of one step, where a tensor operation per comparison costs more than the
    comparison."""
    if rtol is None:
        rtol = default_rtol(size, dtype)
    return bisect.bisect_right(values, rtol * values[-1])


def _psd_eigenvalues(S: Array, name: str) -> Array:
    """Ascending eigenvalues of a symmetric matrix, refusing clearly indefinite input."""
    lam: Array = namespace(S).linalg.eigvalsh(S)
    _check_psd_spectrum(lam, name)
    return lam


def _psd_eigh(S: Array, name: str = "the regularized covariance") -> tuple[Array, Array]:
    """``eigh`` of a symmetric matrix with the same checks as :func:`_psd_eigenvalues`."""
    lam: Array
    vecs: Array
    lam, vecs = namespace(S).linalg.eigh(S)
    _check_psd_spectrum(lam, name)
    return lam, vecs


def _check_psd_spectrum(lam: Array, name: str) -> None:
    ends = detached(lam)
    low, top = float(ends[0]), float(ends[-1])  # ascending: the ends decide
    if not math.isfinite(top):
        raise ValueError(f"{name} has a NaN/Inf spectrum; its inputs contain NaN or Inf")
    if top <= 0:
        raise DegenerateSpectrumError(
            f"{name} has no positive eigenvalue (σ_max = {top:.3g}); its condition number "
            "is undefined. Check that the features are not all zero"
        )
    if low < -math.sqrt(machine_epsilon(lam.dtype)) * top:
        raise ValueError(
            f"{name} is not positive semi-definite (smallest eigenvalue {low:.3g}, "
            f"largest {top:.3g}); pass a covariance such as Φᵀ Φ"
        )


def covariance_eigenvalues(Phi: Array) -> Array:
    r"""Ascending eigenvalues of :math:`\Phi^\top\Phi` that can be non-zero.

    When ``n < k`` they are the eigenvalues of the ``n × n`` Gram matrix
    :math:`\Phi\Phi^\top` (same non-zero spectrum, :math:`O(n^2k)` instead of
    :math:`O(k^3)`); the ``k − n`` structural zeros are omitted.
    Differentiable with respect to ``Phi``.
    """
    Phi = check_matrix(Phi, "Phi")
    n, k = Phi.shape
    gram = Phi @ Phi.mT if n < k else Phi.mT @ Phi
    return _psd_eigenvalues(gram, "Phi's covariance")


def nonzero_eigenvalues(S: Array, *, rtol: float | None = None) -> Array:
    """Ascending eigenvalues of ``S`` above ``rtol · σ_max`` (default ``rtol = p · eps``)."""
    S = check_symmetric_psd(S, "S")
    rtol = check_rtol(rtol)
    lam = _psd_eigenvalues(S, "S")
    kept: Array = lam[nonzero_mask(lam, rtol=rtol)]
    return kept


def numerical_rank(S: Array, *, rtol: float | None = None) -> int:
    """Number of eigenvalues of ``S`` above ``rtol · σ_max``."""
    return _count(nonzero_eigenvalues(S, rtol=rtol))


def _log_kappa(lam_nonzero: Array) -> Array:
    """``log σ_max − log σ_min`` of ascending non-zero eigenvalues (Eq. 1 in log space)."""
    xp = namespace(lam_nonzero)
    value: Array = xp.log(lam_nonzero[-1]) - xp.log(lam_nonzero[0])
    return value


def log_condition_number(S: Array, *, rtol: float | None = None) -> Array:
    r"""Natural log of :math:`\kappa(S)` over the numerical range (Eq. 1).

    Returns a 0-d array of ``S``'s backend, differentiable through the eigenvalues (used by the
    "Opt κ" baseline). Raises :class:`DegenerateSpectrumError` when ``S`` is zero.
    """
    return _log_kappa(nonzero_eigenvalues(S, rtol=rtol))


def condition_number(S: Array, *, rtol: float | None = None) -> Array:
    r""":math:`\kappa(S) = \sigma_{\max}/\sigma_{\min}` over the numerical range (Eq. 1)."""
    value: Array = namespace(S).exp(log_condition_number(S, rtol=rtol))
    return value


def log_condition_number_features(Phi: Array, *, rtol: float | None = None) -> Array:
    r"""``log_condition_number(Φᵀ Φ)`` computed from the features ``Φ`` (n × k).

    Uses the ``n × n`` Gram matrix when ``n < k``. The default ``rtol`` is that of
    ``S = Φᵀ Φ`` (``k · eps``), so both functions agree on the same data.
    """
    Phi = check_matrix(Phi, "Phi")
    rtol = check_rtol(rtol)
    lam = covariance_eigenvalues(Phi)
    return _log_kappa(lam[nonzero_mask(lam, rtol=rtol, size=Phi.shape[1])])


def condition_number_features(Phi: Array, *, rtol: float | None = None) -> Array:
    """``condition_number(Φᵀ Φ)`` from the features, with the Gram trick when ``n < k``."""
    value: Array = namespace(Phi).exp(log_condition_number_features(Phi, rtol=rtol))
    return value


def paper_compatible_condition_number(S: Array, *, ridge: float = PAPER_RIDGE) -> Array:
    r"""κ by the reference code rule: σ_min = least eigenvalue of ``S + ridge·I`` above ``ridge``.

    Not scale invariant and, on rank-deficient ``S``, σ_min ≈ ``ridge`` whatever the data,
    so the value is ≈ σ_max / ridge. Only for side-by-side comparison with the paper's
    tables; see ``docs/theory.md``.
    """
    S = check_symmetric_psd(S, "S")
    xp = namespace(S)
    eye = eye_like(S.shape[0], S)
    lam: Array = xp.linalg.eigvalsh(S + ridge * eye)
    above: Array = lam[lam > ridge]
    if _count(above) == 0:
        raise DegenerateSpectrumError(
            f"no eigenvalue of S + {ridge}·I lies above {ridge}; S is numerically zero"
        )
    ratio: Array = above[-1] / above[0]
    return ratio
