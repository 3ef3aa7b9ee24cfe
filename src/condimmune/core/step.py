r"""One immunization step's regularizer work for a linear extractor (Alg. 1).

.. math::
    \Delta W = \lambda_P\,\nabla_W R_{\text{well}}(S_P)\,(K_P+\rho_P I)^{-1}
             + \lambda_H\,\nabla_W R_{\text{ill}}(S_H)\,(K_H+\rho_H I)^{-1},

with :math:`S = \Phi^\top\Phi`, :math:`\Phi = X W^\top`, :math:`K = X^\top X`.

Because :math:`\Phi = XW^\top`, every weight gradient has the form
:math:`\nabla_W R = A^\top X` with :math:`A = \partial R/\partial\Phi` (n × k), so

.. math:: \nabla_W R\,(X^\top X + \rho I)^{-1} = A^\top M,\qquad M = X(X^\top X+\rho I)^{-1},

and ``M`` (n × d) is computed once per run. A step is then one ``Φ`` product, the
regularizers and their analytic eigenvalue gradients (Thm 4.1 (3), App. A) on the
``n × n`` Gram matrix when ``n < k`` (:math:`O(n^2k + n^3)`), and one
``Aᵀ M`` product: :math:`O(nkd)`, against :math:`O(k^3 + d^3)` for the dense computation in
:mod:`condimmune.core.reference`. Benign and harmful rows are stacked so each product is one
matrix multiplication.

Work that cannot change the direction is left out, so the numbers are those of the full
computation up to the order of floating-point sums:

* a regularizer whose weight is 0 this step (the benign guard switches R_ill off) gets no
  features, no spectrum and no rows in ``Aᵀ M``: its ``A`` block is zero;
* input columns where a task's rows are all zero (border pixels of raw MNIST) are dropped
  from its ``X`` and ``M``: they add exact zeros to ``Φ = XWᵀ``, and the columns of ``M``
  there are zero (``XᵀX + ρI`` is block-diagonal across them, ρ > 0), so the direction is
  zero in those columns;
* each regularizer's value, gradient, step sizes and log κ come from one eigendecomposition,
  and for a matrix larger than :data:`~condimmune.core.eigenpairs.DENSE_EIGH_MAX_SIZE` only
  its eigenvalues are computed in full (the one eigenvector needed by inverse iteration,
  :func:`~condimmune.core.eigenpairs.psd_eigenvector`);
* a float64 CPU task whose eigenvalue problem has at least
  :data:`~condimmune.core.tracking.TRACKING_MIN_SIZE` rows (raw pixels, full MNIST, n1024)
  takes the fast path: its rows are reduced once to their exact rank
  (:func:`~condimmune.core.rows.exact_rank_rows`) and rotated to a triangle, whose features
  are formed by ``dtrmm`` and their Gram matrix by ``dsyrk``
  (:mod:`condimmune.core.step_rows`, :mod:`condimmune.core.blas`); only the spectrum's
  extremes are computed, tracked from step to step
  (:mod:`condimmune.core.tracked_terms`), with the dense ``eigh`` as the fallback whenever
  they cannot be certified.

Data and weights are torch tensors or numpy arrays (:mod:`condimmune.core.arrays`), one
backend per step object.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Generic

import array_api_compat

from condimmune.core._choices import parse_choice
from condimmune.core._validation import (
    check_matrix,
    check_positive_float,
    check_rtol,
    check_same_device_dtype,
)
from condimmune.core.arrays import (
    Array,
    detached,
    is_array,
    is_cpu_float64,
    matmul_into,
    namespace,
    no_grad,
)
from condimmune.core.blas import symmetric_gram
from condimmune.core.eigenpairs import EigenvectorChooser, EigenvectorMethod
from condimmune.core.regularizers import (
    RankDeficiency,
    SpectralTerm,
    r_ill_value_and_gradient,
    r_well_value_and_gradient,
)
from condimmune.core.rows import SharedReduction, live_weight
from condimmune.core.step_rows import StepRows
from condimmune.core.tracked_terms import r_ill_tracked, r_well_tracked
from condimmune.core.tracking import ExtremeEigenTracker, takes_fast_path

__all__ = ["PreconditionedRegularizerStep", "RegularizerGradient", "StepWeighting"]

_DENSE_AFTER_REFUSAL = 2
"""Steps that go straight to the dense ``eigh`` after the tracked extremes were refused
(raw MNIST, 8 epochs: 4 refusals in 114 tracked spectra, each an eigenvalue within 60 eps ·
σ_max of τ, certified again one or two steps later)."""


class StepWeighting(StrEnum):
    """How ``benign_weight``/``harmful_weight`` turn into the coefficients of the direction.

    ``fixed``: the coefficients are the weights (λ_P, λ_H of Alg. 1).
    ``monotone``: the weights are fractions c ∈ [0, 1) of ``min(monotone step, unit step)``
    of each regularizer (Thm 4.3; ``docs/theory.md`` §4): each preconditioned step moves κ
    the right way and changes no eigenvalue by more than ≈ c.
    ``unit``: fractions of the unit step only. For R_ill this equals ``monotone`` (its unit
    step is never larger); for R_well it avoids the monotone bound's stall when σ₁ ≈ σ₂, at
    the price of no per-step guarantee.
    In both spectral modes the coefficients are recomputed from the current spectra at
    every call, so the direction is a ready-to-apply update ``W ← W − ΔW`` whose size does
    not depend on how the data is scaled.
    """

    FIXED = "fixed"
    MONOTONE = "monotone"
    UNIT = "unit"


@dataclass(frozen=True)
class RegularizerGradient(Generic[Array]):
    """The preconditioned regularizer direction (k × d), the two values and coefficients.

    A regularizer whose weight is 0 is skipped; its value and log κ are then ``nan`` and its
    coefficient 0. ``*_log_kappa`` are the current (pre-update) log κ over the numerical range.
    """

    gradient: Array
    r_well: float
    r_ill: float
    benign_coefficient: float
    harmful_coefficient: float
    benign_log_kappa: float
    harmful_log_kappa: float


class PreconditionedRegularizerStep(Generic[Array]):
    """Precomputes ``M_P``, ``M_H`` once; :meth:`gradient` then gives Alg. 1's direction.

    Args:
        benign_x, harmful_x: the data whose covariances are regularized (n × d each).
        benign_ridge, harmful_ridge: ρ in ``(XᵀX + ρI)⁻¹`` (paper: 1 and 1 for house
            price; 1 and 1e-7 for MNIST).
        benign_weight, harmful_weight: λ_P and λ_H; 0 switches a regularizer off.
        rtol, rank_deficiency: passed to :func:`~condimmune.core.regularizers.r_ill_features`.
        weighting: ``"fixed"`` (weights are λ_P, λ_H), ``"monotone"`` or ``"unit"``
            (weights are fractions of spectral step sizes); see :class:`StepWeighting`.
        eigenvectors: where the regularizers' eigenvectors come from
            (:class:`~condimmune.core.eigenpairs.EigenvectorMethod`; ``"auto"``: ``eigh``
            for small matrices, inverse iteration for larger ones, and for a float64 CPU
            task of at least :data:`~condimmune.core.tracking.TRACKING_MIN_SIZE` rows and
            columns the tracked extremes; ``"tracking"`` takes the tracked path at any
            size).
        shared_rows: the benign and harmful exact-rank reductions the caller shares
            (:class:`~condimmune.core.rows.SharedReduction`, the linear trainer's), used on
            the fast path when made for these very rows.
    """

    def __init__(
        self,
        benign_x: Array,
        harmful_x: Array,
        *,
        benign_ridge: float,
        harmful_ridge: float,
        benign_weight: float,
        harmful_weight: float,
        rtol: float | None = None,
        rank_deficiency: RankDeficiency | str = RankDeficiency.WARN,
        weighting: StepWeighting | str = StepWeighting.FIXED,
        eigenvectors: EigenvectorMethod | str = EigenvectorMethod.AUTO,
        shared_rows: tuple[SharedReduction[Array] | None, SharedReduction[Array] | None] = (
            None,
            None,
        ),
    ) -> None:
        benign_x = detached(check_matrix(benign_x, "benign_x"))
        harmful_x = detached(check_matrix(harmful_x, "harmful_x"))
        check_same_device_dtype(benign_x=benign_x, harmful_x=harmful_x)
        if benign_x.shape[1] != harmful_x.shape[1]:
            raise ValueError(
                f"benign_x has {benign_x.shape[1]} columns and harmful_x {harmful_x.shape[1]}; "
                "both tasks must share the input dimension"
            )
        self.benign_weight = check_positive_float(benign_weight, "benign_weight", allow_zero=True)
        self.harmful_weight = check_positive_float(
            harmful_weight, "harmful_weight", allow_zero=True
        )
        self.rtol = check_rtol(rtol)
        self.rank_deficiency = parse_choice(RankDeficiency, rank_deficiency, "rank_deficiency")
        self.weighting = parse_choice(StepWeighting, weighting, "weighting")
        self.eigenvectors = parse_choice(EigenvectorMethod, eigenvectors, "eigenvectors")
        if (
            self.weighting is not StepWeighting.FIXED
            and max(self.benign_weight, self.harmful_weight) >= 1
        ):
            raise ValueError(
                f"with weighting={self.weighting.value!r} the weights are fractions of a step "
                "size and must lie in [0, 1) (a full unit step zeroes an eigenvalue)"
            )
        self.dim: int = benign_x.shape[1]
        self.data: Array = benign_x  # backend, device and dtype every weight must share
        self._fast = {
            "benign": self._tracks(benign_x),
            "harmful": self._tracks(harmful_x),
        }
        self._rows: StepRows[Array] = StepRows(
            (benign_x, harmful_x), (benign_ridge, harmful_ridge), self.dim, self._fast, shared_rows
        )
        self._buffers: dict[tuple[bool, bool], tuple[Any, Any]] = {}  # reused Φ and A
        # one chooser and tracker per regularizer: each matrix keeps its own spectrum; an
        # eigenvalue crossing τ (a refused tracking) is past it within a step or two
        self._choosers = {
            name: EigenvectorChooser(EigenvectorMethod.TRACKING, _DENSE_AFTER_REFUSAL)
            if self._fast[name]
            else EigenvectorChooser(self.eigenvectors)
            for name in ("benign", "harmful")
        }
        self._trackers = {name: ExtremeEigenTracker() for name in ("benign", "harmful")}

    def _tracks(self, x: Array) -> bool:
        """Whether a task takes the fast path: ``"tracking"`` (float64 on the CPU), or
        ``"auto"`` and :func:`~condimmune.core.tracking.takes_fast_path`."""
        if self.eigenvectors is EigenvectorMethod.TRACKING:
            return is_cpu_float64(x)
        return self.eigenvectors is EigenvectorMethod.AUTO and takes_fast_path(x)

    def gradient(self, weight: Array, *, out: Array | None = None) -> RegularizerGradient[Array]:
        """The preconditioned direction for ``W`` (k × d); written into ``out`` if given.

        Reusing ``out`` across steps avoids allocating a k × d tensor per step.
        """
        if not is_array(weight) or weight.ndim != 2 or weight.shape[1] != self.dim:
            raise ValueError(
                f"weight must be a k × {self.dim} tensor, got "
                f"{getattr(weight, 'shape', type(weight).__name__)}"
            )
        check_same_device_dtype(weight=weight, data=self.data)
        key = (self.benign_weight > 0, self.harmful_weight > 0)
        terms: dict[str, tuple[float, float, float]] = {}
        with no_grad(weight):
            if out is None:
                out = namespace(weight).empty_like(weight)
            if any(key):
                self._direction(detached(weight), key, out, terms)
            else:
                out[...] = 0
        nan = (float("nan"), 0.0, float("nan"))
        well, c_p, kappa_p = terms.get("benign", nan)
        ill, c_h, kappa_h = terms.get("harmful", nan)
        return RegularizerGradient(
            gradient=out,
            r_well=well,
            r_ill=ill,
            benign_coefficient=c_p,
            harmful_coefficient=c_h,
            benign_log_kappa=kappa_p,
            harmful_log_kappa=kappa_h,
        )

    def _direction(
        self,
        weight: Array,
        key: tuple[bool, bool],
        out: Array,
        terms: dict[str, tuple[float, float, float]],
    ) -> None:
        """Write ``Aᵀ M`` of the active regularizers into ``out``; their terms into ``terms``."""
        rows = self._rows.block(key)
        xp, k = namespace(weight), weight.shape[0]
        if key not in self._buffers or self._buffers[key][0].shape[0] != rows.x.shape[0] * k:
            device = array_api_compat.device(rows.x)
            flat = xp.empty(rows.x.shape[0] * k, dtype=rows.x.dtype, device=device)
            self._buffers[key] = (flat, xp.empty_like(flat))
        w, live = live_weight(weight, rows.columns)
        shape = (rows.x.shape[0], w.shape[0])
        phi, a = (xp.reshape(buffer[: shape[0] * shape[1]], shape) for buffer in self._buffers[key])
        self._rows.features(w, key, phi)
        # one reduction instead of an elementwise test: a sum is finite iff every entry is
        # (up to overflow, which the elementwise test then rules out)
        if not math.isfinite(float(xp.sum(phi))) and not bool(xp.all(xp.isfinite(phi))):
            raise ValueError("the features X Wᵀ contain NaN or Inf; the weight has diverged")
        n = rows.n_benign
        if key[0]:
            terms["benign"] = self._feature_gradient(phi[:n], a[:n], "benign", k)
        if key[1]:
            terms["harmful"] = self._feature_gradient(phi[n:], a[n:], "harmful", k)
        if live is None and rows.columns is None:
            matmul_into(a.mT, rows.m, out)
            return
        delta = a.mT @ rows.m
        if rows.columns is not None:
            spread = xp.zeros(
                (delta.shape[0], self.dim), dtype=delta.dtype, device=array_api_compat.device(delta)
            )
            spread[:, rows.columns] = delta
            delta = spread
        if live is None:
            out[...] = delta
        else:
            out[...] = 0
            out[live] = delta

    def _feature_gradient(
        self, phi: Array, out: Array, name: str, k: int
    ) -> tuple[float, float, float]:
        """Write ``c · ∂R/∂Φ`` into ``out``, return ``(R, c, log κ)``: ``2 (∂R/∂G) Φ`` on the Gram
        matrix ``G = ΦΦᵀ`` when n < k, else ``2 Φ (∂R/∂S)`` on ``S = ΦᵀΦ``."""
        n = phi.shape[0]
        if self._fast[name]:
            mat = symmetric_gram(phi, rows=n < k)
        else:
            mat = phi @ phi.mT if n < k else phi.mT @ phi
        weight = self.benign_weight if name == "benign" else self.harmful_weight
        t = self._term(mat, name, k)
        if n < k:
            matmul_into(t.gradient, phi, out)
        else:
            matmul_into(phi, t.gradient, out)
        if self.weighting is StepWeighting.MONOTONE:
            coefficient = weight * min(t.monotone_step, t.unit_step)
        elif self.weighting is StepWeighting.UNIT:
            coefficient = weight * t.unit_step
        else:
            coefficient = weight
        out *= 2.0 * coefficient
        return t.value, coefficient, t.log_kappa

    def _term(self, mat: Array, name: str, k: int) -> SpectralTerm[Array]:
        """The regularizer of ``name`` on ``mat``, by the method its chooser gives: the tracked
        extremes (a dense fallback sends the next few steps to ``eigh``) or
        :func:`~condimmune.core.eigenpairs.psd_eigenpair`'s methods."""
        chooser = self._choosers[name]
        method = chooser.next_method()
        tracker = self._trackers[name]
        if name == "benign":
            if method is EigenvectorMethod.TRACKING:
                t = r_well_tracked(mat, k, tracker)
            else:
                t = r_well_value_and_gradient(mat, k, method)
        elif method is EigenvectorMethod.TRACKING:
            t = r_ill_tracked(mat, k, self.rtol, self.rank_deficiency, tracker)
        else:
            t = r_ill_value_and_gradient(mat, k, self.rtol, self.rank_deficiency, method)
        chooser.record(t.fallback)
        return t
