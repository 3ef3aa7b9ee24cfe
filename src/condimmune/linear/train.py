r"""Training a linear feature extractor and its benign head (Alg. 1 and the baselines).

The model is ``f(x) = Φ ω + b`` with features ``Φ = X Wᵀ``, ``W`` (k × d). The reference
starts from a random init with a bias; here the method's plan
(:class:`~condimmune.methods.base.LinearPlan`) gives the start, the identity for the
iterative methods, so "raw" is the natural starting point. Every method gets the same
budget: ``epochs`` passes of Adam over minibatches of the benign training rows, one update
per minibatch.

Regularizers always see the **full-data** features of the training rows (``X_P Wᵀ`` and
``X_H Wᵀ``), so σ_min is that of the data, not of a 64-row minibatch (the reference's
minibatch covariances are rank-deficient and its R_ill then optimizes noise).

Per minibatch: the plan's ``gradient_direction`` is added to ``∇_W`` of the task loss, one
Adam step is taken (``W``, ``ω``, ``b``), then the plan's ``regularizer_step`` is subtracted
from ``W`` and ``W`` is rescaled to keep the benign feature energy. The reference instead
feeds ``λ``-weighted preconditioned gradients into Adam, whose per-coordinate
normalisation undoes the preconditioning (docs/theory.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor
from tqdm.auto import tqdm

from condimmune.core.blas import product_rows, rows_times_transpose
from condimmune.core.rows import (
    compress_rows,
    exact_rank_rows,
    live_weight,
    nonzero_columns,
    triangular_rows,
)
from condimmune.core.spectral import log_condition_number_features
from condimmune.core.tracked_terms import log_condition_number_tracked
from condimmune.core.tracking import ExtremeEigenTracker, takes_fast_path
from condimmune.linear.tasks import LinearTaskData, TaskKind
from condimmune.methods.base import (
    ConfiguredMethod,
    LinearProblem,
    ModelFamily,
    require_configured,
)
from condimmune.methods.registry import Method, configure_method

__all__ = [
    "LinearModel",
    "LinearTrainOptions",
    "TrainingHistory",
    "predict",
    "task_loss",
    "train_linear",
]


def _condnum() -> ConfiguredMethod:
    return configure_method(Method.CONDNUM, ModelFamily.LINEAR)


@dataclass(frozen=True)
class LinearTrainOptions:
    """The method with its options (:func:`~condimmune.methods.registry.configure_method`)
    and the optimisation budget, the same for every method."""

    method: ConfiguredMethod = field(default_factory=_condnum)
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3

    def __post_init__(self) -> None:
        require_configured(self.method, ModelFamily.LINEAR)


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


class _TrainingRows:
    """A task's training rows, reduced without changing the covariance of ``X Wᵀ``: all-zero
    columns (raw-pixel borders) are dropped, and very tall ``X`` is replaced by its QR factor
    ``R`` (:func:`~condimmune.core.rows.compress_rows`: ``(XWᵀ)ᵀ(XWᵀ) = (RWᵀ)ᵀ(RWᵀ)``), or,
    on a task large enough for the tracked extremes
    (:func:`~condimmune.core.tracking.takes_fast_path`), ``X`` by its exact-rank factor
    (:func:`~condimmune.core.rows.exact_rank_rows`) rotated to a triangle
    (:func:`~condimmune.core.rows.triangular_rows`), whose log κ is then tracked too."""

    def __init__(self, x: Tensor) -> None:
        fast = takes_fast_path(x)
        self.columns = nonzero_columns(x)
        rows = x if self.columns is None else x[:, self.columns]
        self.x, _ = exact_rank_rows(rows) if fast else compress_rows(rows)
        if fast:
            self.x, _ = triangular_rows(self.x)  # unchanged when taller than wide
        self._rows = product_rows(self.x, fast)  # T Wᵀ by dtrmm
        self.tracker = ExtremeEigenTracker() if fast else None

    def _times_transpose(self, w: Tensor) -> Tensor:
        out = w.new_empty(self.x.shape[0], w.shape[0])
        return rows_times_transpose(self._rows, w.detach(), out=out)

    def features(self, weight: Tensor) -> Tensor:
        """Features with the covariance of ``Φ = X Wᵀ``: ``Φ`` itself, or ``R Wᵀ``."""
        w = weight if self.columns is None else weight.index_select(1, self.columns)
        return self._times_transpose(w)

    def log_kappa(self, weight: Tensor) -> float:
        """``log κ(ΦᵀΦ)`` (Eq. 1), from the tracked extremes on a large task."""
        if self.tracker is None:
            return float(log_condition_number_features(self.features(weight)))
        return log_condition_number_tracked(self.features(weight), self.tracker)

    def energy(self, weight: Tensor) -> float:
        """``‖X Wᵀ‖_F² = tr ΦᵀΦ``, leaving out the features that are exactly zero."""
        w, _ = live_weight(weight, self.columns)
        return float(self._times_transpose(w).square().sum())


class _Adam:
    """Adam (Kingma & Ba) with torch's defaults, written out: the same operations in the same
    order as ``torch.optim.Adam``'s single-tensor path on CPU, so the numbers are identical
    (``tests/linear/test_train.py``), without the ~1.5 s that torch's optimizer wrappers
    spend importing its compiler stack on their first call (issue 13: the default run)."""

    def __init__(self, params: list[Tensor], lr: float) -> None:
        self.params, self.lr = params, lr
        self.betas, self.eps = (0.9, 0.999), 1e-8
        self.moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in params]
        self.steps = [0] * len(params)  # per parameter, counted only when it has a gradient

    def zero_grad(self) -> None:
        for p in self.params:
            if p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        beta1, beta2 = self.betas
        for i, (p, (exp_avg, exp_avg_sq)) in enumerate(zip(self.params, self.moments, strict=True)):
            if p.grad is None:
                continue
            self.steps[i] += 1
            step = float(self.steps[i])
            exp_avg.lerp_(p.grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
            step_size = self.lr / (1 - beta1**step)
            denom = (exp_avg_sq.sqrt() / (1 - beta2**step) ** 0.5).add_(self.eps)
            p.addcdiv_(exp_avg, denom, value=-step_size)


def predict(model: LinearModel, x: Tensor) -> Tensor:
    return (x @ model.weight.mT) @ model.head + model.bias


def task_loss(kind: TaskKind, output: Tensor, y: Tensor) -> Tensor:
    if kind is TaskKind.CLASSIFICATION:
        return torch.nn.functional.binary_cross_entropy_with_logits(output, y)
    return torch.nn.functional.mse_loss(output, y)


def train_linear(
    data: LinearTaskData,
    options: LinearTrainOptions,
    *,
    seed: int,
    progress: bool = True,
) -> tuple[LinearModel, TrainingHistory]:
    """Train extractor and benign head with ``options.method``; deterministic in ``seed``."""
    method = options.method
    gen = torch.Generator().manual_seed(seed)
    xp, yp = data.benign.x_train, data.benign.y_train
    xh, yh = data.harmful.x_train, data.harmful.y_train
    plan = method.plan(LinearProblem(xp, yp, xh, yh))
    history = TrainingHistory(notes=list(plan.notes))
    weight = plan.initial_weight.clone().requires_grad_(plan.train_extractor)
    head = torch.zeros(weight.shape[0], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros((), dtype=torch.float64, requires_grad=True)
    params = [head, bias] + ([weight] if weight.requires_grad else [])
    optimizer = _Adam(params, lr=options.lr)
    direction, regularizer_step = plan.gradient_direction, plan.regularizer_step

    n = xp.shape[0]
    energy = float(xp.square().sum())  # tr(S_P) at W = I
    benign_rows, harmful_rows = _TrainingRows(xp), _TrainingRows(xh)
    epochs = tqdm(range(options.epochs), desc=method.name, disable=not progress, leave=False)
    for _ in epochs:
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for start in range(0, n, options.batch_size):
            idx = order[start : start + options.batch_size]
            optimizer.zero_grad()
            out = (xp[idx] @ weight.mT) @ head + bias
            loss = task_loss(data.kind, out, yp[idx])
            torch.autograd.backward(loss)
            if direction is not None and weight.grad is not None:
                weight.grad.add_(direction(weight))
            optimizer.step()
            if regularizer_step is not None:
                with torch.no_grad():
                    weight.sub_(regularizer_step(weight))
                    # R_ill(cS) = R_ill(S)/c² rewards blowing the scale up; κ and RIR are
                    # scale-free, so hold the benign feature energy fixed and let the head
                    # absorb the factor (predictions unchanged).
                    factor = math.sqrt(energy / benign_rows.energy(weight))
                    weight.mul_(factor)
                    head.div_(factor)
            total += float(loss.detach()) * idx.numel()
        history.task_loss.append(total / n)
        for rows, log_kappas in (
            (benign_rows, history.log_kappa_benign),
            (harmful_rows, history.log_kappa_harmful),
        ):
            if log_kappas and not plan.train_extractor:  # W is fixed: so is its κ
                log_kappas.append(log_kappas[-1])
                continue
            with torch.no_grad():
                log_kappas.append(rows.log_kappa(weight))
        if not math.isfinite(history.task_loss[-1]):
            raise FloatingPointError(
                f"{method.name} diverged (task loss {history.task_loss[-1]}); lower the "
                "learning rate or the method's step sizes"
            )
    model = LinearModel(weight=weight.detach(), head=head.detach(), bias=bias.detach())
    return model, history
