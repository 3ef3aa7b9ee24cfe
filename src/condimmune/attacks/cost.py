"""The yardstick's cost currency: floating-point operations, counted by torch's
:class:`~torch.utils.flop_counter.FlopCounterMode` (matrix products and convolutions, the
work that dominates; element-wise operations are not counted), the same way for every
attacker family (:mod:`condimmune.attacks.yardstick`, Eq. Y2).

* :func:`forward_flops`: one forward pass (feature extraction, counted once per attacker);
* :func:`training_step_flops`: one training step, forward and backward of the loss, with
  the gradients the step needs (those of the parameters that require them) and no others.

Counts depend only on shapes, not on values: one batch of the attacker's size is counted
once and multiplied by the number of steps.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = [
    "forward_flops",
    "linear_probe_step_flops",
    "lstsq_flops",
    "ridge_uses_kernel",
    "training_step_flops",
]


def forward_flops(module: Callable[[torch.Tensor], object], inputs: torch.Tensor) -> int:
    """FLOPs of ``module(inputs)`` without gradients (eval mode is the caller's choice)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(inputs)
    return int(counter.get_total_flops())


def training_step_flops(
    module: nn.Module,
    inputs: torch.Tensor,
    loss: Callable[[torch.Tensor], torch.Tensor],
) -> int:
    """FLOPs of one step's ``loss(module(inputs)).backward()``: the forward pass and the
    gradients of the parameters that require them (the optimizer's update is element-wise
    and not counted). The module's gradients are left as they were."""
    saved = {p: p.grad for p in module.parameters()}
    counter = FlopCounterMode(display=False)
    try:
        with counter:
            torch.autograd.backward(loss(module(inputs)))
    finally:
        for p, grad in saved.items():
            p.grad = grad
    return int(counter.get_total_flops())


def linear_probe_step_flops(batch: int, features: int, classes: int) -> int:
    """One step of a linear head on fixed features, counted as FlopCounterMode counts it:
    the forward product and the weight gradient, ``2 · batch · features · classes`` each
    (no input gradient: the features are data)."""
    return 4 * batch * features * classes


def ridge_uses_kernel(rows: int, features: int) -> bool:
    """Whether the closed-form ridge head solves the ``n × n`` kernel system (Eq. A2' of
    :mod:`condimmune.attacks.ridge_head`) rather than the ``d × d`` Gram system (Eq. A2):
    when there are fewer rows than features, the smaller system."""
    return rows < features


def lstsq_flops(rows: int, features: int, classes: int) -> int:
    """The closed-form ridge head (one "step") in the form it is solved
    (:func:`ridge_uses_kernel`), counted by hand, as FlopCounterMode does not count
    factorizations. Gram form: ``AᵀA`` (``2·n·d²``), its Cholesky factor (``d³/3``), the two
    triangular solves (``2·d²·c``) and ``AᵀY`` (``2·n·d·c``). Kernel form: ``AAᵀ``
    (``2·n²·d``), its factor (``n³/3``), the solves (``2·n²·c``) and ``W = Aᵀα``
    (``2·n·d·c``)."""
    n, d, c = rows, features, classes
    if ridge_uses_kernel(n, d):
        return 2 * n * n * d + n**3 // 3 + 2 * n * n * c + 2 * n * d * c
    return 2 * n * d * d + d**3 // 3 + 2 * d * d * c + 2 * n * d * c
