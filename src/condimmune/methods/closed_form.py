r"""``closed-form``: the RIR-optimal invertible linear extractor (docs/theory.md).

Linear extractors: ``W`` = :func:`~condimmune.core.bound.closed_form_immunizer` of the
training rows, fixed; the head trains on it. Deep nets: the same map on θ0's frozen
features, with a relative ridge ``ρ·tr(K)/k`` added to each feature covariance (the
features of a deep net are often rank-deficient), folded into the head so that the
benign logits are unchanged (:func:`closed_form_feature_map`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from condimmune.core.bound import closed_form_immunizer
from condimmune.methods.base import (
    DeepSolver,
    FeatureMap,
    FeatureMapInputs,
    LinearPlan,
    LinearProblem,
    MethodOptions,
    MethodSpec,
)

__all__ = ["CLOSED_FORM", "closed_form_feature_map"]


def _closed_form_linear(problem: LinearProblem, options: MethodOptions) -> LinearPlan:
    weight = closed_form_immunizer(problem.benign_x, problem.harmful_x)
    return LinearPlan(weight, train_extractor=False)


def closed_form_feature_map(benign: Tensor, harmful: Tensor, *, ridge: float) -> Tensor:
    """The closed form on frozen features ``Φ_P``, ``Φ_H`` (n × k), with the ridge
    ``ridge · tr(ΦᵀΦ) / k`` added to each covariance as ``k`` extra rows ``sqrt(ρ) I``."""
    k = benign.shape[1]
    rows = []
    for phi in (benign, harmful):
        scaled = ridge * float(phi.square().sum()) / k
        rows.append(torch.cat([phi, math.sqrt(scaled) * torch.eye(k, dtype=phi.dtype)]))
    return closed_form_immunizer(rows[0], rows[1])


def _closed_form_deep(inputs: FeatureMapInputs, options: MethodOptions) -> FeatureMap:
    transform = closed_form_feature_map(
        inputs.benign, inputs.harmful, ridge=options.closed_form_ridge
    )
    return FeatureMap(transform, invertible=True)


CLOSED_FORM = MethodSpec(
    name="closed-form",
    description="the RIR-optimal linear extractor from one generalized eigendecomposition "
    "(docs/theory.md)",
    linear=_closed_form_linear,
    deep_solver=DeepSolver.CLOSED_FORM,
    deep_feature_map=_closed_form_deep,
)
