r"""``leace``: erase the harmful labels from the features with LEACE (the erasure arm).

LEACE (Belrose et al., NeurIPS 2023; EleutherAI's ``concept-erasure``) is the affine map
closest to the identity (in least squares) after which no linear predictor of the concept
``Z`` beats a constant on the fitting distribution, i.e. ``Cov(r(X), Z) = 0``. With ``W`` a
whitening of ``Σ_XX`` and :math:`P_{W\Sigma_{XZ}}` the orthogonal projection on the column
space of :math:`W\Sigma_{XZ}`,

.. math:: r(x) = x - W^{+} P_{W\Sigma_{XZ}} W (x - \mu)
          = T x + (I - T)\mu, \qquad T = I - W^{+} P_{W\Sigma_{XZ}} W.   \quad\text{(Eq. A6)}

Only the linear part ``T`` (rank ``k − rank Σ_XZ``) is kept: a constant shift changes no
class-conditional mean, so ``Cov(T X, Z) = 0`` as well, and the heads carry a bias.
Two choices differ from the package's defaults, both so that the guarantee is exact on the
fitting data: ``constrain_cov_trace=False`` (the default may mix ``T`` with an orthogonal
projection that does not zero the cross-covariance) and a tiny ``svd_tol`` (the default
0.01 leaves weak correlations in place). Shrinkage of ``Σ_XX`` stays on: it changes only
which ``W`` is used, not the guarantee.

Linear extractors: ``W = T`` fitted on the harmful training rows and targets, fixed; the head
trains on it. Deep nets: ``T`` fitted on θ0's harmful features and one-hot labels, inserted
after the pooled features, the benign head refitted to its old logits by least squares
(:class:`~condimmune.methods.base.FeatureMap` with ``invertible=False``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from condimmune.methods.base import (
    DeepSolver,
    DeepVersion,
    FeatureMap,
    FeatureMapInputs,
    LinearPlan,
    LinearProblem,
    LinearVersion,
    MethodOptions,
    MethodSpec,
    NoOptions,
)

__all__ = ["LEACE", "leace_erasure", "leace_feature_map"]

_SVD_TOL = 1e-10


def leace_erasure(x: Tensor, z: Tensor) -> Tensor:
    """``T`` of Eq. A6 (``d × d``, float64) for rows ``x`` (n × d) and concept ``z``
    (n,) or (n × m), e.g. one-hot labels."""
    from concept_erasure import LeaceFitter

    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"LEACE needs at least 2 rows of features (n × d), got {tuple(x.shape)}")
    z = z.reshape(x.shape[0], -1).to(torch.float64)
    fitter = LeaceFitter.fit(
        x.detach().to(torch.float64), z, constrain_cov_trace=False, svd_tol=_SVD_TOL
    )
    eraser = fitter.eraser
    transform: Tensor = torch.eye(x.shape[1], dtype=torch.float64) - (
        eraser.proj_left @ eraser.proj_right
    )
    return transform


def _leace_linear(problem: LinearProblem, options: NoOptions) -> LinearPlan:
    transform = leace_erasure(problem.harmful_x, problem.harmful_y)
    return LinearPlan(
        transform,
        train_extractor=False,
        notes=["leace: the extractor is the LEACE erasure of the harmful targets (Eq. A6)"],
    )


def leace_feature_map(inputs: FeatureMapInputs, options: MethodOptions) -> FeatureMap:
    """The deep hook: ``T`` fitted on the harmful features and one-hot harmful labels."""
    labels = F.one_hot(inputs.harmful_labels.long(), inputs.harmful_classes)
    return FeatureMap(leace_erasure(inputs.harmful, labels), invertible=False)


LEACE = MethodSpec(
    name="leace",
    description="erasure arm: the LEACE projection of the harmful labels folded into the "
    "features (Belrose et al. 2023)",
    linear=LinearVersion(NoOptions, _leace_linear),
    deep=DeepVersion(NoOptions, DeepSolver.CLOSED_FORM, feature_map=leace_feature_map),
)
