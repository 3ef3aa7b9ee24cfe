r"""The extreme eigenpairs of a large symmetric PSD Gram matrix, tracked from step to step.

The regularizers read from ``G = ΨΨᵀ`` (or ``ΨᵀΨ``: the same non-zero spectrum) only

* σ_max = λ₁ and its unit vector v₁ (R_well, Eq. 3), and λ₂ (R_well's monotone step);
* the numerical rank :math:`k = \#\{\lambda > \tau\}`, :math:`\tau = \mathrm{rtol}\cdot
  \sigma_{\max}` (the numerical-range rule of :mod:`condimmune.core.spectral`, default
  ``rtol = p · eps``), and :math:`\sigma_{\min} = \min\{\lambda > \tau\}` with its unit
  vector u_k (R_ill, Eq. 12; log κ, Eq. 1).

A full ``eigh`` computes all ``p`` eigenpairs for these; :class:`ExtremeEigenTracker`
computes only them, in :math:`\tfrac13 p^3` flops (one factorisation) and a few dozen
matrix–vector products:

1. λ₁, λ₂, v₁ by Lanczos on ``G`` (:func:`~condimmune.core.lanczos.lanczos`), started from
   the previous step's v₁;
2. k from Sylvester's law of inertia: with the Bunch–Kaufman factorisation
   :math:`G - \tau I = LDL^\top` (LAPACK ``sytrf``,
   :func:`~condimmune.core.factor.symmetric_indefinite_solver`), the number of eigenvalues
   of ``G`` below τ is the number of negative eigenvalues of the block-diagonal ``D``
   (:func:`~condimmune.core.factor.inertia_below`);
3. σ_min and u_k by shift-invert Lanczos on :math:`(G - \tau I)^{-1}` (solves with the same
   factor), whose largest eigenvalue is :math:`1/(\sigma_{\min} - \tau)`, started from the
   previous step's u_k; the eigenvalue just below τ, if any, gives its most negative one.

Every value is the Rayleigh quotient :math:`x^\top Gx` of its unit vector. The result is
*certified* only if the residual :math:`\|Gx - (x^\top Gx)x\|` of each vector returned is
at rounding level (``p · eps · σ_max``), the eigenvalues nearest τ on both sides lie at least
:math:`\delta = 4\sqrt{p}\,\epsilon\,\sigma_{\max}` from it (the backward error of a dense
``eigvalsh`` and of the factorisation is a small multiple of :math:`\epsilon\,\sigma_{\max}`,
so both then count the same rank; the one just below τ, whose vector is not returned, by
δ plus its residual: a symmetric matrix has an eigenvalue within the residual of a Rayleigh
quotient), the inertia and the Lanczos run agree on which side of τ they lie, and, when v₁
is asked for, λ₁ − λ₂ ≥ 1e-6 λ₁ (the rule of :mod:`condimmune.core.eigenpairs`).
Otherwise :meth:`ExtremeEigenTracker.track` returns ``None`` and the caller takes the dense
``eigh`` path. (A top eigenvalue repeated *exactly* is seen once by Lanczos: v₁ is then one
unit vector of its eigenspace, still a subgradient.)

Matrices are torch tensors (torch's kernels, whose thread count the CLI sets with
``--threads``) or numpy arrays (scipy's LAPACK, run on one BLAS thread: two OpenBLAS pools
per process on a loaded 2-core machine, a sweep's workers, made ``sytrf`` 50 × slower).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic

from condimmune.core.arrays import (
    Array,
    eye_like,
    is_cpu_float64,
    machine_epsilon,
    namespace,
    seeded_normal_column,
)
from condimmune.core.eigenpairs import _MIN_RELATIVE_GAP
from condimmune.core.factor import symmetric_indefinite_solver
from condimmune.core.lanczos import Ritz, lanczos

if TYPE_CHECKING:
    pass

__all__ = [
    "TRACKING_MIN_SIZE",
    "ExtremeEigenTracker",
    "TrackedSpectrum",
    "takes_fast_path",
]

TRACKING_MIN_SIZE = 512
"""From this size on (rows and non-zero columns of a task) the regularizer step tracks the
extreme eigenpairs instead of a dense eigendecomposition. ``benchmarks/bench_tracking.py``
(2 cores, one torch thread): on random Wishart Gram matrices, where R_well's dense path is
only ``eigvalsh`` and one inverse iteration, tracking costs 4.7 / 9.0 / 18 ms against 1.2 /
5.2 / 21 ms at sizes 128 / 320 / 512, so it wins from about 500 on; on the raw-pixel Gram
matrices (525 and 571 after the row reduction, graded spectra whose R_ill needs a full
``eigh``) it costs 6.8 and 6.2 ms against 26 and 41 ms. Below it, the dense numbers are kept."""

_MARGIN = 4.0
"""δ = 4 √p · eps · σ_max: how far from τ an eigenvalue must lie for its side to count."""

_START_MIX = 1e-2
"""Weight of the fixed start vector mixed into a warm start: a component along every
eigenvector, so a Lanczos run cannot miss an eigenvalue that has moved past the old one."""


_REFINE_ROUNDS = 2
"""Rounds of inverse iteration at the Rayleigh quotient (a new factorisation each) when σ_min's
Lanczos vector is not at rounding level (:func:`_inverse_iteration`)."""


def takes_fast_path(x: Array) -> bool:
    """Whether a task's rows ``x`` (n × d) are large enough for the tracked extremes: float64
    on the CPU, with at least :data:`TRACKING_MIN_SIZE` rows and as many columns that are not
    all zero (the Gram or covariance matrix of its features is then at least that large)."""
    if not is_cpu_float64(x):
        return False
    xp = namespace(x)
    columns = int(xp.sum(xp.any(x != 0, axis=0)))
    return min(int(x.shape[0]), columns) >= TRACKING_MIN_SIZE


@dataclass(frozen=True)
class TrackedSpectrum(Generic[Array]):
    """The certified extremes of a PSD matrix of size ``size``: λ₁ ≥ λ₂ (NaN unless v₁ was
    asked for), the number of eigenvalues above τ (``rank``) and the smallest of them
    (``low``), with the unit vectors (p × 1) asked for (``None`` otherwise)."""

    top: float
    second: float
    low: float
    rank: int
    size: int
    top_vector: Array | None
    low_vector: Array | None


def _start_vector(like: Array) -> Array:
    """A fixed unit vector (seeded): the start of a first Lanczos run, reproducible."""
    start = seeded_normal_column(like)
    unit: Array = start / namespace(start).linalg.vector_norm(start)
    return unit


def _warm(previous: Array | None, start: Array) -> Array:
    """The previous step's vector with a little of ``start``; ``start`` alone without one."""
    if previous is None or previous.shape != start.shape:
        return start
    return previous + _START_MIX * start


def _rayleigh(gram: Array, x: Array) -> tuple[float, float]:
    """``(xᵀGx, ‖Gx − (xᵀGx)x‖)`` for a unit column ``x``."""
    gx = gram @ x
    value = float((x.mT @ gx)[0, 0])
    return value, float(namespace(gx).linalg.vector_norm(gx - value * x))


def _shifted(gram: Array, shift: float) -> Array:
    """``G − shift · I``."""
    shifted: Array = gram - shift * eye_like(gram.shape[0], gram)
    return shifted


def _inverse_iteration(gram: Array, shift: float, x: Array) -> Array | None:
    """Two steps of inverse iteration for ``G`` at ``shift`` from ``x``: σ_min's vector when
    the shift-invert operator at τ is dominated by an eigenvalue just below τ (whose
    rounding then swamps σ_min's component, e.g. exact zeros with σ_min ≫ τ); ``None`` for
    an exactly singular shift."""
    factored = symmetric_indefinite_solver(_shifted(gram, shift))
    if factored is None:
        return None
    solve, xp = factored[0], namespace(x)
    for _ in range(2):
        x = solve(x)
        x = x / xp.linalg.vector_norm(x)
    return x


def _rounding(gram: Array, sigma_max: float) -> float:
    """``p · eps · σ_max``: the residual of an eigenvector computed to rounding level."""
    return int(gram.shape[0]) * machine_epsilon(gram.dtype) * sigma_max


class ExtremeEigenTracker:
    """Tracks the extreme eigenpairs of one sequence of Gram matrices (a regularizer's
    matrix at each training step): each call starts its Lanczos runs from the vectors the
    previous call found."""

    def __init__(self) -> None:
        self._top: Any = None
        self._low: Any = None

    def track(
        self, gram: Array, *, rtol: float, top_vector: bool, low_vector: bool
    ) -> TrackedSpectrum[Array] | None:
        """The certified extremes of the symmetric PSD ``gram`` (float64), with
        τ = ``rtol`` · σ_max, or ``None`` when they cannot be certified (module docstring):
        then the caller must use the dense path. ``top_vector``/``low_vector``: whether v₁ /
        u_k are returned (v₁ then also needs the 1e-6 gap to λ₂)."""
        size = gram.shape[0]
        if size < 3 or not math.isfinite(float(gram.sum())):
            return None
        start = _start_vector(gram)
        top = self._top_pair(gram, _warm(self._top, start), top_vector)
        if top is None:
            return None
        top_value, second, vector = top
        if top_vector and top_value - second < _MIN_RELATIVE_GAP * top_value:
            return None
        low = self._low_pair(gram, top_value, rtol * top_value, _warm(self._low, start))
        if low is None:
            return None
        rank, low_value, low_vec = low
        self._top, self._low = vector, low_vec
        return TrackedSpectrum(
            top=top_value,
            second=second,
            low=low_value,
            rank=rank,
            size=size,
            top_vector=vector if top_vector else None,
            low_vector=low_vec if low_vector else None,
        )

    @staticmethod
    def _top_pair(
        gram: Array, start: Array, with_vector: bool
    ) -> tuple[float, float, Array] | None:
        """``(λ₁, λ₂, v₁)`` by Lanczos on ``G``, or ``None`` if it does not converge.

        ``with_vector``: v₁ to a residual at rounding level (checked again on ``G``) and λ₂
        to a residual ``√(tol · λ₁)``, whose error (residual² over its gap) is then of the
        order of v₁'s rounding. Else only λ₁ is converged, to an error
        :math:`r_1^2/(\theta_1 - \theta_2 - r_1 - r_2)` (Kato–Temple, the gap estimated from
        the Ritz values θ and their residuals r) at the same level, λ₂ is NaN, and v₁ is the
        Ritz vector (a warm start for the next call)."""
        rounding = _rounding(gram, 1.0) / 4  # × λ₁

        def converged(ritz: Ritz[Array]) -> bool:
            tol = rounding * ritz.values[-1]
            (second, first), (r2, r1) = ritz.values[-2:], ritz.residuals[-2:]
            if with_vector:
                return r1 <= tol and r2 <= math.sqrt(tol * first)
            gap = first - second - r1 - r2
            return gap > 0 and r1 * r1 <= tol * gap

        ritz = lanczos(lambda x: gram @ x, start, converged)
        if ritz is None:
            return None
        vector = ritz.vector(-1)
        value, residual = _rayleigh(gram, vector)
        # `not ≤` also refuses a NaN; a PSD matrix with λ₁ ≤ 0 is zero
        if not (value > 0 and (residual <= _rounding(gram, value) or not with_vector)):
            return None
        second = min(ritz.values[-2], value) if with_vector else math.nan
        return value, second, vector

    @staticmethod
    def _low_pair(
        gram: Array, sigma_max: float, tau: float, start: Array
    ) -> tuple[int, float, Array] | None:
        """``(rank, σ_min, u_k)`` from the inertia of ``G − τI`` and shift-invert Lanczos, or
        ``None`` when the rank is not certified (module docstring)."""
        size = gram.shape[0]
        eps = machine_epsilon(gram.dtype)
        factored = symmetric_indefinite_solver(_shifted(gram, tau))
        if factored is None:  # an exactly zero pivot: an eigenvalue at τ to rounding
            return None
        solve, below = factored
        if below == size:
            return None

        def converged(ritz: Ritz[Array]) -> bool:
            ends = (-1, 0) if below else (-1,)
            # ‖Gx − (τ + 1/ν)x‖ ≲ σ_max · r/|ν|: at rounding level for r ≤ p · eps · |ν| / 4
            tol = size * eps / 4
            return all(ritz.residuals[i] <= tol * abs(ritz.values[i]) for i in ends)

        ritz = lanczos(solve, start, converged)
        if ritz is None:
            return None
        margin = _MARGIN * math.sqrt(size) * eps * sigma_max
        rounding = _rounding(gram, sigma_max)
        low_vec = ritz.vector(-1)
        low, residual = _rayleigh(gram, low_vec)
        for _ in range(_REFINE_ROUNDS):
            if residual <= rounding:
                break
            refined = _inverse_iteration(gram, low, low_vec)
            if refined is None:
                return None
            low_vec = refined
            low, residual = _rayleigh(gram, low_vec)
        # `not ≥` also refuses a NaN
        if not (ritz.values[-1] > 0 and residual <= rounding and low - tau >= margin):
            return None
        if below:
            under, residual = _rayleigh(gram, ritz.vector(0))
            # `not ≥` also refuses a NaN residual
            if not (ritz.values[0] < 0 and tau - under >= margin + residual):
                return None
        return size - below, low, low_vec
