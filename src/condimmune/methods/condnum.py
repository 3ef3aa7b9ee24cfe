r"""Ours (Alg. 1): ``condnum``, and its ablation ``r-ill-only``.

Linear extractors: per minibatch, after the optimizer's step on the task loss, the
preconditioned regularizer step

.. math::
    W \leftarrow W - \eta_P \nabla R_{\text{well}} (K_P + \rho_P I)^{-1}
                   - \eta_H \nabla R_{\text{ill}} (K_H + \rho_H I)^{-1}

(Alg. 1, Eq. 3 and Eq. 12) taken as plain gradient steps
(:class:`~condimmune.core.step.PreconditionedRegularizerStep`), with ``η_P``, ``η_H`` the
fractions ``benign_step``, ``harmful_step`` of a step size read off the current spectra
(``step_rule``), so the steps do not depend on the data's scale
(:class:`CondnumLinearOptions`). While κ_P is above its raw value the next step is R_well
only (the guard of Def. 3.1 (b)): R_ill moves both spectra when the tasks overlap.
``r-ill-only`` drops R_well (``η_P = 0``) and the guard.

Deep nets (Eq. 13): ``λ_P R_well(S_P) + λ_H R_ill(S_H)`` on the gathered batch features,
σ_min over the non-zero spectrum (rank deficiency is structural when n < k), with
``λ_P = benign_weight`` and ``λ_H = harmful_weight`` absolute (:class:`CondnumDeepOptions`):
a linear run's step fractions and a deep run's loss weights are different quantities, so
they are different options.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from condimmune.core.arrays import eye_like, namespace
from condimmune.core.regularizers import r_ill_features, r_well_features
from condimmune.core.spectral import log_condition_number_features, numerical_rank
from condimmune.core.step import PreconditionedRegularizerStep
from condimmune.methods.base import (
    DeepSolver,
    DeepVersion,
    Float,
    LinearPlan,
    LinearProblem,
    LinearVersion,
    MethodOptions,
    MethodSpec,
    PenaltyInputs,
)

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "CONDNUM",
    "R_ILL_ONLY",
    "CondnumDeepOptions",
    "CondnumLinearOptions",
    "RIllOnlyDeepOptions",
    "RIllOnlyLinearOptions",
    "condnum_penalty",
]


def _step_rule() -> Any:
    return Field(
        default="unit",
        description="how a fraction becomes a step: of the unit step, or of min(monotone, "
        "unit) (condimmune.core.step.StepWeighting)",
    )


def _step(task: str, regularizer: str) -> Any:
    default = 0.5 if task == "benign" else 0.2
    return Field(
        default=default,
        ge=0,
        lt=1,
        description=f"{regularizer} step: fraction [0, 1) of the spectral step size",
    )


def _ridge(task: str) -> Any:
    default = 1.0 if task == "benign" else 1e-7
    sub = "P" if task == "benign" else "H"
    return Field(
        default=default,
        gt=0,
        description=f"ρ_{sub} of the {task} preconditioner (XᵀX + ρI)⁻¹, > 0",
    )


class CondnumLinearOptions(MethodOptions):
    """Both preconditioned steps of Alg. 1 on a linear extractor."""

    benign_step: Float = _step("benign", "R_well")
    harmful_step: Float = _step("harmful", "R_ill")
    benign_ridge: Float = _ridge("benign")
    harmful_ridge: Float = _ridge("harmful")
    step_rule: Literal["unit", "monotone"] = _step_rule()


class RIllOnlyLinearOptions(MethodOptions):
    """R_ill's preconditioned step on a linear extractor (Alg. 1 without R_well)."""

    harmful_step: Float = _step("harmful", "R_ill")
    harmful_ridge: Float = _ridge("harmful")
    step_rule: Literal["unit", "monotone"] = _step_rule()


class CondnumDeepOptions(MethodOptions):
    """λ_P, λ_H of ``CE + λ_P R_well(S_P) + λ_H R_ill(S_H)`` on a deep backbone (Eq. 13) and
    the benign guard."""

    benign_weight: Float = Field(default=5e-5, ge=0, description="λ_P, ≥ 0")
    harmful_weight: Float = Field(default=2e6, ge=0, description="λ_H, ≥ 0")
    benign_guard: bool = Field(
        default=True,
        description="leave R_ill out of steps whose benign batch κ exceeds θ0's first batch κ",
    )


class RIllOnlyDeepOptions(MethodOptions):
    """λ_H of ``CE + λ_H R_ill(S_H)`` on a deep backbone (Eq. 13)."""

    harmful_weight: Float = Field(default=2e6, ge=0, description="λ_H, ≥ 0")


_UNUSED_RIDGE = 1.0
"""The benign preconditioner's ridge when R_well is off: the step then never uses it."""


def _linear_plan(
    problem: LinearProblem,
    *,
    benign_step: float,
    benign_ridge: float,
    harmful_step: float,
    harmful_ridge: float,
    step_rule: str,
) -> LinearPlan:
    xp, xh = problem.benign_x, problem.harmful_x
    d = xp.shape[1]
    notes = []
    rank = numerical_rank(xh.mT @ xh)
    if rank < d:
        notes.append(
            f"the harmful training covariance has rank {rank} < {d}: R_ill acts on its "
            "non-zero spectrum (Eq. 12)"
        )
    step = PreconditionedRegularizerStep(
        xp,
        xh,
        benign_ridge=benign_ridge,
        harmful_ridge=harmful_ridge,
        benign_weight=benign_step,
        harmful_weight=harmful_step,
        rank_deficiency="allow",
        weighting=step_rule,
        shared_rows=problem.shared_rows,
    )
    weight = eye_like(d, xp)
    buffer = namespace(xp).empty_like(weight)
    benign_ceiling = float(log_condition_number_features(xp))  # Def. 3.1 (b) at W = I

    def regularizer_step(w: Any) -> Any:
        result = step.gradient(w, out=buffer)
        # the guard: log κ_P is nan (never above the ceiling) when R_well is off
        guarded = result.benign_log_kappa > benign_ceiling
        step.harmful_weight = 0.0 if guarded else harmful_step
        return result.gradient

    return LinearPlan(weight, train_extractor=True, regularizer_step=regularizer_step, notes=notes)


def _condnum_linear(problem: LinearProblem, options: CondnumLinearOptions) -> LinearPlan:
    return _linear_plan(
        problem,
        benign_step=options.benign_step,
        benign_ridge=options.benign_ridge,
        harmful_step=options.harmful_step,
        harmful_ridge=options.harmful_ridge,
        step_rule=options.step_rule,
    )


def _r_ill_only_linear(problem: LinearProblem, options: RIllOnlyLinearOptions) -> LinearPlan:
    return _linear_plan(
        problem,
        benign_step=0.0,
        benign_ridge=_UNUSED_RIDGE,
        harmful_step=options.harmful_step,
        harmful_ridge=options.harmful_ridge,
        step_rule=options.step_rule,
    )


def condnum_penalty(inputs: PenaltyInputs, options: CondnumDeepOptions) -> Tensor:
    """``λ_P R_well(S_P) + λ_H R_ill(S_H)`` (Eq. 13), R_ill left out on guarded steps."""
    total = options.benign_weight * r_well_features(inputs.benign)
    if inputs.harmful_on or not options.benign_guard:
        total = total + options.harmful_weight * r_ill_features(
            inputs.harmful, rank_deficiency="allow"
        )
    return total


def _r_ill_only_penalty(inputs: PenaltyInputs, options: RIllOnlyDeepOptions) -> Tensor:
    return options.harmful_weight * r_ill_features(inputs.harmful, rank_deficiency="allow")


CONDNUM = MethodSpec(
    name="condnum",
    description="ours (Alg. 1): task loss + λ_P R_well(benign) + λ_H R_ill(harmful), "
    "preconditioned by (XᵀX + ρI)⁻¹",
    linear=LinearVersion(CondnumLinearOptions, _condnum_linear),
    deep=DeepVersion(CondnumDeepOptions, DeepSolver.PENALTY, penalty=condnum_penalty),
)
R_ILL_ONLY = MethodSpec(
    name="r-ill-only",
    description="baseline: task loss + λ_H R_ill(harmful) only, preconditioned",
    linear=LinearVersion(RIllOnlyLinearOptions, _r_ill_only_linear),
    deep=DeepVersion(RIllOnlyDeepOptions, DeepSolver.PENALTY, penalty=_r_ill_only_penalty),
)
