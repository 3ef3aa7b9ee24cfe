r"""The linear suite's attackers: how fast do realistic attackers fit the harmful task on a
linear extractor's released features? (:class:`~condimmune.attacks.registry.Attacker`; the
deep suite is :mod:`condimmune.attacks.deep_suite`.)

The paper's guarantee covers one attacker, gradient descent with step ``1/L`` on a linear
head. This module implements that attacker and the ones people actually use, on the squared
probing loss :math:`L(w) = \|\Phi w - y\|^2/n` (or, for full fine-tuning,
:math:`\|X W^\top w - y\|^2/n` over both ``W`` and ``w``), full batch, from ``w = 0``:

========================  ==================================================================
``linear-gd``             GD, step ``1/L`` (the paper's threat model)
``linear-gd-tuned``       GD with the best step in {0.5, 1, 1.5, 1.9}/L
``linear-momentum``       SGD with Nesterov momentum 0.9, best lr in {0.05, 0.2, 0.5, 1}/L
``linear-adam``           Adam, best lr in {1e-3, 1e-2, 1e-1, 1}
``linear-lbfgs``          L-BFGS (SciPy's L-BFGS-B), one iteration per step
``linear-lstsq``          the least-squares head in closed form (one step)
``full-sgd``              all parameters (extractor and head), Nesterov SGD, best lr as above
``full-adam``             all parameters, Adam, best lr as above
``reinit-gd``             discard the extractor (re-initialise the only layer to a random
                          orthogonal map) and run GD 1/L on the head
``std-gd``                GD 1/L after dividing each feature column by its RMS
``whiten-gd``             GD 1/L after PCA-whitening the features
========================  ==================================================================

For each attacker the curve is the relative suboptimality
``(L_t − L*) / (L_0 − L*)`` with ``L*`` the best linear fit of ``y`` on the raw inputs,
which every attacker here can reach (an invertible extractor does not change it).
A sweep picks the setting that reaches ``target`` first (or, if none does, the lowest
final value). Step counts are capped by ``budget``: a run that does not reach the target
reports ``steps_to_target = None``. A run stops at the target (its curve is ``NaN`` after
it, so figures end there), unless ``full_curve`` asks for every step of the budget.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TypeAlias

import torch
from torch import Tensor

from condimmune.attacks.probes import (
    attacker_features,
    squared_loss_lipschitz,
)
from condimmune.attacks.registry import TRANSFORMED_ATTACKERS, Attacker
from condimmune.core._choices import parse_choice
from condimmune.core._validation import check_matrix, check_positive_float, check_same_device_dtype
from condimmune.core.progress import ProgressCallback, step_counter

__all__ = ["AttackOutcome", "run_attacker"]


@dataclass(frozen=True)
class AttackOutcome:
    """One attacker on one feature set: curve, steps and seconds to the target (of the
    chosen setting), best value, and the wall time of the whole setting sweep."""

    attacker: Attacker
    setting: str
    curve: Tensor
    steps_to_target: int | None
    seconds_to_target: float | None
    best: float
    wall_seconds: float


MakeOptimizer: TypeAlias = Callable[[list[Tensor]], torch.optim.Optimizer]
"""Builds an optimizer over the given parameters (one setting of a sweep)."""

Trace: TypeAlias = list[tuple[float, float]]
"""``(loss, seconds since the start)`` before the first step and after each step."""

_GD_STEPS = (0.5, 1.0, 1.5, 1.9)
_MOMENTUM_LRS = (0.05, 0.2, 0.5, 1.0)
_ADAM_LRS = (1e-3, 1e-2, 1e-1, 1.0)
_SWEPT = {
    Attacker.LINEAR_GD_TUNED: len(_GD_STEPS),
    Attacker.LINEAR_MOMENTUM: len(_MOMENTUM_LRS),
    Attacker.LINEAR_ADAM: len(_ADAM_LRS),
    Attacker.FULL_SGD: len(_MOMENTUM_LRS),
    Attacker.FULL_ADAM: len(_ADAM_LRS),
}
"""The attackers that sweep a setting, and how many settings each tries."""


def _loss(pred: Tensor, y: Tensor) -> Tensor:
    return (pred - y).square().mean()


@dataclass(frozen=True)
class _Stop:
    """Stop a run once its relative suboptimality is at most ``target`` (``None``: never)."""

    optimal: float
    target: float | None

    def reached(self, losses: Trace) -> bool:
        if self.target is None:
            return False
        scale = max(losses[0][0] - self.optimal, 1e-300)
        return max(losses[-1][0] - self.optimal, 0.0) / scale <= self.target


def _iterate(
    params: list[Tensor],
    predict: Callable[[], Tensor],
    y: Tensor,
    make_opt: MakeOptimizer,
    budget: int,
    stop: _Stop,
    on_step: Callable[[int], None],
) -> Trace:
    """(loss, seconds since start) before each of ``budget`` optimizer steps and after, until
    the loss diverges or ``stop`` says the target is reached; ``on_step(t)`` after step t."""
    start = time.perf_counter()
    opt = make_opt(params)
    losses: Trace = []
    for step in range(budget + 1):
        with torch.no_grad():
            losses.append((float(_loss(predict(), y)), time.perf_counter() - start))
        if not math.isfinite(losses[-1][0]) or losses[-1][0] > 1e12 * (losses[0][0] + 1e-300):
            break  # diverged: this setting is not the attacker's best
        if stop.reached(losses):
            break
        opt.zero_grad()
        torch.autograd.backward(_loss(predict(), y))
        opt.step()
        on_step(step + 1)
    return losses


def _head_run(
    phi: Tensor,
    y: Tensor,
    make_opt: MakeOptimizer,
    budget: int,
    stop: _Stop,
    on_step: Callable[[int], None],
) -> Trace:
    w = torch.zeros(phi.shape[1], dtype=phi.dtype, requires_grad=True)
    return _iterate([w], lambda: phi @ w, y, make_opt, budget, stop, on_step)


def _lbfgs_run(
    phi: Tensor, y: Tensor, budget: int, stop: _Stop, on_step: Callable[[int], None]
) -> Trace:
    """SciPy's L-BFGS-B (robust Moré–Thuente-type line search); one iteration per step."""
    import numpy as np
    import numpy.typing as npt
    from scipy.optimize import minimize

    a, b = phi.detach().numpy(), y.detach().numpy()
    n = a.shape[0]

    def fun(w: npt.NDArray[np.float64]) -> tuple[float, npt.NDArray[np.float64]]:
        r = a @ w - b
        return float(r @ r) / n, (2.0 / n) * (a.T @ r)

    start = time.perf_counter()
    losses = [(fun(np.zeros(a.shape[1]))[0], 0.0)]

    def record(w: npt.NDArray[np.float64]) -> None:
        losses.append((fun(w)[0], time.perf_counter() - start))
        on_step(len(losses) - 1)
        if stop.reached(losses):
            raise StopIteration  # SciPy ends the minimisation there

    minimize(
        fun,
        np.zeros(a.shape[1]),
        jac=True,
        method="L-BFGS-B",
        callback=record,
        options={"maxiter": budget, "gtol": 0.0, "ftol": 0.0},
    )
    if stop.reached(losses):
        return losses
    return losses + [losses[-1]] * (budget + 1 - len(losses))  # converged: it stays there


def _finetune_run(
    x: Tensor,
    weight: Tensor,
    y: Tensor,
    make_opt: MakeOptimizer,
    budget: int,
    stop: _Stop,
    on_step: Callable[[int], None],
) -> Trace:
    W = weight.detach().clone().requires_grad_(True)
    w = torch.zeros(weight.shape[0], dtype=x.dtype, requires_grad=True)
    return _iterate([W, w], lambda: (x @ W.mT) @ w, y, make_opt, budget, stop, on_step)


def _relative(losses: Trace, optimal: float, budget: int, target: float) -> Tensor:
    """The relative suboptimality curve, ``budget + 1`` long: after a run that stopped at
    the target ``NaN`` (not computed), after one that diverged ``inf``."""
    curve = torch.tensor([value for value, _ in losses], dtype=torch.float64)
    rel = ((curve - optimal) / max(losses[0][0] - optimal, 1e-300)).clamp_min(0.0)
    if rel.numel() < budget + 1:
        tail = math.nan if float(rel[-1]) <= target else math.inf
        rel = torch.cat([rel, torch.full((budget + 1 - rel.numel(),), tail)])
    return rel


def _first_hit(rel: Tensor, target: float) -> int | None:
    hits = torch.nonzero(rel <= target)
    return int(hits[0]) if hits.numel() else None


def run_attacker(
    attacker: Attacker | str,
    x: Tensor,
    weight: Tensor,
    y: Tensor,
    *,
    target: float = 1e-3,
    budget: int = 500,
    seed: int = 0,
    full_curve: bool = False,
    on_progress: ProgressCallback | None = None,
) -> AttackOutcome:
    """Run one attacker against the extractor ``weight`` (k × d) on inputs ``x`` and targets ``y``.

    Pass ``weight = I`` for the raw-input baseline. Each setting stops at ``target`` unless
    ``full_curve`` (module docstring). ``on_progress`` hears the steps of its settings
    (task: the attacker's name, item: the setting).
    """
    attacker = parse_choice(Attacker, attacker, "attacker")
    x = check_matrix(x, "x")
    weight = check_matrix(weight, "weight")
    check_same_device_dtype(x=x, weight=weight, y=y)
    check_positive_float(target, "target")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"budget must be a positive int, got {budget!r}")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"y must have shape ({x.shape[0]},), got {tuple(y.shape)}")
    with torch.no_grad():
        phi = x @ weight.mT
        fit: Tensor = torch.linalg.lstsq(x, y[:, None], driver="gelsd").solution
        optimal = float(_loss((x @ fit)[:, 0], y))
    stop = _Stop(optimal, None if full_curve else target)
    tick = partial(step_counter, on_progress, attacker.value, _SWEPT.get(attacker, 1), budget)
    start = time.perf_counter()
    candidates: list[tuple[str, Trace]] = []
    if attacker in (Attacker.LINEAR_GD, *TRANSFORMED_ATTACKERS, Attacker.REINIT_GD):
        feats = phi
        if attacker in TRANSFORMED_ATTACKERS:
            feats = attacker_features(phi, TRANSFORMED_ATTACKERS[attacker])
        elif attacker is Attacker.REINIT_GD:
            gen = torch.Generator().manual_seed(seed)
            q: Tensor
            q, _ = torch.linalg.qr(
                torch.randn(x.shape[1], x.shape[1], generator=gen, dtype=x.dtype)
            )
            feats = x @ q
        lr = 1.0 / squared_loss_lipschitz(feats)
        sgd = partial(torch.optim.SGD, lr=lr)
        candidates.append(("lr=1/L", _head_run(feats, y, sgd, budget, stop, tick(0, "lr=1/L"))))
    elif attacker in (Attacker.LINEAR_LBFGS, Attacker.LINEAR_LSTSQ):
        if attacker is Attacker.LINEAR_LBFGS:
            losses = _lbfgs_run(phi, y, budget, stop, tick(0, "scipy L-BFGS-B"))
            candidates.append(("scipy L-BFGS-B", losses))
        else:
            with torch.no_grad():
                solve_start = time.perf_counter()
                head: Tensor = torch.linalg.lstsq(phi, y[:, None], driver="gelsd").solution[:, 0]
                final = (float(_loss(phi @ head, y)), time.perf_counter() - solve_start)
                initial = (float(_loss(torch.zeros_like(y), y)), 0.0)
            held = [final] * (budget if full_curve or not stop.reached([initial, final]) else 1)
            candidates.append(("gelsd", [initial, *held]))
    else:  # a learning-rate sweep, on the head alone or on extractor and head
        inv_l = 1.0 / squared_loss_lipschitz(phi)
        momentum: list[tuple[str, MakeOptimizer]] = [
            (f"lr={c}/L", partial(torch.optim.SGD, lr=c * inv_l, momentum=0.9, nesterov=True))
            for c in _MOMENTUM_LRS
        ]
        adam: list[tuple[str, MakeOptimizer]] = [
            (f"lr={lr:g}", partial(torch.optim.Adam, lr=lr)) for lr in _ADAM_LRS
        ]
        sweeps: dict[Attacker, list[tuple[str, MakeOptimizer]]] = {
            Attacker.LINEAR_GD_TUNED: [
                (f"lr={c}/L", partial(torch.optim.SGD, lr=c * inv_l)) for c in _GD_STEPS
            ],
            Attacker.LINEAR_MOMENTUM: momentum,
            Attacker.LINEAR_ADAM: adam,
            Attacker.FULL_SGD: momentum,
            Attacker.FULL_ADAM: adam,
        }
        finetune = attacker in (Attacker.FULL_SGD, Attacker.FULL_ADAM)
        for index, (name, make) in enumerate(sweeps[attacker]):
            steps = tick(index, name)
            losses = (
                _finetune_run(x, weight, y, make, budget, stop, steps)
                if finetune
                else _head_run(phi, y, make, budget, stop, steps)
            )
            candidates.append((name, losses))
    tick(len(candidates) - 1, candidates[-1][0])(budget)  # done, even where it stopped early
    wall = time.perf_counter() - start
    scored: list[tuple[int, float, str, Tensor, int | None, float | None]] = []
    for name, losses in candidates:
        rel = _relative(losses, optimal, budget, target)
        hit = _first_hit(rel, target)
        seconds = losses[hit][1] if hit is not None else None
        rank = hit if hit is not None else budget + 1
        last = float(rel[-1])  # the tie-breaker: the final value, where the run stopped
        scored.append(
            (
                rank,
                float(rel[len(losses) - 1]) if math.isnan(last) else last,
                name,
                rel,
                hit,
                seconds,
            )
        )
    scored.sort(key=lambda item: (item[0], item[1]))
    _, _, name, rel, hit, seconds = scored[0]
    finite = rel[torch.isfinite(rel)]
    best = float(finite.min()) if finite.numel() else math.inf
    return AttackOutcome(attacker, name, rel, hit, seconds, best, wall)
