r"""Eigenpairs of symmetric PSD matrices for the fast paths: one decomposition per matrix and
step, and only the eigenvectors a gradient needs.

The spectral part of every regularizer and log κ gradient of the package is a sum of
rank-one terms :math:`c_i v_iv_i^\top` over one or two eigenpairs (plus a multiple of the
matrix itself for R_well and R_ill; Thm 4.1 (3), App. A), so above
:data:`DENSE_EIGH_MAX_SIZE` the eigenvalues come from ``eigvalsh`` and each needed vector
from inverse iteration (:func:`psd_eigenvector`), with the dense ``eigh`` as the fallback
whenever the vector is not determined to rounding level. Values, thresholds and the
numerical-range rule are those of :mod:`condimmune.core.spectral`. Matrices are torch tensors
or numpy arrays (:mod:`condimmune.core.arrays`); results come in the backend given.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Generic

from condimmune.core.arrays import Array, eye_like, machine_epsilon, namespace, seeded_normal_column
from condimmune.core.factor import cholesky_solver, lu_solver
from condimmune.core.spectral import _psd_eigenvalues, _psd_eigh, first_nonzero

if TYPE_CHECKING:
    pass

__all__ = [
    "DENSE_EIGH_MAX_SIZE",
    "EigenvectorChooser",
    "EigenvectorMethod",
    "LogKappaGradient",
    "PsdSpectrum",
    "log_condition_number_features_gradient",
    "psd_eigenpair",
    "psd_eigenpairs",
    "psd_eigenvector",
    "psd_spectrum",
]


class EigenvectorMethod(StrEnum):
    """Where :func:`psd_eigenvector` takes a regularizer's one eigenvector from.

    ``dense``: a full ``eigh`` (all eigenvectors). ``inverse-iteration``: ``eigvalsh`` for the
    values, then inverse iteration for the one vector, with a gap and residual check and
    the dense ``eigh`` as fallback. ``auto``: dense up to :data:`DENSE_EIGH_MAX_SIZE`.
    ``tracking``: the regularizer step's tracked extremes (:mod:`condimmune.core.tracking`,
    which keep state from step to step); a one-off decomposition here treats it as
    ``inverse-iteration``.
    """

    AUTO = "auto"
    DENSE = "dense"
    INVERSE_ITERATION = "inverse-iteration"
    TRACKING = "tracking"


DENSE_EIGH_MAX_SIZE = 256
"""Below this size a full ``eigh`` costs less than a millisecond, so ``auto`` keeps it (and
with it the exact numbers of the dense path); above it the eigenvector back-transformation
of ``eigh`` doubles the cost of ``eigvalsh`` and runs many small parallel regions, which is
what makes it slow beside a competing process."""

_MIN_RELATIVE_GAP = 1e-6
"""Inverse iteration is used only when the eigenvalue's distance to its neighbours is at
least this fraction of σ_max. Any eigenvector of a gap ``g`` is determined only to about
``size · eps · σ_max / g`` (``eigh``'s included), so below this the two methods could
return visibly different vectors and the dense one is used."""

_TOP_SHIFT_FRACTION = 2.0**-20
"""The top eigenvector's shift lies ``δ`` above σ_max, ``δ`` this fraction of the gap (but
at least ``16 · size · eps · σ_max``, above the rounding of σ_max and of the factorisation):
``μI − S`` is then positive definite (Cholesky, half the work of an LU) and each step
shrinks the other components by ``δ / (δ + gap)`` ≤ 1e-5 (gap ≥ ``_MIN_RELATIVE_GAP · σ_max``)."""

_TOP_STEPS = 4
"""(1e-5)⁴: rounding level even from a start vector with a small component."""

_INTERIOR_STEPS = 2
"""An interior eigenvalue is its own shift (error ~ eps · σ_max, against a gap of at least
``_MIN_RELATIVE_GAP · σ_max``): each step shrinks the other components by ≤ 1e-9."""


class EigenvectorChooser:
    """The :class:`EigenvectorMethod` for each of a sequence of related decompositions (the
    steps of one training run): ``method``, except that after a call whose inverse iteration
    was refused the next ``dense_after_fallback`` calls go straight to the dense ``eigh``
    (whose vector the fallback would have used anyway) before trying again. A spectrum
    clustered at the eigenvalue (the noise floor of a rank-deficient Gram matrix) stays
    clustered from step to step, so the futile attempts are skipped."""

    def __init__(self, method: EigenvectorMethod, dense_after_fallback: int = 8) -> None:
        self.method = method
        self.dense_after_fallback = dense_after_fallback
        self._dense_left = 0

    def next_method(self) -> EigenvectorMethod:
        """The method for the next decomposition."""
        if self._dense_left > 0:
            self._dense_left -= 1
            return EigenvectorMethod.DENSE
        return self.method

    def record(self, fallback: bool) -> None:
        """Report whether the decomposition just made fell back to the dense ``eigh``."""
        if fallback:
            self._dense_left = self.dense_after_fallback


@dataclass(frozen=True)
class PsdSpectrum(Generic[Array]):
    """Ascending eigenvalues of a symmetric PSD matrix, with all eigenvectors when ``eigh``
    computed them (else ``None``; :func:`psd_eigenvector` then computes the one needed)."""

    matrix: Array
    values: Array
    vectors: Array | None


def psd_spectrum(
    S: Array,
    method: EigenvectorMethod = EigenvectorMethod.AUTO,
    name: str = "the regularized covariance",
) -> PsdSpectrum[Array]:
    """One eigendecomposition of ``S`` (checked as :func:`_psd_eigenvalues` does), shared by a
    regularizer's value, gradient, step sizes and log κ. No input checks: internal."""
    if method is EigenvectorMethod.DENSE or (
        method is EigenvectorMethod.AUTO and S.shape[0] <= DENSE_EIGH_MAX_SIZE
    ):
        lam, vecs = _psd_eigh(S, name)
        return PsdSpectrum(S, lam, vecs)
    return PsdSpectrum(S, _psd_eigenvalues(S, name), None)


def psd_eigenvector(spectrum: PsdSpectrum[Array], index: int) -> Array | None:
    r"""Unit eigenvector (p × 1) of ``spectrum.values[index]``, or ``None`` if refused.

    From the stored ``eigh`` vectors if there are any; else by inverse iteration with the
    eigenvalue as shift (one factorisation, at most :math:`\tfrac23 p^3` flops against the
    :math:`\approx 2p^3` of the back-transformation it replaces). It is refused (``None``)
    unless the eigenvalue is separated from its neighbours by ``_MIN_RELATIVE_GAP · σ_max``
    and the residual :math:`\|Sx - \theta x\|` (θ the Rayleigh quotient) is at rounding
    level (``p · eps · σ_max``); the caller then decides with the dense
    ``psd_spectrum(S, EigenvectorMethod.DENSE)``, so that a clustered eigenvalue gets the
    vector, and the values, of the dense path.
    """
    index = index % spectrum.values.shape[0]
    if spectrum.vectors is None:
        return _inverse_iteration(spectrum.matrix, spectrum.values, index)
    column: Array = spectrum.vectors[:, index : index + 1]
    return column


def _eigenvectors(spectrum: PsdSpectrum[Array], indices: Sequence[int]) -> list[Array] | None:
    """The unit eigenvectors of ``indices``, or ``None`` as soon as one is refused."""
    vectors = []
    for index in indices:
        vector = psd_eigenvector(spectrum, index)
        if vector is None:
            return None
        vectors.append(vector)
    return vectors


def psd_eigenpairs(
    mat: Array,
    method: EigenvectorMethod,
    pick: Callable[[list[float]], Sequence[int]],
    name: str = "the regularized covariance",
) -> tuple[list[float], list[Array], bool]:
    """``(ascending eigenvalues, unit eigenvectors, fell back)`` for the eigenvalues whose
    indices ``pick`` selects from the values; one decomposition, the dense one if inverse
    iteration refuses any of the vectors (:func:`psd_eigenvector`). The scalar work on the
    spectrum is done on Python floats: a tensor operation per scalar costs more than it.
    ``name`` is the matrix's name in the error raised for a NaN/Inf, zero or indefinite
    spectrum."""
    spectrum = psd_spectrum(mat, method, name)
    values = spectrum.values.tolist()
    vectors = _eigenvectors(spectrum, pick(values))
    if vectors is not None:
        return values, vectors, False
    spectrum = psd_spectrum(mat, EigenvectorMethod.DENSE, name)
    values = spectrum.values.tolist()
    vectors = _eigenvectors(spectrum, pick(values))
    if vectors is None:  # pragma: no cover - dense spectra always carry their vectors
        raise AssertionError("a dense spectrum has no eigenvectors")
    return values, vectors, True


def psd_eigenpair(
    mat: Array,
    method: EigenvectorMethod,
    pick: Callable[[list[float]], int],
    name: str = "the regularized covariance",
) -> tuple[list[float], Array, bool]:
    """:func:`psd_eigenpairs` for the one eigenvalue that ``pick`` selects."""
    values, (vector,), fallback = psd_eigenpairs(mat, method, lambda v: (pick(v),), name)
    return values, vector, fallback


def _inverse_iteration(S: Array, values: Array, index: int) -> Array | None:
    """The eigenvector of ``values[index]`` by inverse iteration, or ``None`` (see caller)."""
    lam = values.tolist()
    target, top = lam[index], lam[-1]
    gap = min(abs(lam[j] - target) for j in (index - 1, index + 1) if 0 <= j < len(lam))
    if not gap >= _MIN_RELATIVE_GAP * top:
        return None
    xp, size, eps = namespace(S), S.shape[0], machine_epsilon(S.dtype)
    eye = eye_like(size, S)
    if index == len(lam) - 1:
        floor = 16 * size * eps * top
        solve = cholesky_solver((target + max(_TOP_SHIFT_FRACTION * gap, floor)) * eye - S)
        if solve is None:
            return None
        steps = _TOP_STEPS
    else:
        solve = lu_solver(S - target * eye)
        steps = _INTERIOR_STEPS
    x: Any = seeded_normal_column(S)
    for _ in range(steps):
        x = solve(x)
        x = x / xp.linalg.vector_norm(x)
    sx = S @ x
    residual = float(xp.linalg.vector_norm(sx - (x.mT @ sx) * x))
    # not (≤) also rejects the NaN of an exactly singular shifted matrix
    if not residual <= size * eps * top:
        return None
    vector: Array = x
    return vector


@dataclass(frozen=True)
class LogKappaGradient:
    """``log κ(ΦᵀΦ)`` over the numerical range and its gradient with respect to ``Φ``."""

    log_kappa: float
    gradient: Any
    """``∂ log κ / ∂Φ`` (n × k), in ``Φ``'s backend."""
    fallback: bool
    """Inverse iteration was refused and a full ``eigh`` gave the spectrum and the vectors."""


def log_condition_number_features_gradient(
    Phi: Array,
    *,
    rtol: float | None = None,
    eigenvectors: EigenvectorMethod = EigenvectorMethod.AUTO,
) -> LogKappaGradient:
    r"""``log κ(ΦᵀΦ)`` and ``∂ log κ / ∂Φ`` from one spectrum, without autograd.

    With :math:`\lambda_i = v_i^\top \Phi^\top\Phi\, v_i` (unit eigenvectors, Eq. 1's
    σ_max and σ_min over the numerical range), :math:`\partial\lambda_i/\partial\Phi =
    2\Phi v_iv_i^\top`, so

    .. math:: \frac{\partial \log\kappa}{\partial\Phi}
        = 2\Big(\frac{(\Phi v_1)v_1^\top}{\sigma_{\max}}
               - \frac{(\Phi v_m)v_m^\top}{\sigma_{\min}}\Big),

    and on the Gram matrix (``n < k``, eigenvectors ``u``) :math:`2(u_1(u_1^\top\Phi)/
    \sigma_{\max} - u_m(u_m^\top\Phi)/\sigma_{\min})`: two rank-one terms, the gradient that
    autograd takes through ``eigvalsh`` in :func:`log_condition_number_features` (same
    ``rtol`` rule), but with ``eigvalsh`` plus two inverse iterations instead of a full
    ``eigh`` above :data:`DENSE_EIGH_MAX_SIZE` (``eigenvectors``; the dense ``eigh`` when a
    vector is refused). No input checks: internal fast path of the Opt κ baseline.
    """
    n, k = Phi.shape
    gram = n < k
    mat = Phi @ Phi.mT if gram else Phi.mT @ Phi

    def extremes(values: list[float]) -> tuple[int, int]:
        """Indices of σ_max and of σ_min over the numerical range of a k × k covariance."""
        return len(values) - 1, first_nonzero(values, size=k, dtype=Phi.dtype, rtol=rtol)

    values, vectors, fallback = psd_eigenpairs(mat, eigenvectors, extremes, "Phi's covariance")
    top, low = (values[i] for i in extremes(values))
    gradient: Any = 0
    for vector, scale in zip(vectors, (2.0 / top, -2.0 / low), strict=True):
        if gram:
            gradient = gradient + scale * (vector @ (vector.mT @ Phi))
        else:
            gradient = gradient + scale * ((Phi @ vector) @ vector.mT)
    return LogKappaGradient(math.log(top) - math.log(low), gradient, fallback)
