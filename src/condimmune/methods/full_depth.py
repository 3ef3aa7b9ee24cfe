r"""``full-depth``: immunize the whole feature extractor against a simulated, tuned attacker.

Every parameter from the input on trains (batch-norm affine parameters included), on the
benign task plus four terms measured at several *taps* (pooled activations at increasing
depth, :attr:`~condimmune.deep.bodies.SplitBody.TAPS`), all bounded so that no term can be
won by re-scaling the features (issue #28):

.. math::
    \mathcal L = \mathrm{CE}(P)
      + \lambda_a \sum_t w_t \frac{\|\phi_t - \phi^0_t\|^2}{\|\phi^0_t\|^2}
      - \lambda_r \sum_t \min\bigl(E_t, 1\bigr)
      - \lambda_u \min\bigl(E_{\cup}, 1\bigr)
      + \lambda_s\, \mathrm{KL}\bigl(p_{\theta'} \,\|\, u\bigr)
      + \lambda_\kappa \sum_t R_{\text{ill}}(\bar S_{H,t})            \qquad (F1)

* **anchor** (F2): the benign activations stay close to θ0's at every tap, relative to
  their energy, weighted ``w_t = t / T`` (weaker at the early taps, which a benign task
  needs least changed);
* **closed-form tap adversary** (F3): a ridge probe with an intercept fitted on one half of
  the harmful batch, its held-out squared error on the other half relative to the
  class-prior predictor's, ``E_t``, maximised up to 1 (chance); the ridge is relative to
  the trace, so re-scaling ``φ_t`` does not change ``E_t``;
* **union adversary** (F3u, optional, ``λ_u``): the same probe on every tap at once,
  concatenated and standardised per feature with the fit half's mean and standard
  deviation — what the suite's ``tap-adam`` attacker reads — with its own ridge
  ``union_ridge``. Standardising makes ``E_∪`` invariant to re-scaling each feature on its
  own, so the defence cannot hide the harmful signal in low-variance directions that a
  trace-relative ridge suppresses but a standardised probe sees. With ``union_dims > 0``
  each tap enters the union as a coarse spatial grid (``c × s × s``, ``c s² ≤``
  ``union_dims``, the rule by which the suite's ``skip-adam`` reads the prefix) instead of
  its spatial mean, so the adversary also sees where in the image the harmful signal is;
  then ``mean_union_weight`` (``λ_m``, F3m) adds a second union probe on the spatial means
  (``− λ_m min(E_∪mean, 1)``, ridge ``mean_union_ridge``, 0: ``union_ridge``), so
  that both forms are trained against at once;
* **simulated fine-tuning** (F4): every ``simulate_every``-th step, ``K`` first-order steps
  of a sampled attacker (SGD with momentum or AdamW, learning rate log-uniform in
  ``[simulate_lr_min, simulate_lr_max]``, a fresh zero head, batch norm in train mode) on
  harmful rows, then ``KL(p_{θ'} ‖ u) = log C − H(p_{θ'})`` on held-out harmful rows
  (bounded by ``log C``) minimised; its gradient at θ' is applied to θ (first order, as
  TAR and first-order MAML);
* **conditioning** (optional): the normalised R_ill of Eq. 12 at each tap (``λ_κ``).

A **guard** (F5) checks the benign head's accuracy every ``guard_every`` steps and rolls
the network and the optimizer back to the last checked state when it dropped more than
``guard_points`` below θ0's, halving the learning rate. The loop is
:func:`condimmune.deep.whole_network.immunize_whole_network`; this module holds the options,
the pure pieces (tested against direct computations) and :class:`FullDepthObjective`, what
the loop asks at each step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from pydantic import Field, model_validator

from condimmune.core.regularizers import r_ill_features
from condimmune.methods.base import DeepSolver, DeepVersion, Float, MethodOptions, MethodSpec
from condimmune.methods.tap_adversary import (
    pool_activations,
    ridge_heldout_error,
    standardised_union,
)

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

__all__ = [
    "FULL_DEPTH",
    "FullDepthObjective",
    "FullDepthOptions",
    "InnerOptimizer",
    "InnerState",
    "anchor_loss",
    "guard_should_roll_back",
    "inner_step",
    "kl_to_uniform",
    "tap_weights",
]


class FullDepthOptions(MethodOptions):
    """The weights of Eq. F1, the simulated attacker and the guard."""

    anchor_weight: Float = Field(default=1.0, ge=0, description="λ_a of the anchor (F2), ≥ 0")
    tap_weight: Float = Field(
        default=1.0, ge=0, description="λ_r of the closed-form tap adversaries (F3), ≥ 0"
    )
    tap_ridge: Float = Field(
        default=1e-3, gt=0, le=1, description="ρ of the tap probes, relative to tr(ÃᵀÃ)/k"
    )
    union_weight: Float = Field(
        default=0.0,
        ge=0,
        description="λ_u of the union adversary on all taps, standardised (F3u), ≥ 0",
    )
    union_ridge: Float = Field(
        default=0.1, gt=0, le=100, description="ρ of the union probe, relative to tr(ÃᵀÃ)/k"
    )
    union_dims: int = Field(
        default=0,
        ge=0,
        le=1_000_000,
        description="the union probe's values per tap and image: a c × s × s grid with "
        "c s² ≤ this (the skip probe's rule); 0 = the spatial mean, c values",
    )
    mean_union_weight: Float = Field(
        default=0.0,
        ge=0,
        description="with union_dims > 0: λ_m of a second union probe on the taps' spatial "
        "means beside the grid one (F3m), ≥ 0",
    )
    mean_union_ridge: Float = Field(
        default=0.0, ge=0, le=100, description="ρ of the F3m probe; 0 = union_ridge"
    )
    suppress_weight: Float = Field(
        default=1.0, ge=0, description="λ_s of the suppression after simulated fine-tuning (F4)"
    )
    simulate_every: int = Field(
        default=2, ge=0, le=10_000, description="simulate an attack every m-th step, 0 = never"
    )
    simulate_steps: int = Field(
        default=4, ge=1, le=1000, description="K first-order steps of the simulated attacker"
    )
    simulate_lr_min: Float = Field(default=1e-5, gt=0, description="the attacker's lowest lr")
    simulate_lr_max: Float = Field(default=1e-1, gt=0, description="the attacker's highest lr")
    condnum_weight: Float = Field(
        default=0.0, ge=0, description="λ_κ of the normalised R_ill at each tap, ≥ 0"
    )
    guard_points: Float = Field(
        default=2.0, gt=0, le=100, description="roll back when benign accuracy drops this much"
    )
    guard_every: int = Field(default=10, ge=1, le=100_000, description="guard period in steps")

    @model_validator(mode="after")
    def _lr_range(self) -> FullDepthOptions:
        if self.simulate_lr_min > self.simulate_lr_max:
            raise ValueError(
                f"simulate_lr_min ({self.simulate_lr_min}) must not exceed simulate_lr_max "
                f"({self.simulate_lr_max})"
            )
        if self.mean_union_weight and not (self.union_dims and self.union_weight):
            raise ValueError(
                "mean_union_weight adds the spatial-mean union beside a grid union: set "
                "union_dims > 0 and union_weight > 0 too (without a grid, union_weight alone "
                "is the mean union)"
            )
        return self


def tap_weights(taps: int) -> list[float]:
    """``w_t = t / T`` for taps ``t = 1 … T`` (Eq. F2): weaker anchors at early depths."""
    return [(t + 1) / taps for t in range(taps)]


def anchor_loss(current: list[Tensor], original: list[Tensor]) -> Tensor:
    r"""Eq. F2: :math:`\sum_t w_t \|\phi_t - \phi^0_t\|^2 / \|\phi^0_t\|^2` over the taps."""
    if len(current) != len(original) or not current:
        raise ValueError(f"anchor_loss needs as many taps on both sides, got {len(current)}")
    import torch

    terms = [
        w * (a - b).pow(2).sum() / b.pow(2).sum().clamp_min(1e-12)
        for w, a, b in zip(tap_weights(len(current)), current, original, strict=True)
    ]
    return torch.stack(terms).sum()


def kl_to_uniform(logits: Tensor) -> Tensor:
    """``KL(p ‖ u) = log C − H(p)``, mean over rows (Eq. F4's suppression): 0 at uniform
    predictions, at most ``log C``, so it can never dominate the loss without bound."""
    logp = logits.float().log_softmax(dim=1)
    entropy = -(logp.exp() * logp).sum(dim=1)
    return (math.log(logits.shape[1]) - entropy).mean()


class InnerOptimizer(StrEnum):
    """The simulated attacker's optimizer (Eq. F4)."""

    SGD = "sgd"
    """SGD with Nesterov momentum 0.9 (``torch.optim.SGD(nesterov=True)``)."""
    ADAMW = "adamw"
    """AdamW, betas (0.9, 0.999), eps 1e-8, weight decay 0.01 (``torch.optim.AdamW``)."""


_MOMENTUM, _BETAS, _EPS, _ADAMW_DECAY = 0.9, (0.9, 0.999), 1e-8, 0.01


@dataclass
class InnerState:
    """One tensor's optimizer state across the simulated attacker's steps."""

    step: int = 0
    first: Tensor | None = None
    second: Tensor | None = None


def inner_step(
    kind: InnerOptimizer, param: Tensor, grad: Tensor, state: InnerState, lr: float
) -> Tensor:
    """The simulated attacker's update of one tensor, out of place (Eq. F4): exactly what
    ``torch.optim.SGD(lr, momentum=0.9, nesterov=True)`` or ``torch.optim.AdamW(lr)`` would
    do to ``param`` with gradient ``grad``. The result carries no graph to ``param``: the
    defence's gradient is first order."""
    p, g = param.detach(), grad.detach()
    state.step += 1
    if kind is InnerOptimizer.SGD:
        buf = g.clone() if state.first is None else state.first.mul(_MOMENTUM).add(g)
        state.first = buf
        return p - lr * (g + _MOMENTUM * buf)
    b1, b2 = _BETAS
    m = (1 - b1) * g if state.first is None else state.first.mul(b1).add(g, alpha=1 - b1)
    v = (
        (1 - b2) * g * g
        if state.second is None
        else state.second.mul(b2).addcmul(g, g, value=1 - b2)
    )
    state.first, state.second = m, v
    decayed = p * (1 - lr * _ADAMW_DECAY)
    bias1, bias2 = 1 - b1**state.step, 1 - b2**state.step
    return decayed - (lr / bias1) * m / ((v / bias2).sqrt() + _EPS)


def guard_should_roll_back(original_accuracy: float, accuracy: float, points: float) -> bool:
    """Eq. F5: roll back when the benign accuracy is more than ``points`` (percentage
    points) below θ0's."""
    return (original_accuracy - accuracy) * 100.0 > points


@dataclass(frozen=True)
class FullDepthObjective:
    """Eq. F1–F5 with one set of options, for the harmful task's ``classes``."""

    options: FullDepthOptions
    classes: int

    def tap_terms(
        self, taps: list[Tensor], original: list[Tensor], harmful_labels: Tensor, benign_rows: int
    ) -> tuple[Tensor, float]:
        """Eq. F2, F3, the optional union adversary (F3u) and normalised R_ill at the taps of
        one mixed batch (the first ``benign_rows`` rows benign; the harmful rows split in
        halves for the probes); and the tap adversaries' mean held-out error (F3's taps and,
        when ``λ_u > 0``, the union probe)."""
        o, nb, y = self.options, benign_rows, harmful_labels
        half = (taps[0].shape[0] - nb) // 2
        pooled = [pool_activations(t) for t in taps]
        total = o.anchor_weight * anchor_loss(
            [t[:nb] for t in pooled], [pool_activations(t) for t in original]
        )
        errors = []
        for tap in pooled:
            h = tap[nb:].double()
            error = ridge_heldout_error(
                h[:half], y[:half], h[half:], y[half:], self.classes, o.tap_ridge
            )
            errors.append(float(error.detach()))
            total = total - o.tap_weight * error.clamp(max=1.0)
            if o.condnum_weight:
                phi = h * math.sqrt(h.shape[1]) / h.norm()  # mean eigenvalue 1
                total = total + o.condnum_weight * r_ill_features(phi, rank_deficiency="allow")
        means = [t[nb:] for t in pooled]
        mean_ridge = o.mean_union_ridge or o.union_ridge
        unions = [(o.mean_union_weight, mean_ridge, means)]  # F3m, beside a grid (validated)
        if o.union_weight:
            # only the harmful rows enter the union probe, so only they are pooled to a grid
            grids = [pool_activations(t[nb:], o.union_dims) for t in taps] if o.union_dims else []
            unions.append((o.union_weight, o.union_ridge, grids or means))
        for weight, ridge, harmful in unions:
            if not weight:
                continue
            fit, held = standardised_union([h[:half] for h in harmful], [h[half:] for h in harmful])
            error = ridge_heldout_error(fit, y[:half], held, y[half:], self.classes, ridge)
            errors.append(float(error.detach()))
            total = total - weight * error.clamp(max=1.0)
        return total, sum(errors) / len(errors)

    def simulates_at(self, step: int) -> bool:
        return bool(self.options.simulate_every) and step % self.options.simulate_every == 0

    def checks_at(self, step: int) -> bool:
        return step % self.options.guard_every == 0

    def rolls_back(self, original_accuracy: float, accuracy: float) -> bool:
        return guard_should_roll_back(original_accuracy, accuracy, self.options.guard_points)

    def simulated_attack(
        self,
        model: nn.Module,
        feature_dim: int,
        fit: tuple[Tensor, Tensor],
        held_out: Tensor,
        generator: torch.Generator,
    ) -> tuple[dict[str, Tensor], float]:
        """Eq. F4: ``K`` steps of a sampled attacker (optimizer, log-uniform lr) on the body
        (parameters named ``body.*``; ``model(x)`` returns ``(features, logits)``) and a fresh
        zero head from ``fit``, in train mode, then ``λ_s ∇_θ' KL(p_θ'(held_out) ‖ u)`` per
        body parameter and ``λ_s KL``. ``model`` and its buffers are left as they were."""
        import torch

        o = self.options
        kind = list(InnerOptimizer)[int(torch.randint(2, (1,), generator=generator))]
        low, high = math.log(o.simulate_lr_min), math.log(o.simulate_lr_max)
        lr = math.exp(low + (high - low) * float(torch.rand((), generator=generator)))
        body = {n: p.detach() for n, p in model.named_parameters() if n.startswith("body.")}
        buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
        ref = next(iter(body.values()))
        head = {
            "w": ref.new_zeros(self.classes, feature_dim),
            "b": ref.new_zeros(self.classes),
        }
        states = {name: InnerState() for name in [*body, *head]}
        was_training = model.training
        model.train()

        def run(x: Tensor) -> tuple[dict[str, Tensor], dict[str, Tensor], Tensor]:
            leaves = {n: t.detach().requires_grad_(True) for n, t in body.items()}
            top = {n: t.detach().requires_grad_(True) for n, t in head.items()}
            features = torch.func.functional_call(model, (leaves, buffers), (x,), strict=False)[0]
            return leaves, top, features @ top["w"].mT + top["b"]

        try:
            for _ in range(o.simulate_steps):
                leaves, top, logits = run(fit[0])
                loss = torch.nn.functional.cross_entropy(logits, fit[1])
                named = [*leaves.items(), *top.items()]
                grads = torch.autograd.grad(loss, [t for _, t in named], allow_unused=True)
                for (name, value), grad in zip(named, grads, strict=True):
                    if grad is not None:
                        new = inner_step(kind, value, grad, states[name], lr)
                        (body if name in body else head)[name] = new
            leaves, _, logits = run(held_out)
            suppression = kl_to_uniform(logits)
            grads = torch.autograd.grad(suppression, list(leaves.values()), allow_unused=True)
        finally:
            model.train(was_training)
        weight = o.suppress_weight
        gradient = {n: weight * g for n, g in zip(leaves, grads, strict=True) if g is not None}
        return gradient, weight * float(suppression.detach())


FULL_DEPTH = MethodSpec(
    name="full-depth",
    description="whole-network immunization: benign loss, anchors at several depths, "
    "closed-form tap adversaries, simulated fine-tuning with suppression, a rollback guard",
    deep=DeepVersion(FullDepthOptions, DeepSolver.WHOLE_NETWORK, objective=FullDepthObjective),
)
