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
The fit is that of ``concept-erasure``'s ``LeaceFitter``, written out here in the array API
(:func:`leace_erasure`; numpy rows need no torch) and tested equal to it. Two choices differ
from that package's defaults, both so that the guarantee is exact on the fitting data:
``constrain_cov_trace=False`` (the default may mix ``T`` with an orthogonal projection that
does not zero the cross-covariance) and a tiny ``svd_tol`` (the default 0.01 leaves weak
correlations in place). Shrinkage of ``Σ_XX`` stays on: it changes only
which ``W`` is used, not the guarantee.

Linear extractors: ``W = T`` fitted on the harmful training rows and targets, fixed; the head
trains on it. Deep nets: ``T`` fitted on θ0's harmful features and one-hot labels, inserted
after the pooled features, the benign head refitted to its old logits by least squares
(:class:`~condimmune.methods.base.FeatureMap` with ``invertible=False``).
"""

from __future__ import annotations

from condimmune.core.arrays import Array, detached, eye_like, machine_epsilon, namespace
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


def leace_erasure(x: Array, z: Array) -> Array:
    r"""``T`` of Eq. A6 (``d × d``, float64, in ``x``'s backend) for rows ``x`` (n × d) and
    concept ``z`` (n,) or (n × m), e.g. one-hot labels: what concept-erasure's
    ``LeaceFitter.fit(x, z, constrain_cov_trace=False, svd_tol=1e-10).eraser`` gives, written
    once in the array API so that numpy rows need no torch.

    With ``X̃ = X − 1μ_Xᵀ`` and ``Z̃ = Z − 1μ_Zᵀ``: :math:`\Sigma_{XX}` the shrunk
    :math:`\tilde X^\top\tilde X/n` (:func:`_shrunk_covariance`),
    :math:`\Sigma_{XZ} = \tilde X^\top\tilde Z/(n-1)`; with
    :math:`\Sigma_{XX} = V\operatorname{diag}(\ell)V^\top`, the whitening
    :math:`W = V\operatorname{diag}(\ell^{-1/2})V^\top` and
    :math:`W^{+} = V\operatorname{diag}(\ell^{1/2})V^\top` over
    :math:`\ell_i > \ell_{\max} d\,\varepsilon` (``pinv``'s threshold; 0 elsewhere);
    ``U`` the left singular vectors of :math:`W\Sigma_{XZ}` with singular values above
    ``1e-10``, so :math:`P_{W\Sigma_{XZ}} = UU^\top` and :math:`T = I - (W^{+}U)(U^\top W)`.
    """
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"LEACE needs at least 2 rows of features (n × d), got {tuple(x.shape)}")
    xp = namespace(x)
    n, d = x.shape
    rows = xp.astype(detached(x), xp.float64)
    concept = xp.astype(xp.reshape(detached(z), (n, -1)), xp.float64)
    rows = rows - xp.mean(rows, axis=0)
    concept = concept - xp.mean(concept, axis=0)
    values, vectors = xp.linalg.eigh(_shrunk_covariance(rows.mT @ rows / n, n))
    keep = values > float(values[-1]) * d * machine_epsilon(values.dtype)
    # the discarded eigenvalues (≤ 0 among them) are replaced before the roots, then zeroed
    roots = xp.sqrt(xp.where(keep, values, xp.ones_like(values)))
    zero = xp.zeros_like(values)
    whiten = (vectors * xp.where(keep, 1.0 / roots, zero)) @ vectors.mT
    unwhiten = (vectors * xp.where(keep, roots, zero)) @ vectors.mT
    u, singular, _ = xp.linalg.svd(whiten @ (rows.mT @ concept / (n - 1)), full_matrices=False)
    u = u * xp.astype(singular > _SVD_TOL, u.dtype)
    transform: Array = eye_like(d, rows) - (unwhiten @ u) @ (u.mT @ whiten)
    return transform


def _shrunk_covariance(s: Array, n: int) -> Array:
    r"""concept-erasure's optimal linear shrinkage (arXiv:1308.2608) of the sample covariance
    ``S`` (d × d) of ``n`` rows toward :math:`\mu I`, :math:`\mu = \operatorname{tr}S/d`:

    .. math:: \alpha S + \beta\mu I,\qquad
              \alpha = 1 - \frac{(\operatorname{tr}S)^2/n}
                               {\|S\|_F^2 - (\operatorname{tr}S)^2/d},\qquad
              \beta = 1 - \alpha,

    each fraction with ``ε`` added above and below as there (so a zero ``S`` stays zero)."""
    xp, d = namespace(s), s.shape[0]
    trace = float(xp.linalg.trace(s))
    mean = trace / d
    target = d * mean**2  # ‖μI‖_F²
    inner = trace * mean  # ⟨S, μI⟩_F
    eps = machine_epsilon(s.dtype)
    alpha = 1 - (trace**2 * target / n + eps) / (float(xp.sum(s**2)) * target - inner**2 + eps)
    beta = (1 - alpha) * (inner + eps) / (target + eps)
    shrunk: Array = alpha * s + (beta * mean) * eye_like(d, s)
    return shrunk


def _leace_linear(problem: LinearProblem, options: NoOptions) -> LinearPlan:
    transform = leace_erasure(problem.harmful_x, problem.harmful_y)
    return LinearPlan(
        transform,
        train_extractor=False,
        notes=["leace: the extractor is the LEACE erasure of the harmful targets (Eq. A6)"],
    )


def leace_feature_map(inputs: FeatureMapInputs, options: MethodOptions) -> FeatureMap:
    """The deep hook: ``T`` fitted on the harmful features and one-hot harmful labels."""
    import torch.nn.functional as F

    labels = F.one_hot(inputs.harmful_labels.long(), inputs.harmful_classes)
    return FeatureMap(leace_erasure(inputs.harmful, labels), invertible=False)


LEACE = MethodSpec(
    name="leace",
    description="erasure arm: the LEACE projection of the harmful labels folded into the "
    "features (Belrose et al. 2023)",
    linear=LinearVersion(NoOptions, _leace_linear),
    deep=DeepVersion(NoOptions, DeepSolver.CLOSED_FORM, feature_map=leace_feature_map),
)
