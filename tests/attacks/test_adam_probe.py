"""The written-out linear AdamW probe (attacks/adam_probe.py) against its definition: a
zero-initialised ``nn.Linear`` trained by ``torch.optim.AdamW`` on ``F.cross_entropy`` with
autograd (``head_curve``), in float64, on a task whose held-out accuracy keeps moving."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from condimmune.attacks.adam_probe import adamw_linear_accuracies
from condimmune.attacks.deep_train import Budget, TaskTensors, head_curve, probe_curve, zero_head
from condimmune.attacks.registry import Optimizer

CLASSES, DIMS = 4, 40


def _few_labels(dtype: torch.dtype = torch.float64) -> TaskTensors:
    """Few training rows in many dimensions with overlapping classes (as a raw-pixel probe
    on few labels): accuracy rises over hundreds of steps instead of at the first one."""
    gen = torch.Generator().manual_seed(3)
    y = torch.arange(24 + 400) % CLASSES
    centres = 0.6 * torch.randn(CLASSES, DIMS, generator=gen, dtype=torch.float64)
    x = (centres[y] + torch.randn(len(y), DIMS, generator=gen, dtype=torch.float64)).to(dtype)
    return TaskTensors(x[:24], y[:24], x[24:], y[24:], CLASSES)


def _linear_head(dtype: torch.dtype) -> nn.Linear:
    return zero_head(DIMS, CLASSES).to(dtype)


def _written_out(data: TaskTensors, params: dict[str, float], budget: Budget) -> list[float]:
    """The written-out trial on ``data`` (unpadded: shorter when it diverged)."""
    return adamw_linear_accuracies(
        data.train_x,
        data.train_y,
        data.test_x,
        data.test_y,
        CLASSES,
        lr=params["lr"],
        weight_decay=params["weight_decay"],
        steps=budget.steps,
        eval_steps=set(budget.eval_steps),
    )


CASES = {
    "small lr, every step": ({"lr": 1e-3, "weight_decay": 1e-4}, Budget(300)),
    "large lr, strong decay": ({"lr": 0.3, "weight_decay": 0.5}, Budget(300)),
    "evaluated every 7 steps": ({"lr": 1e-2, "weight_decay": 0.0}, Budget(200, 7)),
    "diverging": ({"lr": 3e306, "weight_decay": 0.0}, Budget(20)),
}


@pytest.mark.parametrize("params, budget", CASES.values(), ids=CASES.keys())
def test_matches_autograd_and_torch_adamw_in_float64(params, budget):
    data = _few_labels()
    expected = head_curve(_linear_head(torch.float64), data, Optimizer.ADAM, params, budget)
    got = _written_out(data, params, budget)
    padded = got + [got[-1]] * (len(budget.eval_steps) - len(got))
    assert padded == expected
    assert all(math.isfinite(a) for a in padded)


def test_the_task_is_not_trivial():
    """The comparison above means something: the curve takes many distinct values."""
    data = _few_labels()
    curve = head_curve(
        _linear_head(torch.float64),
        data,
        Optimizer.ADAM,
        CASES["small lr, every step"][0],
        Budget(300),
    )
    assert len(set(curve)) >= 10


def test_a_diverging_trial_stops_early():
    params, budget = CASES["diverging"]
    assert len(_written_out(_few_labels(), params, budget)) < len(budget.eval_steps)


def test_the_probe_takes_the_written_out_path_in_float32():
    """``probe_curve``'s linear AdamW head is the written-out one, on float32 features."""
    data = _few_labels(torch.float32)
    params, budget = CASES["small lr, every step"]
    assert probe_curve(data, Optimizer.ADAM, params, budget) == _written_out(data, params, budget)
