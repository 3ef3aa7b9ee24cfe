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
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import torch
from torch import Tensor

from condimmune.core._choices import parse_choice
from condimmune.core._validation import (
    check_matrix,
    check_positive_float,
    check_rtol,
    check_same_device_dtype,
)
from condimmune.core.preconditioner import InputPreconditioner
from condimmune.core.regularizers import (
    RankDeficiency,
    SpectralTerm,
    r_ill_value_and_gradient,
    r_well_value_and_gradient,
)

__all__ = ["PreconditionedRegularizerStep", "RegularizerGradient", "StepWeighting"]


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
class RegularizerGradient:
    """The preconditioned regularizer direction (k × d), the two values and coefficients.

    A regularizer whose weight is 0 is skipped; its value and log κ are then ``nan`` and its
    coefficient 0. ``*_log_kappa`` are the current (pre-update) log κ over the numerical range.
    """

    gradient: Tensor
    r_well: float
    r_ill: float
    benign_coefficient: float
    harmful_coefficient: float
    benign_log_kappa: float
    harmful_log_kappa: float


class PreconditionedRegularizerStep:
    """Precomputes ``M_P``, ``M_H`` once; :meth:`gradient` then gives Alg. 1's direction.

    Args:
        benign_x, harmful_x: the data whose covariances are regularized (n × d each).
        benign_ridge, harmful_ridge: ρ in ``(XᵀX + ρI)⁻¹`` (paper: 1 and 1 for house
            price; 1 and 1e-7 for MNIST).
        benign_weight, harmful_weight: λ_P and λ_H; 0 switches a regularizer off.
        rtol, rank_deficiency: passed to :func:`~condimmune.core.regularizers.r_ill_features`.
        weighting: ``"fixed"`` (weights are λ_P, λ_H), ``"monotone"`` or ``"unit"``
            (weights are fractions of spectral step sizes); see :class:`StepWeighting`.
    """

    def __init__(
        self,
        benign_x: Tensor,
        harmful_x: Tensor,
        *,
        benign_ridge: float,
        harmful_ridge: float,
        benign_weight: float,
        harmful_weight: float,
        rtol: float | None = None,
        rank_deficiency: RankDeficiency | str = RankDeficiency.WARN,
        weighting: StepWeighting | str = StepWeighting.FIXED,
    ) -> None:
        benign_x = check_matrix(benign_x, "benign_x").detach()
        harmful_x = check_matrix(harmful_x, "harmful_x").detach()
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
        if (
            self.weighting is not StepWeighting.FIXED
            and max(self.benign_weight, self.harmful_weight) >= 1
        ):
            raise ValueError(
                f"with weighting={self.weighting.value!r} the weights are fractions of a step "
                "size and must lie in [0, 1) (a full unit step zeroes an eigenvalue)"
            )
        self.n_benign = benign_x.shape[0]
        self.x = torch.cat([benign_x, harmful_x])
        self.m = torch.cat(
            [
                InputPreconditioner(benign_x, benign_ridge).apply(benign_x),
                InputPreconditioner(harmful_x, harmful_ridge).apply(harmful_x),
            ]
        )
        self._phi: Tensor | None = None  # reused feature buffer (2n × k)

    def gradient(self, weight: Tensor, *, out: Tensor | None = None) -> RegularizerGradient:
        """The preconditioned direction for ``W`` (k × d); written into ``out`` if given.

        Reusing ``out`` across steps avoids allocating a k × d tensor per step.
        """
        if not isinstance(weight, Tensor) or weight.ndim != 2 or weight.shape[1] != self.x.shape[1]:
            raise ValueError(
                f"weight must be a k × {self.x.shape[1]} tensor, got "
                f"{getattr(weight, 'shape', type(weight).__name__)}"
            )
        check_same_device_dtype(weight=weight, data=self.x)
        if self._phi is None or self._phi.shape[1] != weight.shape[0]:
            self._phi = self.x.new_empty(self.x.shape[0], weight.shape[0])
        phi = self._phi
        with torch.no_grad():
            torch.mm(self.x, weight.detach().mT, out=phi)
            if not bool(torch.isfinite(phi).all()):
                raise ValueError("the features X Wᵀ contain NaN or Inf; the weight has diverged")
            k = phi.shape[1]
            a = torch.zeros_like(phi)
            terms = {}
            if self.benign_weight > 0:
                terms["benign"] = self._feature_gradient(
                    phi[: self.n_benign],
                    a[: self.n_benign],
                    self.benign_weight,
                    lambda mat: r_well_value_and_gradient(mat, k),
                )
            if self.harmful_weight > 0:
                terms["harmful"] = self._feature_gradient(
                    phi[self.n_benign :],
                    a[self.n_benign :],
                    self.harmful_weight,
                    lambda mat: r_ill_value_and_gradient(mat, k, self.rtol, self.rank_deficiency),
                )
            direction = torch.mm(a.mT, self.m, out=out) if out is not None else a.mT @ self.m
        nan = (float("nan"), 0.0, float("nan"))
        well, c_p, kappa_p = terms.get("benign", nan)
        ill, c_h, kappa_h = terms.get("harmful", nan)
        return RegularizerGradient(
            gradient=direction,
            r_well=well,
            r_ill=ill,
            benign_coefficient=c_p,
            harmful_coefficient=c_h,
            benign_log_kappa=kappa_p,
            harmful_log_kappa=kappa_h,
        )

    def _feature_gradient(
        self, phi: Tensor, out: Tensor, weight: float, term: Callable[[Tensor], SpectralTerm]
    ) -> tuple[float, float, float]:
        """Write ``c · ∂R/∂Φ`` into ``out``, return ``(R, c, log κ)``: ``2 (∂R/∂G) Φ`` on the Gram
        matrix ``G = ΦΦᵀ`` when n < k, else ``2 Φ (∂R/∂S)`` on ``S = ΦᵀΦ``."""
        n, k = phi.shape
        if n < k:
            t = term(phi @ phi.mT)
            torch.mm(t.gradient, phi, out=out)
        else:
            t = term(phi.mT @ phi)
            torch.mm(phi, t.gradient, out=out)
        if self.weighting is StepWeighting.MONOTONE:
            coefficient = weight * min(t.monotone_step, t.unit_step)
        elif self.weighting is StepWeighting.UNIT:
            coefficient = weight * t.unit_step
        else:
            coefficient = weight
        out.mul_(2.0 * coefficient)
        return t.value, coefficient, t.log_kappa
