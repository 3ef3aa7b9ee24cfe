"""What each deep attacker's trials cost, in the yardstick's currency (FLOPs,
:mod:`condimmune.attacks.cost`), as :class:`~condimmune.attacks.yardstick.AttackerCurves`.

Per family (``n`` training examples, ``b`` the minibatch, ``p``/``q`` the FLOPs per image
of the frozen prefix and of the immunized blocks, :class:`ExtractionFlops`):

=========  ==============================  ============================================
family     done once (``F_a``, Eq. Y2)     per training step (``s_a``)
=========  ==============================  ============================================
probe      ``n·(p + q)``: the features     the head on ``n`` rows (full batch)
skip       ``n·p``: the activations        the head on ``n`` rows
tap        ``n·(p + q)``: every tap        the head on ``n`` rows
blocks     ``n·p``: the activations        blocks + head on ``b`` activations
full       0 (``n·(p + q)`` with batch-norm  network + head on ``b`` images
           re-calibration: one pass; the
           heal phase's steps for heal-adam)
raw        0                               the head on ``n`` flat images
scratch    0                               the from-scratch CNN + head on ``b`` images
=========  ==============================  ============================================

A linear head's step is counted with its bias column (``d + 1`` inputs); the closed-form
head is one step of :func:`~condimmune.attacks.cost.lstsq_flops`; L-BFGS is counted as one
function and gradient evaluation per step (its line search may take more: a lower count,
so an L-BFGS attacker is never charged more than it spends). Networks are counted by
running one step of their actual modules under FlopCounterMode.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from condimmune.attacks.cost import linear_probe_step_flops, lstsq_flops, training_step_flops
from condimmune.attacks.deep_train import TaskTensors
from condimmune.attacks.registry import DeepAttackerSpec, DeepFamily, Optimizer
from condimmune.attacks.yardstick import AttackerCurves

__all__ = ["ExtractionFlops", "attacker_curves"]


@dataclass(frozen=True)
class ExtractionFlops:
    """FLOPs per example of a released model's two parts: ``prefix`` (image → activations
    entering the immunized blocks) and ``blocks`` (those activations → released features)."""

    prefix: float
    blocks: float


def _fixed(family: DeepFamily, extraction: ExtractionFlops, rows: int, recalibrate: bool) -> float:
    if family in (DeepFamily.PROBE, DeepFamily.TAP) or recalibrate:
        return rows * (extraction.prefix + extraction.blocks)
    if family in (DeepFamily.SKIP, DeepFamily.BLOCKS):
        return rows * extraction.prefix
    return 0.0


def _head_step(spec: DeepAttackerSpec, params: Mapping[str, float], data: TaskTensors) -> float:
    n, d = data.train_x.shape[0], data.train_x.shape[1] + 1
    if spec.optimizer is Optimizer.LSTSQ:
        return float(lstsq_flops(n, d, data.classes))
    if not spec.hidden:
        return float(linear_probe_step_flops(n, d, data.classes))
    width = int(params["hidden"])
    mlp = nn.Sequential(nn.Linear(d - 1, width), nn.ReLU(), nn.Linear(width, data.classes))
    x, y = data.train_x.float(), data.train_y
    return float(training_step_flops(mlp, x, lambda out: F.cross_entropy(out, y)))


def _network_step(
    make_network: Callable[[], nn.Module], feature_dim: int, data: TaskTensors, batch: int
) -> float:
    model = nn.Sequential(make_network(), nn.Linear(feature_dim, data.classes))
    model.train()
    x, y = data.train_x[:batch], data.train_y[:batch]

    def loss(out: Tensor) -> Tensor:
        return F.cross_entropy(out, y)

    return float(training_step_flops(model, x, loss))


def attacker_curves(
    name: str,
    spec: DeepAttackerSpec,
    trials: Sequence[tuple[Mapping[str, float], Sequence[float]]],
    eval_steps: Sequence[int],
    data: TaskTensors,
    extraction: ExtractionFlops,
    *,
    network: tuple[Callable[[], nn.Module], int, int] | None = None,
    target_steps: int | None = None,
) -> AttackerCurves:
    """The :class:`AttackerCurves` of one attacker's ``trials`` ((hyperparameters, held-out
    accuracy at ``eval_steps``) each) on one model: ``data`` is what it trains on, and for
    the network families ``network`` = (a factory of the trained module, its feature width,
    the minibatch size), whose one step is counted once (it does not depend on the
    hyperparameters); an attacker that re-calibrates batch norm first runs the network
    once over its training examples. ``target_steps``: see
    :attr:`~condimmune.attacks.yardstick.AttackerCurves.target_steps`."""
    rows = data.train_x.shape[0]
    if network is None:
        steps = [_head_step(spec, params, data) for params, _ in trials]
    else:
        make, width, batch = network
        steps = [_network_step(make, width, data, batch)] * len(trials)
    heal = eval_steps[-1] * steps[0] if spec.heal and steps else 0.0  # as many benign steps
    return AttackerCurves(
        name,
        [list(curve) for _, curve in trials],
        list(eval_steps),
        _fixed(spec.family, extraction, rows, spec.recalibrate) + heal,
        steps,
        eval_steps[-1],
        spec.weight_free,
        target_steps,
    )
