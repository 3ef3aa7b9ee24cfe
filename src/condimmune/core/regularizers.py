r"""The two condition-number regularizers of the paper and their analytic gradients.

* :math:`R_{\text{well}}(S) = \tfrac12\sigma_{\max}^2 - \tfrac{1}{2p}\|S\|_F^2` (Eq. 3,
  Nenov et al. 2024), ``p`` the size of ``S``. Lowering it lowers κ.
* :math:`R_{\text{ill}}(S) = 1 / (\tfrac{1}{2k}\|S\|_F^2 - \tfrac12\sigma_{\min}^2)`
  (Eq. 12), ``k = rank S`` and σ_min the smallest non-zero eigenvalue. Lowering it raises κ.

**Rank deficiency.** "Non-zero" means above ``rtol · σ_max`` (see
:mod:`condimmune.core.spectral`), never an absolute cut-off. When ``S`` is rank-deficient
(always so for a minibatch with fewer rows than features) σ_min is the smallest
non-zero eigenvalue of *that* matrix — the paper's definition, but for a minibatch a
statistic of the batch rather than of the data. ``rank_deficiency`` says what to do:
``"warn"`` (default) evaluates over the non-zero spectrum and emits a
:class:`~condimmune.core.errors.RankDeficientWarning`; ``"raise"`` refuses; ``"allow"``
evaluates silently, for callers whose rank deficiency is a property of the data itself
(e.g. full-data pixel covariances with always-zero border pixels). ``R_ill`` is
undefined, and always refused, when fewer than two eigenvalues are non-zero or when all
non-zero eigenvalues are equal (its denominator is then 0).

Every function takes torch tensors or numpy arrays (:mod:`condimmune.core.arrays`) and
returns the backend it was given.

**Gradients.** Both functions are differentiable for tensors (autograd through ``eigvalsh``). Where
σ_max (σ_min) is repeated the gradient returned is one element of the sub-
(super-)differential, ``v vᵀ`` for one unit eigenvector ``v`` of the repeated eigenvalue.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic

from condimmune.core._choices import parse_choice
from condimmune.core._validation import check_matrix, check_rtol, check_symmetric_psd
from condimmune.core.arrays import Array, detached, machine_epsilon
from condimmune.core.eigenpairs import EigenvectorMethod, psd_eigenpair
from condimmune.core.errors import DegenerateSpectrumError, RankDeficientWarning
from condimmune.core.spectral import _psd_eigenvalues, first_nonzero

__all__ = [
    "RankDeficiency",
    "r_ill",
    "r_ill_features",
    "r_ill_gradient",
    "r_well",
    "r_well_features",
    "r_well_gradient",
]


class RankDeficiency(StrEnum):
    """What ``R_ill`` does when the matrix it regularizes is rank-deficient."""

    WARN = "warn"
    RAISE = "raise"
    ALLOW = "allow"


def _gram(Phi: Array) -> Array:
    n, k = Phi.shape
    return Phi @ Phi.mT if n < k else Phi.mT @ Phi


def _ill_rank(
    values: list[float], p: int, rtol: float | None, policy: RankDeficiency, dtype: object
) -> tuple[int, int]:
    """(index of σ_min in the ascending ``values``, numerical rank k), after the degeneracy
    checks. ``p`` is the size of ``S``; ``values`` may omit its structural zeros (Gram trick).
    """
    first = first_nonzero(values, size=p, dtype=dtype, rtol=rtol)
    rank = len(values) - first
    check_ill_rank(rank, p, policy, stacklevel=5)
    return first, rank


def check_ill_rank(rank: int, p: int, policy: RankDeficiency, stacklevel: int) -> None:
    """R_ill's degeneracy checks on the numerical rank of a covariance of size ``p``: refused
    below rank 2, and ``policy`` when rank-deficient (``stacklevel`` of the warning)."""
    if rank < 2:
        raise DegenerateSpectrumError(
            f"R_ill needs at least two non-zero eigenvalues, the covariance has rank {rank}: "
            "with one, ‖S‖_F²/(2k) = σ_min²/2 and R_ill is infinite. Use more samples or features"
        )
    if rank < p:
        message = (
            f"R_ill on a rank-deficient covariance (numerical rank {rank} < size {p}): σ_min is "
            "the smallest non-zero eigenvalue of this matrix (Eq. 12). For a minibatch with fewer "
            "rows than features it describes the batch, not the data; use the full-data "
            "covariance or a larger (gathered) batch, or pass rank_deficiency='allow' if the "
            "rank deficiency is a property of the data"
        )
        if policy is RankDeficiency.RAISE:
            raise DegenerateSpectrumError(message)
        if policy is RankDeficiency.WARN:
            warnings.warn(message, RankDeficientWarning, stacklevel=stacklevel)


def _check_ill_denominator(denom: float, fro2: float, rank: int, dtype: object) -> None:
    if denom <= 4 * rank * machine_epsilon(dtype) * fro2:
        raise DegenerateSpectrumError(
            "all non-zero eigenvalues are equal (κ = 1), so R_ill's denominator "
            "‖S‖_F²/(2k) − σ_min²/2 is 0 and R_ill is infinite; perturb the initialisation"
        )


def _ill_denominator(fro2: Array, sigma_min: Array, rank: int, dtype: object) -> Array:
    denom = fro2 / (2 * rank) - 0.5 * sigma_min**2
    _check_ill_denominator(float(detached(denom)), float(detached(fro2)), rank, dtype)
    return denom


def _r_well_from(mat: Array, p: int) -> Array:
    lam = _psd_eigenvalues(mat, "the regularized covariance")
    value: Array = 0.5 * lam[-1] ** 2 - (mat * mat).sum() / (2 * p)
    return value


def _r_ill_from(mat: Array, p: int, rtol: float | None, policy: RankDeficiency) -> Array:
    lam = _psd_eigenvalues(mat, "the regularized covariance")
    i, rank = _ill_rank(detached(lam).tolist(), p, rtol, policy, mat.dtype)
    value: Array = 1.0 / _ill_denominator((mat * mat).sum(), lam[i], rank, mat.dtype)
    return value


@dataclass(frozen=True)
class SpectralTerm(Generic[Array]):
    """A regularizer's value, its analytic gradient w.r.t. the matrix it was given, and the
    two natural step sizes of the preconditioned update ``W − η ∇_W R · K⁻¹``
    (exact forms derived in ``docs/theory.md`` §4)."""

    value: float
    gradient: Array
    log_kappa: float
    monotone_step: float
    """Largest η for which the preconditioned step moves κ the right way (Thm 4.3)."""
    unit_step: float
    """η at which the fastest-moving eigenvalue changes by 100 % (first order)."""
    fallback: bool = False
    """The fast path (inverse iteration, or the tracked extremes of
    :mod:`condimmune.core.tracking`) was refused and a full ``eigh`` gave the spectrum and
    the vector."""


def r_well_value_and_gradient(
    mat: Array, p: int, eigenvectors: EigenvectorMethod = EigenvectorMethod.AUTO
) -> SpectralTerm[Array]:
    r"""``R_well``, its gradient :math:`\sigma_1 v_1v_1^\top - M/p` w.r.t. ``mat``, step bound.

    ``mat`` is ``S`` (p × p) or the Gram matrix ``Φ Φᵀ`` of the same non-zero spectrum.
    Monotone step bound: :math:`(\sqrt{\sigma_1}-\sqrt{\sigma_2}) /
    (2(\sigma_1^{3/2}(1-1/p) + \sigma_2^{3/2}/p))` (0 when σ_1 is repeated); unit step
    :math:`1/(2\sigma_1(1-1/p))`. Value, gradient, steps and log κ share one spectrum
    (``eigenvectors``: see :class:`~condimmune.core.eigenpairs.EigenvectorMethod`).
    No input checks: internal fast path of :mod:`condimmune.core.step`.
    """
    values, v1, fallback = psd_eigenpair(mat, eigenvectors, lambda values: len(values) - 1)
    s2 = max(values[-2], 0.0) if len(values) > 1 else 0.0
    sigma_min = values[first_nonzero(values, size=p, dtype=mat.dtype)]
    return r_well_term(mat, p, (values[-1], s2, sigma_min), v1, fallback)


def r_well_term(
    mat: Array, p: int, extremes: tuple[float, float, float], v1: Array, fallback: bool
) -> SpectralTerm[Array]:
    """:func:`r_well_value_and_gradient` from ``(σ_1, σ_2, σ_min)`` and the unit v₁ (p × 1),
    however they were computed (a dense spectrum, or :mod:`condimmune.core.tracking`)."""
    s1, s2, sigma_min = extremes
    value = 0.5 * (s1 * s1) - float((mat * mat).sum()) / (2 * p)
    monotone = (math.sqrt(s1) - math.sqrt(s2)) / (2 * (s1**1.5 * (1 - 1 / p) + s2**1.5 / p))
    unit = 1.0 / (2 * s1 * (1 - 1 / p)) if p > 1 else math.inf
    log_kappa = math.log(s1) - math.log(sigma_min)
    gradient = s1 * (v1 * v1.mT) - mat / p  # the outer product without a BLAS call
    return SpectralTerm(value, gradient, log_kappa, monotone, unit, fallback)


def r_ill_value_and_gradient(
    mat: Array,
    p: int,
    rtol: float | None,
    policy: RankDeficiency,
    eigenvectors: EigenvectorMethod = EigenvectorMethod.AUTO,
) -> SpectralTerm[Array]:
    r"""``R_ill``, its gradient :math:`(\sigma_k u_ku_k^\top - M/k)/D^2` (Thm 4.1 (3)), step bound.

    Monotone step bound: :math:`k D^2 / (2\sigma_k (k-1))`; unit step
    :math:`D^2 / (2\max(\sigma_k(1-1/k), \sigma_1/k))`; ``mat`` and ``eigenvectors`` as for
    :func:`r_well_value_and_gradient`; ``rtol=None`` is ``p · eps``.
    """
    values, u, fallback = psd_eigenpair(
        mat,
        eigenvectors,
        lambda values: first_nonzero(values, size=p, dtype=mat.dtype, rtol=rtol),
    )
    i, rank = _ill_rank(values, p, rtol, policy, mat.dtype)
    return r_ill_term(mat, (values[i], values[-1]), rank, u, fallback)


def r_ill_term(
    mat: Array, extremes: tuple[float, float], rank: int, u: Array, fallback: bool
) -> SpectralTerm[Array]:
    """:func:`r_ill_value_and_gradient` from ``(σ_k, σ_1)``, the checked numerical rank k and
    the unit u_k (p × 1), however they were computed."""
    s_k, s_1 = extremes
    fro2 = float((mat * mat).sum())
    denom = fro2 / (2 * rank) - 0.5 * (s_k * s_k)
    _check_ill_denominator(denom, fro2, rank, mat.dtype)
    d2 = denom**2
    monotone = rank * d2 / (2 * s_k * (rank - 1))
    unit = d2 / (2 * max(s_k * (1 - 1 / rank), s_1 / rank))
    gradient = (s_k * (u * u.mT) - mat / rank) / (denom * denom)
    log_kappa = math.log(s_1 / s_k)
    return SpectralTerm(1.0 / denom, gradient, log_kappa, monotone, unit, fallback)


def r_well(S: Array) -> Array:
    r""":math:`R_{\text{well}}(S) = \tfrac12\sigma_{\max}(S)^2 - \tfrac{1}{2p}\|S\|_F^2` (Eq. 3)."""
    S = check_symmetric_psd(S, "S")
    return _r_well_from(S, S.shape[0])


def r_ill(
    S: Array,
    *,
    rtol: float | None = None,
    rank_deficiency: RankDeficiency | str = RankDeficiency.WARN,
) -> Array:
    r""":math:`R_{\text{ill}}(S) = 1/(\tfrac{1}{2k}\|S\|_F^2 - \tfrac12\sigma_{\min}^2)` (Eq. 12).

    ``k`` is the numerical rank (eigenvalues above ``rtol · σ_max``, default
    ``rtol = p · eps``) and σ_min the smallest of them.
    """
    S = check_symmetric_psd(S, "S")
    rtol = check_rtol(rtol)
    policy = parse_choice(RankDeficiency, rank_deficiency, "rank_deficiency")
    return _r_ill_from(S, S.shape[0], rtol, policy)


def r_well_features(Phi: Array) -> Array:
    r"""``r_well(Φᵀ Φ)`` from features ``Φ`` (n × k); the Gram matrix ``Φ Φᵀ`` when ``n < k``.

    ``p = k`` (the size of ``Φᵀ Φ``), and ``‖Φ Φᵀ‖_F = ‖Φᵀ Φ‖_F``.
    """
    Phi = check_matrix(Phi, "Phi")
    return _r_well_from(_gram(Phi), Phi.shape[1])


def r_ill_features(
    Phi: Array,
    *,
    rtol: float | None = None,
    rank_deficiency: RankDeficiency | str = RankDeficiency.WARN,
) -> Array:
    """``r_ill(Φᵀ Φ)`` from features ``Φ`` (n × k); the Gram matrix ``Φ Φᵀ`` when ``n < k``.

    With ``n < k`` the covariance is always rank-deficient, so ``rank_deficiency``
    decides (see the module docstring). Default ``rtol`` is that of ``Φᵀ Φ``: ``k · eps``.
    """
    Phi = check_matrix(Phi, "Phi")
    rtol = check_rtol(rtol)
    policy = parse_choice(RankDeficiency, rank_deficiency, "rank_deficiency")
    return _r_ill_from(_gram(Phi), Phi.shape[1], rtol, policy)


def r_well_gradient(S: Array) -> Array:
    r"""Analytic :math:`\nabla_S R_{\text{well}} = \sigma_1 v_1 v_1^\top - S/p` (Appendix A)."""
    S = detached(check_symmetric_psd(S, "S"))
    return r_well_value_and_gradient(S, S.shape[0]).gradient


def r_ill_gradient(
    S: Array,
    *,
    rtol: float | None = None,
    rank_deficiency: RankDeficiency | str = RankDeficiency.WARN,
) -> Array:
    r"""Analytic :math:`\nabla_S R_{\text{ill}} = (\sigma_k u_k u_k^\top - S/k)/D^2` (Thm 4.1 (3)).

    ``D = ‖S‖_F²/(2k) − σ_k²/2``, ``k`` the numerical rank, σ_k the smallest non-zero eigenvalue.
    """
    S = detached(check_symmetric_psd(S, "S"))
    rtol = check_rtol(rtol)
    policy = parse_choice(RankDeficiency, rank_deficiency, "rank_deficiency")
    return r_ill_value_and_gradient(S, S.shape[0], rtol, policy).gradient
