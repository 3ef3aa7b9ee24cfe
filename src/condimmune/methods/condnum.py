r"""Ours (Alg. 1): ``condnum``, and its ablation ``r-ill-only``.

Linear extractors: per minibatch, after the optimizer's step on the task loss, the
preconditioned regularizer step

.. math::
    W \leftarrow W - \eta_P \nabla R_{\text{well}} (K_P + \rho_P I)^{-1}
                   - \eta_H \nabla R_{\text{ill}} (K_H + \rho_H I)^{-1}

(Alg. 1, Eq. 3 and Eq. 12) taken as plain gradient steps
(:class:`~condimmune.core.step.PreconditionedRegularizerStep`), with ``η_P``, ``η_H`` the
fractions ``benign_weight``, ``harmful_weight`` of a step size read off the current spectra
(``step_rule``), so the steps do not depend on the data's scale. While κ_P is above its raw
value the next step is R_well only (the guard of Def. 3.1 (b)): R_ill moves both spectra
when the tasks overlap. ``r-ill-only`` drops R_well (``η_P = 0``) and the guard.

Deep nets (Eq. 13): ``λ_P R_well(S_P) + λ_H R_ill(S_H)`` on the gathered batch features,
σ_min over the non-zero spectrum (rank deficiency is structural when n < k).
"""

from __future__ import annotations

import torch
from torch import Tensor

from condimmune.core.regularizers import r_ill_features, r_well_features
from condimmune.core.spectral import log_condition_number_features, numerical_rank
from condimmune.core.step import PreconditionedRegularizerStep
from condimmune.methods.base import (
    DeepSolver,
    LinearPlan,
    LinearProblem,
    MethodOptions,
    MethodSpec,
    PenaltyInputs,
)

__all__ = ["CONDNUM", "R_ILL_ONLY"]


def _linear_plan(problem: LinearProblem, options: MethodOptions, *, benign: bool) -> LinearPlan:
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
        benign_ridge=options.benign_ridge,
        harmful_ridge=options.harmful_ridge,
        benign_weight=options.benign_weight if benign else 0.0,
        harmful_weight=options.harmful_weight,
        rank_deficiency="allow",
        weighting=options.step_rule,
    )
    weight = torch.eye(d, dtype=torch.float64)
    buffer = torch.empty_like(weight)
    benign_ceiling = float(log_condition_number_features(xp))  # Def. 3.1 (b) at W = I

    def regularizer_step(w: Tensor) -> Tensor:
        result = step.gradient(w, out=buffer)
        guarded = benign and result.benign_log_kappa > benign_ceiling
        step.harmful_weight = 0.0 if guarded else options.harmful_weight
        return result.gradient

    return LinearPlan(weight, train_extractor=True, regularizer_step=regularizer_step, notes=notes)


def _condnum_linear(problem: LinearProblem, options: MethodOptions) -> LinearPlan:
    return _linear_plan(problem, options, benign=True)


def _r_ill_only_linear(problem: LinearProblem, options: MethodOptions) -> LinearPlan:
    return _linear_plan(problem, options, benign=False)


def _condnum_penalty(inputs: PenaltyInputs, options: MethodOptions) -> Tensor:
    total = options.benign_weight * r_well_features(inputs.benign)
    if inputs.harmful_on:
        total = total + options.harmful_weight * r_ill_features(
            inputs.harmful, rank_deficiency="allow"
        )
    return total


def _r_ill_only_penalty(inputs: PenaltyInputs, options: MethodOptions) -> Tensor:
    return options.harmful_weight * r_ill_features(inputs.harmful, rank_deficiency="allow")


CONDNUM = MethodSpec(
    name="condnum",
    description="ours (Alg. 1): task loss + λ_P R_well(benign) + λ_H R_ill(harmful), "
    "preconditioned by (XᵀX + ρI)⁻¹",
    linear=_condnum_linear,
    deep_solver=DeepSolver.PENALTY,
    deep_penalty=_condnum_penalty,
)
R_ILL_ONLY = MethodSpec(
    name="r-ill-only",
    description="baseline: task loss + λ_H R_ill(harmful) only, preconditioned",
    linear=_r_ill_only_linear,
    deep_solver=DeepSolver.PENALTY,
    deep_penalty=_r_ill_only_penalty,
)
