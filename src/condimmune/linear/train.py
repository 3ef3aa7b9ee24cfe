r"""Immunization of a linear feature extractor (Alg. 1) and the paper's baselines.

The model is ``f(x) = Φ ω + b`` with features ``Φ = X Wᵀ``, ``W`` (d × d) initialised to the
identity (the reference starts from a random init with a bias; starting at the identity
makes "raw" the natural starting point). Every method gets the same budget: ``epochs``
passes of Adam over minibatches of the benign training rows, one update per minibatch.

Regularizers always see the **full-data** features of the training rows (``X_P Wᵀ`` and
``X_H Wᵀ``), so σ_min is that of the data, not of a 64-row minibatch (the reference's
minibatch covariances are rank-deficient and its R_ill then optimizes noise). When the
data covariance itself is rank-deficient, R_ill acts on its non-zero spectrum (Eq. 12),
which is recorded in the run's notes.

Per minibatch: one Adam step on the task loss (``W``, ``ω``, ``b``), then the method's
regularizer term:

* ``condnum``: Alg. 1's preconditioned step
  ``W ← W − η_P ∇R_well (K_P + ρ_P I)⁻¹ − η_H ∇R_ill (K_H + ρ_H I)⁻¹`` taken as plain
  gradient steps (:class:`~condimmune.step.PreconditionedRegularizerStep`), with
  ``η_P``, ``η_H`` = ``train.benign_weight``, ``train.harmful_weight`` × a step size read
  off the current spectra (``train.step_rule``: ``unit`` or ``monotone``, docs/theory.md
  §4), so the steps do not depend on the data's scale; then ``W`` is rescaled to keep the
  benign feature energy (the head absorbs the factor), and R_ill pauses while κ_P is above
  its raw value. The reference instead feeds ``λ``-weighted preconditioned gradients into
  Adam, whose per-coordinate normalisation undoes the preconditioning; with the paper's λ
  on our full-data covariances that made κ_P grow ×10⁸ (see docs).
* ``r-ill-only``: the same with ``η_P = 0``.
* ``opt-kappa``: ``λ ∇(log κ(S_P) − log κ(S_H))`` through the eigenvalues, unpreconditioned.
* ``imma``: ``−λ ∇ L_H(w_T(W))``: the harmful probing loss after ``T`` unrolled GD steps
  (step ``1/L``) of a simulated attacker, maximised (bi-level, Zheng & Yeh 2024).
* ``none``: ``W`` frozen at the identity; only the head trains.
* ``closed-form``: ``W`` from :func:`~condimmune.bound.closed_form_immunizer`, then the head
  trains on it as for ``none``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor
from tqdm.auto import tqdm

from condimmune.attacks.probes import squared_loss_lipschitz
from condimmune.core.bound import closed_form_immunizer
from condimmune.experiments.config import Method, TrainConfig
from condimmune.linear.data import LinearTaskData, TaskKind
from condimmune.core.spectral import log_condition_number_features, numerical_rank
from condimmune.core.step import PreconditionedRegularizerStep

__all__ = ["LinearModel", "TrainingHistory", "predict", "task_loss", "train_linear"]


@dataclass(frozen=True)
class LinearModel:
    """Extractor weight ``W`` (k × d) and the benign head ``ω`` (k,), ``b``."""

    weight: Tensor
    head: Tensor
    bias: Tensor


@dataclass
class TrainingHistory:
    """Per-epoch mean task loss and honest log κ of both full-data covariances."""

    task_loss: list[float] = field(default_factory=list)
    log_kappa_benign: list[float] = field(default_factory=list)
    log_kappa_harmful: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def predict(model: LinearModel, x: Tensor) -> Tensor:
    return (x @ model.weight.mT) @ model.head + model.bias


def task_loss(kind: TaskKind, output: Tensor, y: Tensor) -> Tensor:
    if kind is TaskKind.CLASSIFICATION:
        return torch.nn.functional.binary_cross_entropy_with_logits(output, y)
    return torch.nn.functional.mse_loss(output, y)


def _imma_direction(weight: Tensor, x: Tensor, y: Tensor, steps: int) -> Tensor:
    """∇_W of −L_H(w_T): the harmful squared probing loss after ``steps`` unrolled GD steps."""
    w = weight.detach().requires_grad_(True)
    phi = x @ w.mT
    n = phi.shape[0]
    with torch.no_grad():
        lipschitz = squared_loss_lipschitz(phi)
    head = torch.zeros(phi.shape[1], dtype=phi.dtype)
    for _ in range(steps):
        resid = phi @ head - y
        head = head - (2.0 / n / lipschitz) * (phi.mT @ resid)
    loss = ((phi @ head - y) ** 2).mean()
    (grad,) = torch.autograd.grad(-loss, w)
    return grad


def _opt_kappa_direction(weight: Tensor, xp: Tensor, xh: Tensor) -> Tensor:
    w = weight.detach().requires_grad_(True)
    objective = log_condition_number_features(xp @ w.mT) - log_condition_number_features(xh @ w.mT)
    (grad,) = torch.autograd.grad(objective, w)
    return grad


def train_linear(
    data: LinearTaskData,
    cfg: TrainConfig,
    *,
    seed: int,
    progress: bool = True,
) -> tuple[LinearModel, TrainingHistory]:
    """Train extractor and benign head with ``cfg.method``; deterministic in ``seed``."""
    method = Method(cfg.method)
    gen = torch.Generator().manual_seed(seed)
    xp, yp = data.benign.x_train, data.benign.y_train
    xh, yh = data.harmful.x_train, data.harmful.y_train
    d = data.dim
    history = TrainingHistory()
    if method is Method.CLOSED_FORM:
        weight = closed_form_immunizer(xp, xh)
    else:
        weight = torch.eye(d, dtype=torch.float64)
    weight = weight.clone().requires_grad_(method not in (Method.NONE, Method.CLOSED_FORM))
    head = torch.zeros(weight.shape[0], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros((), dtype=torch.float64, requires_grad=True)
    params = [head, bias] + ([weight] if weight.requires_grad else [])
    optimizer = torch.optim.Adam(params, lr=cfg.lr)

    direction: Callable[[Tensor], Tensor] | None = None  # added to W.grad before Adam
    regularizer_update: Callable[[Tensor], Tensor] | None = None  # W ← W − update after Adam
    if method in (Method.CONDNUM, Method.R_ILL_ONLY):
        rank = numerical_rank(xh.mT @ xh)
        if rank < d:
            history.notes.append(
                f"the harmful training covariance has rank {rank} < {d}: R_ill acts on its "
                "non-zero spectrum (Eq. 12)"
            )
        step = PreconditionedRegularizerStep(
            xp,
            xh,
            benign_ridge=cfg.benign_ridge,
            harmful_ridge=cfg.harmful_ridge,
            benign_weight=cfg.benign_weight if method is Method.CONDNUM else 0.0,
            harmful_weight=cfg.harmful_weight,
            rank_deficiency="allow",
            weighting=cfg.step_rule,
        )
        buffer = torch.empty_like(weight)
        benign_ceiling = float(log_condition_number_features(xp))  # Def. 3.1 (b) at W = I

        def regularizer_update(w: Tensor) -> Tensor:
            result = step.gradient(w, out=buffer)
            # Guard for Def. 3.1 (b): while the benign κ is above its raw value, the next
            # step is R_well only (R_ill moves both spectra when the tasks overlap).
            guarded = method is Method.CONDNUM and result.benign_log_kappa > benign_ceiling
            step.harmful_weight = 0.0 if guarded else cfg.harmful_weight
            return result.gradient

    elif method is Method.OPT_KAPPA:

        def direction(w: Tensor) -> Tensor:
            return cfg.opt_kappa_weight * _opt_kappa_direction(w, xp, xh)

    elif method is Method.IMMA:

        def direction(w: Tensor) -> Tensor:
            return cfg.imma_weight * _imma_direction(w, xh, yh, cfg.imma_inner_steps)

    n = xp.shape[0]
    energy = float(xp.square().sum())  # tr(S_P) at W = I
    epochs = tqdm(range(cfg.epochs), desc=f"{method.value}", disable=not progress, leave=False)
    for _ in epochs:
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for start in range(0, n, cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            optimizer.zero_grad(set_to_none=False)
            out = (xp[idx] @ weight.mT) @ head + bias
            loss = task_loss(data.kind, out, yp[idx])
            loss.backward()
            if direction is not None:
                weight.grad.add_(direction(weight))
            optimizer.step()
            if regularizer_update is not None:
                with torch.no_grad():
                    weight.sub_(regularizer_update(weight))
                    # R_ill(cS) = R_ill(S)/c² rewards blowing the scale up; κ and RIR are
                    # scale-free, so hold the benign feature energy fixed and let the head
                    # absorb the factor (predictions unchanged).
                    factor = math.sqrt(energy / float((xp @ weight.mT).square().sum()))
                    weight.mul_(factor)
                    head.div_(factor)
            total += float(loss.detach()) * idx.numel()
        with torch.no_grad():
            history.task_loss.append(total / n)
            history.log_kappa_benign.append(float(log_condition_number_features(xp @ weight.mT)))
            history.log_kappa_harmful.append(float(log_condition_number_features(xh @ weight.mT)))
        if not math.isfinite(history.task_loss[-1]):
            raise FloatingPointError(
                f"{method.value} diverged (task loss {history.task_loss[-1]}); lower train.lr or "
                "the regularizer weights"
            )
    model = LinearModel(weight=weight.detach(), head=head.detach(), bias=bias.detach())
    return model, history
