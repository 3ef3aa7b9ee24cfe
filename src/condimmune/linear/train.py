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

Rows and weights are torch tensors or numpy arrays (:mod:`condimmune.core.arrays`). The task
loss's gradients are written out (Eq. L1–L2 in :func:`_task_gradients`) in the operations
and order autograd takes, so a tensor run keeps the numbers it had with autograd, and the
minibatch order is torch's ``randperm`` reproduced with numpy's MT19937
(:func:`minibatch_order`), so both backends see the same minibatches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Generic

import array_api_compat
import numpy as np
from numpy.typing import NDArray
from tqdm.auto import tqdm

from condimmune.core.arrays import Array, detached, namespace, sigmoid
from condimmune.core.blas import TriangularRows, product_rows, rows_times_transpose
from condimmune.core.rows import (
    SharedReduction,
    compress_rows,
    exact_rank_reduction,
    live_weight,
    nonzero_columns,
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
    "minibatch_order",
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
class LinearModel(Generic[Array]):
    """Extractor weight ``W`` (k × d) and the benign head ``ω`` (k,), ``b``."""

    weight: Array
    head: Array
    bias: Array


@dataclass
class TrainingHistory:
    """Per-epoch mean task loss and honest log κ of both full-data covariances."""

    task_loss: list[float] = field(default_factory=list)
    log_kappa_benign: list[float] = field(default_factory=list)
    log_kappa_harmful: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class _TrainingRows(Generic[Array]):
    """A task's training rows, reduced without changing the covariance of ``X Wᵀ``: all-zero
    columns (raw-pixel borders) are dropped, and very tall ``X`` is replaced by its QR factor
    ``R`` (:func:`~condimmune.core.rows.compress_rows`: ``(XWᵀ)ᵀ(XWᵀ) = (RWᵀ)ᵀ(RWᵀ)``), or,
    on a task large enough for the tracked extremes
    (:func:`~condimmune.core.tracking.takes_fast_path`), ``X`` by its exact-rank factor
    rotated to a triangle (:class:`~condimmune.core.rows.ExactRankReduction`, ``shared``
    with the method's regularizer step), whose log κ is then tracked too."""

    def __init__(self, x: Array, shared: SharedReduction[Array] | None = None) -> None:
        fast = takes_fast_path(x)
        self.x: Array
        if fast:  # the regularizer step reads the same reduction (one SVD for both)
            reduced = exact_rank_reduction(x, shared)
            self.columns, self.x = reduced.columns, reduced.rows
        else:
            self.columns = nonzero_columns(x)
            self.x, _ = compress_rows(x if self.columns is None else x[:, self.columns])
        self._rows: Array | TriangularRows[Array] = product_rows(self.x, fast)  # T Wᵀ by dtrmm
        self.tracker = ExtremeEigenTracker() if fast else None

    def _times_transpose(self, w: Array) -> Array:
        xp, device = namespace(w), array_api_compat.device(w)
        out: Array = xp.empty((self.x.shape[0], w.shape[0]), dtype=w.dtype, device=device)
        return rows_times_transpose(self._rows, detached(w), out=out)

    def features(self, weight: Array) -> Array:
        """Features with the covariance of ``Φ = X Wᵀ``: ``Φ`` itself, or ``R Wᵀ``."""
        xp = namespace(weight)
        w = weight if self.columns is None else xp.take(weight, self.columns, axis=1)
        return self._times_transpose(w)

    def log_kappa(self, weight: Array) -> float:
        """``log κ(ΦᵀΦ)`` (Eq. 1), from the tracked extremes on a large task."""
        if self.tracker is None:
            return float(log_condition_number_features(self.features(weight)))
        return log_condition_number_tracked(self.features(weight), self.tracker)

    def energy(self, weight: Array) -> float:
        """``‖X Wᵀ‖_F² = tr ΦᵀΦ``, leaving out the features that are exactly zero."""
        w, _ = live_weight(weight, self.columns)
        xp = namespace(w)
        return float(xp.sum(xp.square(self._times_transpose(w))))


class _Adam:
    """Adam (Kingma & Ba) with torch's defaults, written out: for tensors the same operations
    in the same order as ``torch.optim.Adam``'s single-tensor path on CPU, so the numbers are
    identical (``tests/linear/test_train.py``), without the ~1.5 s that torch's optimizer
    wrappers spend importing its compiler stack on their first call (issue 13: the default
    run); for numpy arrays the same update in numpy's operations."""

    def __init__(self, params: list[Any], lr: float) -> None:
        self.params, self.lr = params, lr
        self.betas, self.eps = (0.9, 0.999), 1e-8
        self.moments = [(_zeros_like(p), _zeros_like(p)) for p in params]
        self.steps = [0] * len(params)  # per parameter, counted only when it has a gradient

    def step(self, grads: list[Any]) -> None:
        """One update of every parameter whose gradient (same order) is not ``None``."""
        beta1, beta2 = self.betas
        for i, (p, grad, (exp_avg, exp_avg_sq)) in enumerate(
            zip(self.params, grads, self.moments, strict=True)
        ):
            if grad is None:
                continue
            self.steps[i] += 1
            step = float(self.steps[i])
            step_size = self.lr / (1 - beta1**step)
            correction = (1 - beta2**step) ** 0.5
            if isinstance(p, np.ndarray):
                exp_avg += (1 - beta1) * (grad - exp_avg)  # torch's lerp below 1/2
                exp_avg_sq *= beta2
                exp_avg_sq += (1 - beta2) * grad * grad
                p -= step_size * (exp_avg / (np.sqrt(exp_avg_sq) / correction + self.eps))
                continue
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (exp_avg_sq.sqrt() / correction).add_(self.eps)
            p.addcdiv_(exp_avg, denom, value=-step_size)


def _zeros_like(x: Any) -> Any:
    return namespace(x).zeros_like(x)


def minibatch_order(n: int, state: np.random.MT19937) -> NDArray[np.int64]:
    """The next permutation of ``range(n)`` from ``state``: ``torch.randperm(n, generator=g)``
    for ``g = torch.Generator().manual_seed(s)`` and ``state`` legacy-seeded with ``s``
    (:func:`_torch_generator_state`), equal element for element, call after call (torch's CPU
    ``randperm``: a Fisher–Yates shuffle from the front, one 32-bit draw modulo ``n − i`` per
    position; ``tests/linear/test_train.py``)."""
    raw = state.random_raw(n - 1) if n > 1 else np.zeros(0, dtype=np.uint64)
    order = np.arange(n, dtype=np.int64)
    for i, draw in enumerate(raw.tolist()):
        j = i + draw % (n - i)
        order[i], order[j] = order[j], order[i]
    return order


def _torch_generator_state(seed: int) -> np.random.MT19937:
    """numpy's MT19937 in the state of ``torch.Generator().manual_seed(seed)``."""
    state = np.random.MT19937()
    state._legacy_seeding(seed)
    return state


def predict(model: LinearModel[Array], x: Array) -> Array:
    output: Array = (x @ model.weight.mT) @ model.head + model.bias
    return output


def task_loss(kind: TaskKind, output: Array, y: Array) -> Array:
    """The mean task loss: logistic (binary cross-entropy on logits) or squared error."""
    if not isinstance(output, np.ndarray):
        value: Array = _torch_task_loss(kind, output, y)
        return value
    if kind is TaskKind.CLASSIFICATION:
        # torch's formula: (1 − y)·x + m + log(e^(−m) + e^(−x−m)), m = max(−x, 0)
        m = np.maximum(-output, 0)
        terms = (1 - y) * output + m + np.log(np.exp(-m) + np.exp(-output - m))
        loss: Array = np.asarray(np.mean(terms))
        return loss
    loss = np.asarray(np.mean((output - y) ** 2))
    return loss


def _torch_task_loss(kind: TaskKind, output: Any, y: Any) -> Any:
    import torch.nn.functional as functional

    if kind is TaskKind.CLASSIFICATION:
        return functional.binary_cross_entropy_with_logits(output, y)
    return functional.mse_loss(output, y)


def _task_gradients(
    kind: TaskKind, x: Array, y: Array, model: LinearModel[Array], with_weight: bool
) -> tuple[float, Array, Array, Array | None]:
    r"""``(loss, ∇ω, ∇b, ∇W or None)`` of the mean task loss on one minibatch, in the
    operations autograd takes. With :math:`\Phi = XW^\top`, :math:`o = \Phi\omega + b`:

    .. math:: g = \partial L/\partial o = (\sigma(o) - y)/B \ \text{(logistic)},\quad
              \tfrac{2}{B}(o - y) \ \text{(squared)}                                  (L1)

    .. math:: \nabla_b = \textstyle\sum g,\quad \nabla_\omega = \Phi^\top g,\quad
              \nabla_W = (g\,\omega^\top)^\top X                                   (L2)
    """
    phi = x @ model.weight.mT
    output = phi @ model.head + model.bias
    loss = float(task_loss(kind, output, y))
    batch = output.shape[0]
    if kind is TaskKind.CLASSIFICATION:
        g = (sigmoid(output) - y) / batch
    else:
        g = (2.0 / batch) * (output - y)
    grad_w = (g[:, None] * model.head[None, :]).mT @ x if with_weight else None
    return loss, phi.mT @ g, namespace(g).sum(g), grad_w


def train_linear(
    data: LinearTaskData,
    options: LinearTrainOptions,
    *,
    seed: int,
    progress: bool = True,
    kappa_history: bool = True,
) -> tuple[LinearModel[Any], TrainingHistory]:
    """Train extractor and benign head with ``options.method``; deterministic in ``seed``.
    Without ``kappa_history`` the history's log κ lists stay empty and are not computed (the
    model is the same)."""
    method = options.method
    state = _torch_generator_state(seed)
    xp, yp = data.benign.x_train, data.benign.y_train
    xh, yh = data.harmful.x_train, data.harmful.y_train
    shared = (SharedReduction(xp), SharedReduction(xh))  # reduced on first use, then shared
    plan = method.plan(LinearProblem(xp, yp, xh, yh, shared_rows=shared))
    history = TrainingHistory(notes=list(plan.notes))
    ns, device = namespace(xp), array_api_compat.device(xp)
    weight = ns.asarray(plan.initial_weight, copy=True)
    head = ns.zeros(weight.shape[0], dtype=xp.dtype, device=device)
    bias = ns.zeros((), dtype=xp.dtype, device=device)
    trained = plan.train_extractor
    optimizer = _Adam([head, bias] + ([weight] if trained else []), lr=options.lr)
    direction, regularizer_step = plan.gradient_direction, plan.regularizer_step

    n = xp.shape[0]
    energy = float(ns.sum(ns.square(xp)))  # tr(S_P) at W = I
    # reduced rows serve the κ history and the energy rescaling: built only for what is used
    wanted = kappa_history or regularizer_step is not None
    benign_rows = _TrainingRows(xp, shared[0]) if wanted else None
    harmful_rows = _TrainingRows(xh, shared[1]) if kappa_history else None
    epochs = tqdm(range(options.epochs), desc=method.name, disable=not progress, leave=False)
    for _ in epochs:
        order = _indices(minibatch_order(n, state), xp)
        total = 0.0
        for start in range(0, n, options.batch_size):
            idx = order[start : start + options.batch_size]
            model = LinearModel(weight, head, bias)
            loss, grad_head, grad_bias, grad_w = _task_gradients(
                data.kind, xp[idx], yp[idx], model, trained
            )
            if direction is not None and grad_w is not None:
                grad_w += direction(weight)
            optimizer.step([grad_head, grad_bias] + ([grad_w] if trained else []))
            if regularizer_step is not None and benign_rows is not None:
                weight -= regularizer_step(weight)
                # R_ill(cS) = R_ill(S)/c² rewards blowing the scale up; κ and RIR are
                # scale-free, so hold the benign feature energy fixed and let the head
                # absorb the factor (predictions unchanged).
                factor = math.sqrt(energy / benign_rows.energy(weight))
                weight *= factor
                head /= factor
            total += loss * int(idx.shape[0])
        history.task_loss.append(total / n)
        for rows, log_kappas in (
            (benign_rows, history.log_kappa_benign),
            (harmful_rows, history.log_kappa_harmful),
        ):
            if rows is None or not kappa_history:
                continue
            if log_kappas and not trained:  # W is fixed: so is its κ
                log_kappas.append(log_kappas[-1])
                continue
            log_kappas.append(rows.log_kappa(weight))
        if not math.isfinite(history.task_loss[-1]):
            raise FloatingPointError(
                f"{method.name} diverged (task loss {history.task_loss[-1]}); lower the "
                "learning rate or the method's step sizes"
            )
    return LinearModel(weight=weight, head=head, bias=bias), history


def _indices(order: NDArray[np.int64], like: Any) -> Any:
    """``order`` as an index array of ``like``'s backend."""
    if isinstance(like, np.ndarray):
        return order
    import torch

    return torch.from_numpy(order)
