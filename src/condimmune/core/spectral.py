r"""Spectra and condition numbers of symmetric PSD matrices and of feature covariances.

The condition number is the paper's Eq. 1, :math:`\kappa(S) = \sigma_{\max}/\sigma_{\min}`
with :math:`\sigma_{\min}` the smallest **non-zero** eigenvalue. In floating point
"non-zero" means above a *relative* threshold ``rtol · σ_max`` (the rule
``numpy.linalg.matrix_rank`` uses), so κ does not change when the data is rescaled.
The default ``rtol`` for a matrix of size ``p`` is ``p · eps(dtype)``. :func:`nonzero_mask`
is the one implementation of this rule on tensors (:func:`first_nonzero` on a sorted list of
floats); every spectrum in the package goes through it.

The reference code instead adds ``1e-6 · I`` and takes the smallest eigenvalue above
``1e-6``; on its rank-deficient covariances that σ_min is always ≈ 1e-6, so its κ is a
rescaled σ_max. :func:`paper_compatible_condition_number` reproduces that rule so
results can be compared with the paper's tables; it is never our headline number.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import torch
from torch import Tensor

from condimmune.core._validation import check_matrix, check_rtol, check_symmetric_psd
from condimmune.core.errors import DegenerateSpectrumError

__all__ = [
    "DENSE_EIGH_MAX_SIZE",
    "EigenvectorChooser",
    "EigenvectorMethod",
    "LogKappaGradient",
    "PsdSpectrum",
    "condition_number",
    "condition_number_features",
    "covariance_eigenvalues",
    "default_rtol",
    "first_nonzero",
    "log_condition_number",
    "log_condition_number_features",
    "log_condition_number_features_gradient",
    "nonzero_eigenvalues",
    "nonzero_mask",
    "numerical_rank",
    "paper_compatible_condition_number",
    "psd_eigenpair",
    "psd_eigenvector",
    "psd_spectrum",
]

PAPER_RIDGE = 1e-6
"""The reference code's absolute ridge and eigenvalue cut-off."""


def default_rtol(size: int, dtype: torch.dtype) -> float:
    """``size · eps(dtype)``: the relative threshold below which an eigenvalue counts as zero."""
    return size * torch.finfo(dtype).eps


def nonzero_mask(
    values: Tensor,
    *,
    rtol: float | None = None,
    size: int | None = None,
    sigma_max: Tensor | None = None,
) -> Tensor:
    r"""Which ``values`` count as non-zero: the numerical-range rule of the whole package.

    ``values`` are eigenvalues of a PSD matrix (or squared singular values of its factor),
    in any order. A value is non-zero when :math:`\lambda > \mathrm{rtol}\cdot\sigma_{\max}`,
    so σ_min of Eq. 1 is the smallest value this mask keeps. ``rtol`` defaults to
    :func:`default_rtol` of ``size`` (the size of the matrix the values come from; default
    ``values.numel()``, pass it when structural zeros are omitted, as by the Gram trick).
    ``sigma_max`` defaults to ``values.max()``; pass it when ``values`` are measured against
    another matrix's largest eigenvalue. Returns a boolean tensor shaped like ``values``;
    the comparison is made on detached values (a mask carries no gradient).
    """
    rtol = check_rtol(rtol)
    if rtol is None:
        rtol = default_rtol(values.numel() if size is None else size, values.dtype)
    top = values.detach().max() if sigma_max is None else sigma_max.detach()
    return values.detach() > rtol * top


def first_nonzero(
    values: list[float], *, size: int, dtype: torch.dtype, rtol: float | None = None
) -> int:
    """Index of the first value :func:`nonzero_mask` keeps in ascending ``values`` (of a
    matrix of ``size``; ``len(values)`` if none): the same rule on a list of floats, for the
    scalar work of one step, where a tensor operation per comparison costs more than the
    comparison."""
    if rtol is None:
        rtol = default_rtol(size, dtype)
    return bisect.bisect_right(values, rtol * values[-1])


def _psd_eigenvalues(S: Tensor, name: str) -> Tensor:
    """Ascending eigenvalues of a symmetric matrix, refusing clearly indefinite input."""
    lam: Tensor = torch.linalg.eigvalsh(S)
    _check_psd_spectrum(lam, name)
    return lam


def _psd_eigh(S: Tensor, name: str = "the regularized covariance") -> tuple[Tensor, Tensor]:
    """``eigh`` of a symmetric matrix with the same checks as :func:`_psd_eigenvalues`."""
    lam: Tensor
    vecs: Tensor
    lam, vecs = torch.linalg.eigh(S)
    _check_psd_spectrum(lam, name)
    return lam, vecs


class EigenvectorMethod(StrEnum):
    """Where :func:`psd_eigenvector` takes a regularizer's one eigenvector from.

    ``dense``: a full ``eigh`` (all eigenvectors). ``inverse-iteration``: ``eigvalsh`` for the
    values, then inverse iteration for the one vector, with a gap and residual check and
    the dense ``eigh`` as fallback. ``auto``: dense up to :data:`DENSE_EIGH_MAX_SIZE`.
    """

    AUTO = "auto"
    DENSE = "dense"
    INVERSE_ITERATION = "inverse-iteration"


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
class PsdSpectrum:
    """Ascending eigenvalues of a symmetric PSD matrix, with all eigenvectors when ``eigh``
    computed them (else ``None``; :func:`psd_eigenvector` then computes the one needed)."""

    matrix: Tensor
    values: Tensor
    vectors: Tensor | None


def psd_spectrum(
    S: Tensor,
    method: EigenvectorMethod = EigenvectorMethod.AUTO,
    name: str = "the regularized covariance",
) -> PsdSpectrum:
    """One eigendecomposition of ``S`` (checked as :func:`_psd_eigenvalues` does), shared by a
    regularizer's value, gradient, step sizes and log κ. No input checks: internal."""
    if method is EigenvectorMethod.DENSE or (
        method is EigenvectorMethod.AUTO and S.shape[0] <= DENSE_EIGH_MAX_SIZE
    ):
        lam, vecs = _psd_eigh(S, name)
        return PsdSpectrum(S, lam, vecs)
    return PsdSpectrum(S, _psd_eigenvalues(S, name), None)


def psd_eigenvector(spectrum: PsdSpectrum, index: int) -> Tensor | None:
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
    index = index % spectrum.values.numel()
    if spectrum.vectors is None:
        return _inverse_iteration(spectrum.matrix, spectrum.values, index)
    return spectrum.vectors[:, index : index + 1]


def psd_eigenpair(
    mat: Tensor, method: EigenvectorMethod, pick: Callable[[list[float]], int]
) -> tuple[list[float], Tensor, bool]:
    """``(ascending eigenvalues, unit eigenvector, fell back)`` for the eigenvalue that
    ``pick`` selects from the values; one decomposition, the dense one if inverse iteration
    is refused (:func:`psd_eigenvector`). The scalar work on the spectrum is done on Python
    floats: a tensor operation per scalar costs more than it."""
    spectrum = psd_spectrum(mat, method)
    values = spectrum.values.tolist()
    vector = psd_eigenvector(spectrum, pick(values))
    if vector is not None:
        return values, vector, False
    spectrum = psd_spectrum(mat, EigenvectorMethod.DENSE)
    values = spectrum.values.tolist()
    vector = psd_eigenvector(spectrum, pick(values))
    if vector is None:  # pragma: no cover - dense spectra always carry their vectors
        raise AssertionError("a dense spectrum has no eigenvectors")
    return values, vector, True


def _inverse_iteration(S: Tensor, values: Tensor, index: int) -> Tensor | None:
    """The eigenvector of ``values[index]`` by inverse iteration, or ``None`` (see caller)."""
    lam = values.tolist()
    target, top = lam[index], lam[-1]
    gap = min(abs(lam[j] - target) for j in (index - 1, index + 1) if 0 <= j < len(lam))
    if not gap >= _MIN_RELATIVE_GAP * top:
        return None
    if index == len(lam) - 1:
        shifted = -S
        floor = 16 * S.shape[0] * torch.finfo(S.dtype).eps * top
        shifted.diagonal().add_(target + max(_TOP_SHIFT_FRACTION * gap, floor))
        factor, info = torch.linalg.cholesky_ex(shifted)
        if int(info) != 0:
            return None
        steps = _TOP_STEPS

        def solve(x: Tensor) -> Tensor:
            solved: Tensor = torch.cholesky_solve(x, factor)
            return solved

    else:
        shifted = S.clone()
        shifted.diagonal().sub_(target)
        lu, pivots, _ = torch.linalg.lu_factor_ex(shifted)
        steps = _INTERIOR_STEPS

        def solve(x: Tensor) -> Tensor:
            solved: Tensor = torch.linalg.lu_solve(lu, pivots, x)
            return solved

    # a fixed generator: the start vector, hence the result, is reproducible
    start = torch.Generator(device=S.device).manual_seed(0)
    x = torch.randn(S.shape[0], 1, generator=start, dtype=S.dtype, device=S.device)
    for _ in range(steps):
        x = solve(x)
        x = x / torch.linalg.vector_norm(x)
    sx = S @ x
    residual = float(torch.linalg.vector_norm(sx - (x.mT @ sx) * x))
    # not (≤) also rejects the NaN of an exactly singular shifted matrix
    if not residual <= S.shape[0] * torch.finfo(S.dtype).eps * top:
        return None
    return x


def _check_psd_spectrum(lam: Tensor, name: str) -> None:
    low, top = float(lam[0].detach()), float(lam[-1].detach())  # ascending: the ends decide
    if not math.isfinite(top):
        raise ValueError(f"{name} has a NaN/Inf spectrum; its inputs contain NaN or Inf")
    if top <= 0:
        raise DegenerateSpectrumError(
            f"{name} has no positive eigenvalue (σ_max = {top:.3g}); its condition number "
            "is undefined. Check that the features are not all zero"
        )
    if low < -math.sqrt(torch.finfo(lam.dtype).eps) * top:
        raise ValueError(
            f"{name} is not positive semi-definite (smallest eigenvalue {low:.3g}, "
            f"largest {top:.3g}); pass a covariance such as Φᵀ Φ"
        )


def covariance_eigenvalues(Phi: Tensor) -> Tensor:
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


def nonzero_eigenvalues(S: Tensor, *, rtol: float | None = None) -> Tensor:
    """Ascending eigenvalues of ``S`` above ``rtol · σ_max`` (default ``rtol = p · eps``)."""
    S = check_symmetric_psd(S, "S")
    rtol = check_rtol(rtol)
    lam = _psd_eigenvalues(S, "S")
    return lam[nonzero_mask(lam, rtol=rtol)]


def numerical_rank(S: Tensor, *, rtol: float | None = None) -> int:
    """Number of eigenvalues of ``S`` above ``rtol · σ_max``."""
    return int(nonzero_eigenvalues(S, rtol=rtol).numel())


def _log_kappa(lam_nonzero: Tensor) -> Tensor:
    """``log σ_max − log σ_min`` of ascending non-zero eigenvalues (Eq. 1 in log space)."""
    return torch.log(lam_nonzero[-1]) - torch.log(lam_nonzero[0])


def log_condition_number(S: Tensor, *, rtol: float | None = None) -> Tensor:
    r"""Natural log of :math:`\kappa(S)` over the numerical range (Eq. 1).

    Returns a 0-d tensor, differentiable through the eigenvalues (used by the
    "Opt κ" baseline). Raises :class:`DegenerateSpectrumError` when ``S`` is zero.
    """
    return _log_kappa(nonzero_eigenvalues(S, rtol=rtol))


def condition_number(S: Tensor, *, rtol: float | None = None) -> Tensor:
    r""":math:`\kappa(S) = \sigma_{\max}/\sigma_{\min}` over the numerical range (Eq. 1)."""
    return torch.exp(log_condition_number(S, rtol=rtol))


def log_condition_number_features(Phi: Tensor, *, rtol: float | None = None) -> Tensor:
    r"""``log_condition_number(Φᵀ Φ)`` computed from the features ``Φ`` (n × k).

    Uses the ``n × n`` Gram matrix when ``n < k``. The default ``rtol`` is that of
    ``S = Φᵀ Φ`` (``k · eps``), so both functions agree on the same data.
    """
    Phi = check_matrix(Phi, "Phi")
    rtol = check_rtol(rtol)
    lam = covariance_eigenvalues(Phi)
    return _log_kappa(lam[nonzero_mask(lam, rtol=rtol, size=Phi.shape[1])])


_FEATURES = "Phi's covariance"


def _extreme_eigenpairs(
    spectrum: PsdSpectrum, size: int, rtol: float | None
) -> tuple[tuple[float, float], list[tuple[Tensor, float]] | None]:
    """``((σ_max, σ_min), [(v_max, 2/σ_max), (v_min, −2/σ_min)])`` over the numerical range of
    a matrix of ``size``; the vectors are ``None`` when inverse iteration refused one."""
    values = spectrum.values.tolist()
    top = len(values) - 1
    low = first_nonzero(values, size=size, dtype=spectrum.values.dtype, rtol=rtol)
    extremes = (values[top], values[low])
    v_top, v_low = psd_eigenvector(spectrum, top), psd_eigenvector(spectrum, low)
    if v_top is None or v_low is None:
        return extremes, None
    return extremes, [(v_top, 2.0 / values[top]), (v_low, -2.0 / values[low])]


@dataclass(frozen=True)
class LogKappaGradient:
    """``log κ(ΦᵀΦ)`` over the numerical range and its gradient with respect to ``Φ``."""

    log_kappa: float
    gradient: Tensor
    fallback: bool
    """Inverse iteration was refused and a full ``eigh`` gave the spectrum and the vectors."""


def log_condition_number_features_gradient(
    Phi: Tensor,
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
    values, pairs = _extreme_eigenpairs(psd_spectrum(mat, eigenvectors, _FEATURES), k, rtol)
    fallback = pairs is None
    if pairs is None:
        values, pairs = _extreme_eigenpairs(
            psd_spectrum(mat, EigenvectorMethod.DENSE, _FEATURES), k, rtol
        )
    if pairs is None:  # pragma: no cover - dense spectra carry their vectors
        raise AssertionError("a dense spectrum has no eigenvectors")
    gradient = Phi.new_zeros(Phi.shape)
    for vector, scale in pairs:
        if gram:
            gradient.addmm_(vector, vector.mT @ Phi, alpha=scale)
        else:
            gradient.addmm_(Phi @ vector, vector.mT, alpha=scale)
    top, low = values
    return LogKappaGradient(math.log(top) - math.log(low), gradient, fallback)


def condition_number_features(Phi: Tensor, *, rtol: float | None = None) -> Tensor:
    """``condition_number(Φᵀ Φ)`` from the features, with the Gram trick when ``n < k``."""
    return torch.exp(log_condition_number_features(Phi, rtol=rtol))


def paper_compatible_condition_number(S: Tensor, *, ridge: float = PAPER_RIDGE) -> Tensor:
    r"""κ by the reference code rule: σ_min = least eigenvalue of ``S + ridge·I`` above ``ridge``.

    Not scale invariant and, on rank-deficient ``S``, σ_min ≈ ``ridge`` whatever the data,
    so the value is ≈ σ_max / ridge. Only for side-by-side comparison with the paper's
    tables; see ``docs/theory.md``.
    """
    S = check_symmetric_psd(S, "S")
    lam: Tensor = torch.linalg.eigvalsh(
        S + ridge * torch.eye(S.shape[0], dtype=S.dtype, device=S.device)
    )
    above = lam[lam > ridge]
    if above.numel() == 0:
        raise DegenerateSpectrumError(
            f"no eigenvalue of S + {ridge}·I lies above {ridge}; S is numerically zero"
        )
    return above[-1] / above[0]
