r"""The paper's attacker: linear probing of a head by gradient descent with step ``1/L``.

For :math:`L(w) = \|\Phi w - y\|^2/n` the Hessian is :math:`H = \tfrac2n\Phi^\top\Phi` and
GD with step :math:`\eta = 1/\lambda_{\max}(H)` from :math:`w_0 = 0` satisfies, with the
thin SVD :math:`\Phi = U\Sigma V^\top` and :math:`a = U^\top y`,

.. math:: L(w_t) - L^* = \tfrac1n \sum_i \left(1 - \sigma_i^2/\sigma_1^2\right)^{2t} a_i^2 .

The trajectory is therefore evaluated **exactly** from one SVD rather than by iterating
(identical to iterating up to rounding; see ``tests/attacks/test_probes.py``), and the number of
steps to reach a relative suboptimality ``target`` is found by bisection on this monotone
function — exact even when it is astronomically large, so no step budget caps it.
Directions whose σ² :func:`~condimmune.core.spectral.nonzero_mask` drops count as zero, as for κ.
Features and targets are torch tensors or numpy arrays (:mod:`condimmune.core.arrays`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Generic

import array_api_compat
import numpy as np

from condimmune.core._choices import parse_choice
from condimmune.core._validation import (
    check_float_tensor,
    check_matrix,
    check_positive_float,
    check_rtol,
    check_same_device_dtype,
)
from condimmune.core.arrays import Array, detached, namespace, no_grad
from condimmune.core.errors import DegenerateSpectrumError
from condimmune.core.spectral import nonzero_mask

__all__ = [
    "AttackerTransform",
    "FittedTransform",
    "ProbeAttackResult",
    "ProbeComparison",
    "attacker_features",
    "compare_probe_attacks",
    "fit_transform",
    "probe_attack",
    "squared_loss_lipschitz",
]


class AttackerTransform(StrEnum):
    """A fixed map the attacker fits on the training features before probing (Eq. A1): the one
    vocabulary of both suites (``std-*`` and ``whiten-*`` attackers, the runs' rescaled GD).

    ``none``: the paper's threat model. ``standardize``: each feature minus its offset,
    divided by its root-mean-square about it. ``whiten``: PCA-whiten, ``(Φ − μ) V Σ⁻¹ √n``
    over the numerical range, which makes κ = 1 whatever the extractor — the honest
    counterpart of any large RIR from a linear extractor (docs/theory.md §6). The offset μ
    is the column mean for a probe with a bias (it fits the mean anyway) and 0 for a probe
    without one (the linear suite's: the mean is then part of the signal it must fit).
    """

    NONE = "none"
    STANDARDIZE = "standardize"
    WHITEN = "whiten"


@dataclass(frozen=True)
class FittedTransform(Generic[Array]):
    """An :class:`AttackerTransform` fitted on training features: the transformed training
    features, and the offset and scale that :meth:`apply` maps other rows with (``scale``: a
    vector that divides, for ``standardize``; a matrix that multiplies, for ``whiten``)."""

    train: Array
    offset: Array | None = None
    scale: Array | None = None

    def apply(self, x: Array) -> Array:
        """The same map on other rows (held-out features)."""
        if self.offset is None or self.scale is None:
            return x
        centred = x - self.offset
        mapped: Array = centred / self.scale if self.scale.ndim == 1 else centred @ self.scale
        return mapped


def fit_transform(
    Phi: Array, transform: AttackerTransform | str, *, centre: bool = False
) -> FittedTransform[Array]:
    """Fit ``transform`` on training features ``Φ`` (n × k); ``centre``: the probe has a bias
    (the offset is the column mean, see :class:`AttackerTransform`)."""
    Phi = check_matrix(Phi, "Phi")
    transform = parse_choice(AttackerTransform, transform, "transform")
    if transform is AttackerTransform.NONE:
        return FittedTransform(Phi)
    xp = namespace(Phi)
    offset = xp.mean(Phi, axis=0) if centre else xp.zeros_like(Phi[0])
    centred = Phi - offset
    if transform is AttackerTransform.STANDARDIZE:
        rms = xp.sqrt(xp.mean(xp.square(centred), axis=0))
        scale = xp.where(rms > 0, rms, xp.ones_like(rms))
        return FittedTransform(centred / scale, offset, scale)
    u: Any
    s: Any
    u, s, vh = xp.linalg.svd(centred, full_matrices=False)
    keep = nonzero_mask(s * s, size=Phi.shape[1])
    root_n = math.sqrt(Phi.shape[0])
    # U√n is exactly (Φ − μ) V Σ⁻¹ √n on the training rows, without the rounding of the product
    return FittedTransform(u[:, keep] * root_n, offset, vh[keep].mT / s[keep] * root_n)


def attacker_features(Phi: Array, transform: AttackerTransform | str) -> Array:
    """The features a probe without a bias learns from after applying ``transform`` to its
    training features ``Φ`` (n × k)."""
    return fit_transform(Phi, transform).train


@dataclass(frozen=True)
class ProbeAttackResult(Generic[Array]):
    """Outcome of GD linear probing with step 1/L.

    ``relative_suboptimality[t] = (L(w_t) − L*) / (L(w_0) − L*)`` for ``t = 0..budget``.
    ``steps_to_target`` is the exact least ``t`` with relative suboptimality ≤ ``target``.
    """

    steps_to_target: int
    target: float
    relative_suboptimality: Array
    initial_loss: float
    optimal_loss: float
    step_size: float
    condition_number: float


@dataclass(frozen=True)
class ProbeComparison(Generic[Array]):
    """The same attack on the original features (raw inputs: the identity extractor) and on
    the immunized ones."""

    original: ProbeAttackResult[Array]
    immunized: ProbeAttackResult[Array]

    @property
    def slowdown(self) -> float:
        """steps(immunized) / steps(original); ≥ 1: the extractor slows the attacker down."""
        return self.immunized.steps_to_target / max(self.original.steps_to_target, 1)


def squared_loss_lipschitz(phi: Array) -> float:
    """L = λ_max of the Hessian ``(2/n) ΦᵀΦ`` of ``‖Φw − y‖²/n``: GD's standard step is 1/L.
    The one Lipschitz constant of every GD 1/L attacker (the linear suite, the deep suite's
    ``*-gd`` probes and the scale of their momentum learning rates)."""
    norm = float(namespace(phi).linalg.matrix_norm(phi, ord=2))
    return 2.0 / int(phi.shape[0]) * norm**2


def _steps_to_target(log_rates: Array, weights: Array, target: float) -> int:
    """Least integer t ≥ 0 with Σ w_i exp(2 t log r_i) ≤ target (Σ w_i = 1)."""
    xp = namespace(log_rates)

    def f(t: int) -> float:
        # at the huge t of a bisection over a rate ≈ 1, 2t·log r overflows to −∞ for the
        # fast components: their term is then 0, as meant (numpy would warn; torch does not)
        with np.errstate(over="ignore"):
            return float(xp.sum(weights * xp.exp(2.0 * t * log_rates)))

    if f(0) <= target:
        return 0
    slowest = float(xp.max(log_rates))
    if slowest == 0.0:  # a unit rate carries weight: the target is never reached
        raise DegenerateSpectrumError(
            "a component of y converges at rate 1 under GD with step 1/L; the target "
            "suboptimality is unreachable"
        )
    hi = max(1, math.ceil(math.log(target) / (2.0 * slowest)))  # f(hi) ≤ r_max^{2 hi} ≤ target
    lo = 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if f(mid) <= target:
            hi = mid
        else:
            lo = mid
    return hi


def probe_attack(
    Phi: Array,
    y: Array,
    *,
    target: float = 1e-3,
    budget: int = 1000,
    rtol: float | None = None,
) -> ProbeAttackResult[Array]:
    """Simulate GD (step ``1/L``, ``w_0 = 0``) on the squared loss of a linear head on ``Φ``.

    Args:
        Phi: features (n × k).
        y: targets (n,) or (n, m) (one head per column, losses summed).
        target: relative suboptimality to reach, in (0, 1).
        budget: number of steps of the returned curve (the step count is exact regardless).
        rtol: numerical-range threshold on σ² relative to σ_max² (default ``k · eps``).
    """
    Phi = check_matrix(Phi, "Phi")
    y = check_float_tensor(y, "y")
    check_same_device_dtype(Phi=Phi, y=y)
    rtol = check_rtol(rtol)
    if y.ndim not in (1, 2) or y.shape[0] != Phi.shape[0]:
        raise ValueError(
            f"y must have shape ({Phi.shape[0]},) or ({Phi.shape[0]}, m) to match Phi's rows, "
            f"got {tuple(y.shape)}"
        )
    target = check_positive_float(target, "target")
    if target >= 1:
        raise ValueError(f"target is a relative suboptimality and must be < 1, got {target}")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"budget must be a positive int, got {budget!r}")
    n, k = Phi.shape
    xp = namespace(Phi)
    Y = detached(y if y.ndim == 2 else y[:, None])
    # numpy says log1p(-1) = -inf and 0 · -inf = nan aloud; both are expected here (below)
    with no_grad(Phi), np.errstate(divide="ignore", invalid="ignore"):
        u, s, _ = xp.linalg.svd(detached(Phi), full_matrices=False)
        eig = s * s
        keep = nonzero_mask(eig, rtol=rtol, size=k)
        if int(xp.sum(keep)) == 0:
            raise DegenerateSpectrumError("Phi is numerically zero; there is nothing to probe")
        eig = eig[keep]
        a2 = xp.sum((u[:, keep].mT @ Y) ** 2, axis=1)
        total = float(xp.sum(a2))
        initial = float(xp.sum(Y * Y)) / n
        optimal = initial - total / n
        if total <= 0.0:
            raise DegenerateSpectrumError(
                "y is orthogonal to the range of Phi: the head cannot reduce the loss"
            )
        log_rates = xp.log1p(-eig / eig[0])  # -inf for the top direction (rate 0)
        weights = a2 / total
        live = weights > 0
        log_rates, weights = log_rates[live], weights[live]
        device = array_api_compat.device(Phi)
        steps = xp.arange(budget + 1, dtype=Phi.dtype, device=device)
        curve = xp.sum(weights[None, :] * xp.exp(2.0 * steps[:, None] * log_rates[None, :]), axis=1)
        curve[0] = 1.0  # 0 · log(0) is nan at t = 0 for the top direction
        steps_needed = _steps_to_target(
            xp.where(xp.isinf(log_rates), xp.full_like(log_rates, -1e300), log_rates),
            weights,
            target,
        )
    return ProbeAttackResult(
        steps_to_target=steps_needed,
        target=target,
        relative_suboptimality=curve,
        initial_loss=initial,
        optimal_loss=optimal,
        step_size=n / (2.0 * float(eig[0])),
        condition_number=float(eig[0] / eig[-1]),
    )


def compare_probe_attacks(
    X: Array,
    y: Array,
    weight: Array,
    *,
    target: float = 1e-3,
    budget: int = 1000,
    rtol: float | None = None,
    transform: AttackerTransform | str = AttackerTransform.NONE,
) -> ProbeComparison[Array]:
    """:func:`probe_attack` on raw inputs ``X`` and on features ``X Wᵀ``, both passed
    through the attacker's ``transform`` first (:func:`attacker_features`)."""
    X = check_matrix(X, "X")
    weight = check_matrix(weight, "weight")
    check_same_device_dtype(X=X, weight=weight)
    if weight.shape[1] != X.shape[1]:
        raise ValueError(
            f"weight must be k × d with d = {X.shape[1]} (X's columns), got {tuple(weight.shape)}"
        )
    with no_grad(X):
        features = X @ weight.mT
    return ProbeComparison(
        original=probe_attack(
            attacker_features(X, transform), y, target=target, budget=budget, rtol=rtol
        ),
        immunized=probe_attack(
            attacker_features(features, transform), y, target=target, budget=budget, rtol=rtol
        ),
    )
