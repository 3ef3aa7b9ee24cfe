r"""``closed-form``: the RIR-optimal invertible linear extractor (docs/theory.md).

Linear extractors: ``W`` = :func:`~condimmune.core.bound.closed_form_immunizer` of the
training rows, fixed; the head trains on it. Deep nets: the same map on θ0's frozen
features, with a relative ridge ``ρ·tr(K)/k`` added to each feature covariance (the
features of a deep net are often rank-deficient), folded into the head so that the
benign logits are unchanged (:func:`closed_form_feature_map`).
"""

from __future__ import annotations

import math

from pydantic import Field

from condimmune.core.arrays import Array, eye_like, namespace
from condimmune.core.bound import closed_form_immunizer
from condimmune.methods.base import (
    DeepSolver,
    DeepVersion,
    FeatureMap,
    FeatureMapInputs,
    Float,
    LinearPlan,
    LinearProblem,
    LinearVersion,
    MethodOptions,
    MethodSpec,
    NoOptions,
)

__all__ = ["CLOSED_FORM", "ClosedFormDeepOptions", "closed_form_feature_map"]


class ClosedFormDeepOptions(MethodOptions):
    """The relative ridge of the closed form on a deep net's frozen features."""

    ridge: Float = Field(
        default=1e-6,
        gt=0,
        description="relative ridge ρ·tr(K)/k added to each feature covariance, > 0",
    )


def _closed_form_linear(problem: LinearProblem, options: NoOptions) -> LinearPlan:
    weight = closed_form_immunizer(problem.benign_x, problem.harmful_x)
    return LinearPlan(weight, train_extractor=False)


def closed_form_feature_map(benign: Array, harmful: Array, *, ridge: float) -> Array:
    """The closed form on frozen features ``Φ_P``, ``Φ_H`` (n × k), with the ridge
    ``ridge · tr(ΦᵀΦ) / k`` added to each covariance as ``k`` extra rows ``sqrt(ρ) I``."""
    xp, k = namespace(benign, harmful), benign.shape[1]
    rows = []
    for phi in (benign, harmful):
        scaled = ridge * float(xp.sum(xp.square(phi))) / k
        rows.append(xp.concat([phi, math.sqrt(scaled) * eye_like(k, phi)]))
    transform: Array = closed_form_immunizer(rows[0], rows[1])
    return transform


def _closed_form_deep(inputs: FeatureMapInputs, options: ClosedFormDeepOptions) -> FeatureMap:
    transform = closed_form_feature_map(inputs.benign, inputs.harmful, ridge=options.ridge)
    return FeatureMap(transform, invertible=True)


CLOSED_FORM = MethodSpec(
    name="closed-form",
    description="the RIR-optimal linear extractor from one generalized eigendecomposition "
    "(docs/theory.md)",
    linear=LinearVersion(NoOptions, _closed_form_linear),
    deep=DeepVersion(ClosedFormDeepOptions, DeepSolver.CLOSED_FORM, feature_map=_closed_form_deep),
)
