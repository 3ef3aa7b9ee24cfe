r"""One trial of a deep attacker: train a head (and possibly the network under it) with the
given hyperparameters and record the held-out accuracy at fixed evaluation steps.

Probes work on cached features (full batch): ``linear`` heads start from zero, so step 0
predicts class 0 for every sample. With :math:`\tilde A = [A, 1]` the features with a bias
column and :math:`Y` the one-hot targets:

* ``gd-1/L`` minimises :math:`\|\tilde A W - Y\|^2/n` by GD with step :math:`1/L`,
  :math:`L = 2\sigma_{\max}(\tilde A)^2/n` (the paper's attacker, Eq. 16, with a bias);
* ``lstsq`` solves :math:`(\tilde A^\top\tilde A + \rho\,\mathrm{tr}(\tilde A^\top\tilde A)/k'\, I)W
  = \tilde A^\top Y` once (Eq. A2, ``ridge`` = ρ; in its kernel form when there are fewer
  rows than features, :mod:`condimmune.attacks.ridge_head`);
* ``momentum`` (Nesterov, ``lr = c / λ_max(ÃᵀÃ/n)``), ``adam`` (AdamW) and ``lbfgs``
  (strong-Wolfe line search, one iteration per step) minimise the cross-entropy; the linear
  ``adam`` head's steps are written out (:mod:`condimmune.attacks.adam_probe`: the same
  update without autograd's and the optimizer's per-step overhead).

Networks (the immunized blocks from cached activations, or the whole backbone from images)
train on minibatches in train mode and are evaluated in eval mode, with a new linear head
from zero (as the probes). Every random draw (MLP init, re-initialisation, minibatch
order, dropout) comes from ``seed`` inside a forked RNG: global torch state is untouched.
A trial whose loss becomes non-finite stops; its later evaluation points keep the last
accuracy measured (the attacker would have stopped there too).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from condimmune.attacks.adam_probe import adamw_linear_accuracies
from condimmune.attacks.probes import squared_loss_lipschitz
from condimmune.attacks.registry import Optimizer
from condimmune.attacks.ridge_head import RidgeSystem
from condimmune.core.seeding import cpu_seeded

__all__ = [
    "Budget",
    "TaskTensors",
    "best_so_far_area",
    "curvature",
    "head_curve",
    "network_curve",
    "probe_curve",
    "reset_own_parameters",
    "zero_head",
]

_EVAL_BATCH = 512


@dataclass(frozen=True)
class TaskTensors:
    """One task's training and held-out inputs (features, activations or images) and labels."""

    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    classes: int

    def few_labels(self, per_class: int, seed: int) -> TaskTensors:
        """An attacker with ``per_class`` labelled training rows per class (all of a class's
        rows when it has fewer): each class's first rows in a ``seed``-ed random order, so
        every representation of the same rows (features, activations, images) keeps the
        same ones. The held-out rows are unchanged."""
        order = torch.randperm(len(self.train_y), generator=torch.Generator().manual_seed(seed))
        labels = self.train_y[order]
        keep = torch.cat([order[labels == c][:per_class] for c in range(self.classes)])
        rows = keep.sort().values
        return TaskTensors(
            self.train_x[rows], self.train_y[rows], self.test_x, self.test_y, self.classes
        )


@dataclass(frozen=True)
class Budget:
    """``steps`` optimizer steps, held-out accuracy every ``eval_every`` steps (and at step 0
    and the last step), minibatches of ``batch_size`` for networks."""

    steps: int
    eval_every: int = 1
    batch_size: int = 128

    def __post_init__(self) -> None:
        for name in ("steps", "eval_every", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")

    @property
    def eval_steps(self) -> list[int]:
        points = list(range(0, self.steps + 1, self.eval_every))
        return points if points[-1] == self.steps else [*points, self.steps]


def best_so_far_area(curve: list[float]) -> float:
    """Eq. A3: the mean over evaluation points of the best accuracy reached so far."""
    best, total = -math.inf, 0.0
    for value in curve:
        best = max(best, value)
        total += best
    return total / len(curve)


def _accuracy(predict: Callable[[Tensor], Tensor], x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        hits = sum(
            int((predict(x[i : i + _EVAL_BATCH]).argmax(dim=1) == y[i : i + _EVAL_BATCH]).sum())
            for i in range(0, x.shape[0], _EVAL_BATCH)
        )
    return hits / x.shape[0]


def zero_head(inputs: int, classes: int) -> nn.Linear:
    """A new linear head from zero (every attacker's: step 0 predicts class 0 for all)."""
    head = nn.Linear(inputs, classes)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    return head


def _pad(curve: list[float], length: int) -> list[float]:
    return curve + [curve[-1]] * (length - len(curve))


def _closed_forms(
    data: TaskTensors,
    optimizer: Optimizer,
    params: dict[str, float],
    budget: Budget,
    ridge: RidgeSystem | None,
) -> list[float]:
    at = F.pad(data.test_x.double(), (0, 1), value=1.0)
    w = torch.zeros(at.shape[1], data.classes, dtype=torch.float64)
    curve = [_accuracy(lambda x: x @ w, at, data.test_y)]
    if optimizer is Optimizer.LSTSQ:
        system = ridge or RidgeSystem.of(data.train_x, data.train_y, data.classes)
        w = system.head(params["ridge"])
        return _pad([*curve, _accuracy(lambda x: x @ w, at, data.test_y)], len(budget.eval_steps))
    a = F.pad(data.train_x.double(), (0, 1), value=1.0)
    y = F.one_hot(data.train_y, data.classes).double()
    evals = set(budget.eval_steps)
    step, n = 1.0 / squared_loss_lipschitz(a), a.shape[0]
    for t in range(1, budget.steps + 1):
        w = w - step * (2.0 / n) * (a.mT @ (a @ w - y))
        if t in evals:
            curve.append(float((((at @ w).argmax(dim=1)) == data.test_y).double().mean()))
    return curve


def curvature(data: TaskTensors) -> float:
    """λ_max(ÃᵀÃ/n) = L/2 of the training features with a bias column (L: the squared
    loss's Lipschitz constant): the scale of the ``momentum`` probe's learning rate
    (``lr = c / λ_max``)."""
    return squared_loss_lipschitz(F.pad(data.train_x.double(), (0, 1), value=1.0)) / 2.0


def _make_optimizer(
    optimizer: Optimizer, params: dict[str, float], weights: list[Tensor], lipschitz: float
) -> torch.optim.Optimizer:
    if optimizer is Optimizer.ADAM:
        return torch.optim.AdamW(weights, lr=params["lr"], weight_decay=params["weight_decay"])
    if optimizer is Optimizer.LBFGS:
        return torch.optim.LBFGS(
            weights, lr=params["lr"], max_iter=1, history_size=10, line_search_fn="strong_wolfe"
        )
    lr = params["lr_c"] / lipschitz if optimizer is Optimizer.MOMENTUM else params["lr"]
    momentum = params["momentum"]
    return torch.optim.SGD(
        weights,
        lr=lr,
        momentum=momentum,
        nesterov=momentum > 0,
        weight_decay=params.get("weight_decay", 0.0),
    )


def probe_curve(
    data: TaskTensors,
    optimizer: Optimizer,
    params: dict[str, float],
    budget: Budget,
    *,
    hidden: bool = False,
    seed: int = 0,
    lr_scale: float | None = None,
    ridge: RidgeSystem | None = None,
) -> list[float]:
    """Held-out accuracy at ``budget.eval_steps`` of a head trained on cached features
    (a linear head from zero; with ``hidden``, a ReLU MLP of width ``params["hidden"]``).
    ``lr_scale``: :func:`curvature` of ``data`` when the caller has it (the ``momentum``
    probe needs it; computing it is an SVD of the training features), and ``ridge`` the
    ``lstsq`` probe's :class:`RidgeSystem` of ``data`` (a search forms it once)."""
    if optimizer in (Optimizer.GD_1L, Optimizer.LSTSQ):
        return _closed_forms(data, optimizer, params, budget, ridge)
    x, xt = data.train_x.float(), data.test_x.float()
    if optimizer is Optimizer.ADAM and not hidden:  # the same trial without the overhead
        accuracies = adamw_linear_accuracies(
            x,
            data.train_y,
            xt,
            data.test_y,
            data.classes,
            lr=params["lr"],
            weight_decay=params["weight_decay"],
            steps=budget.steps,
            eval_steps=set(budget.eval_steps),
        )
        return _pad(accuracies, len(budget.eval_steps))
    k = x.shape[1]
    with cpu_seeded(seed):
        if hidden:
            width = int(params["hidden"])
            head: nn.Module = nn.Sequential(
                nn.Linear(k, width), nn.ReLU(), nn.Linear(width, data.classes)
            )
        else:
            head = zero_head(k, data.classes)
    if optimizer is Optimizer.MOMENTUM and lr_scale is None:
        lr_scale = curvature(data)
    return head_curve(head, data, optimizer, params, budget, lr_scale=lr_scale or 1.0)


def head_curve(
    head: nn.Module,
    data: TaskTensors,
    optimizer: Optimizer,
    params: dict[str, float],
    budget: Budget,
    *,
    lr_scale: float = 1.0,
) -> list[float]:
    """Held-out accuracy at ``budget.eval_steps`` of ``head`` (any module from features to
    logits; the features are cast to its parameters' dtype) trained full batch on the
    cross-entropy by ``optimizer`` with autograd: :func:`probe_curve`'s trial for the MLP and
    the non-Adam heads, and the definition the written-out linear AdamW head is checked
    against."""
    dtype = next(head.parameters()).dtype
    x, xt = data.train_x.to(dtype), data.test_x.to(dtype)
    opt = _make_optimizer(optimizer, params, list(head.parameters()), lr_scale)

    def closure() -> float:
        opt.zero_grad()
        loss = F.cross_entropy(head(x), data.train_y)
        torch.autograd.backward(loss)
        return float(loss.detach())

    evals = set(budget.eval_steps)
    curve = [_accuracy(head, xt, data.test_y)]
    for t in range(1, budget.steps + 1):
        loss = opt.step(closure)
        if loss is None or not math.isfinite(loss):
            break
        if t in evals:
            curve.append(_accuracy(head, xt, data.test_y))
    return _pad(curve, len(budget.eval_steps))


def reset_own_parameters(module: nn.Module) -> None:
    """``module``'s own parameters (not its submodules') drawn afresh: its
    ``reset_parameters`` where it has one, else N(0, 0.02²) truncated at ±2σ (timm's rule
    for the tokens and position embeddings that no layer resets)."""
    reset = getattr(module, "reset_parameters", None)
    if callable(reset):
        reset()
    else:
        with torch.no_grad():
            for weight in module.parameters(recurse=False):
                nn.init.trunc_normal_(weight, std=0.02, a=-0.04, b=0.04)


def _reinitialise(module: nn.Module) -> None:
    """Every parameter of ``module`` drawn afresh (:func:`reset_own_parameters` of each
    submodule), so nothing of the released weights is left."""
    for sub in module.modules():
        reset_own_parameters(sub)


def _recalibrate(net: nn.Module, x: Tensor, batch: int) -> None:
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative: every batch weighs the same
    net.train()
    with torch.no_grad():
        for i in range(0, x.shape[0], batch):
            net(x[i : i + batch])
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum


def network_curve(
    make_network: Callable[[], nn.Module],
    feature_dim: int,
    data: TaskTensors,
    optimizer: Optimizer,
    params: dict[str, float],
    budget: Budget,
    *,
    reinit: bool = False,
    recalibrate: bool = False,
    seed: int = 0,
) -> list[float]:
    """Held-out accuracy at ``budget.eval_steps`` of ``make_network()`` (a fresh copy mapping
    inputs to ``feature_dim`` features) plus a new linear head, trained on minibatches; with
    ``reinit`` every submodule's ``reset_parameters`` is called first (seeded); with
    ``recalibrate`` every batch-norm layer's running statistics are re-estimated on the
    training inputs first (a cumulative average over one pass in train mode, no step)."""
    gen = torch.Generator().manual_seed(seed)
    with cpu_seeded(seed):
        net = make_network()
        if reinit:
            _reinitialise(net)
    if recalibrate:
        _recalibrate(net, data.train_x, budget.batch_size)
    model = nn.Sequential(net, zero_head(feature_dim, data.classes))
    weights: list[Tensor] = [p for p in model.parameters() if p.requires_grad]
    opt = _make_optimizer(optimizer, params, weights, 1.0)
    # the new head is zero, so every logit is 0 and argmax picks class 0 for every input
    curve = [int((data.test_y == 0).sum()) / data.test_y.shape[0]]
    n, evals = data.train_x.shape[0], set(budget.eval_steps)
    order = torch.randperm(n, generator=gen)
    position = 0
    for t in range(1, budget.steps + 1):
        if position + budget.batch_size > n:
            order, position = torch.randperm(n, generator=gen), 0
        rows = order[position : position + budget.batch_size]
        position += budget.batch_size
        model.train()
        with cpu_seeded(seed + t):  # dropout, if the network has any
            loss = F.cross_entropy(model(data.train_x[rows]), data.train_y[rows])
        if not math.isfinite(float(loss.detach())):
            break
        opt.zero_grad()
        torch.autograd.backward(loss)
        opt.step()
        if t in evals:
            model.eval()
            curve.append(_accuracy(model, data.test_x, data.test_y))
    model.eval()
    return _pad(curve, len(budget.eval_steps))
