"""The yardstick's cost currency: floating-point operations, counted by torch's
:class:`~torch.utils.flop_counter.FlopCounterMode` (matrix products and convolutions, the
work that dominates; element-wise operations are not counted), the same way for every
attacker family (:mod:`condimmune.attacks.yardstick`, Eq. Y2).

* :func:`forward_flops`: one forward pass (feature extraction, counted once per attacker);
* :func:`training_step_flops`: one training step, forward and backward of the loss, with
  the gradients the step needs (those of the parameters that require them) and no others.

Counts depend only on shapes, not on values: one batch of the attacker's size is counted
once and multiplied by the number of steps.

A convolution's backward pass is counted by :func:`conv_backward_flops` (Eq. C1), not by
torch's formula, which ignores the groups of a grouped convolution's weight gradient and so
counts a depthwise convolution over ``C`` channels ``C`` times over (torch 2.14; a
MobileNetV2 training step at 64 × 64 pixels came to 19.3 forward passes instead of 2.9;
pytorch/pytorch#183405 proposes the same division).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count


def conv_backward_flops(
    grad_out_shape: Sequence[int],
    x_shape: Sequence[int],
    w_shape: Sequence[int],
    _bias: object,
    _stride: object,
    _padding: object,
    _dilation: object,
    transposed: bool,
    _output_padding: object,
    groups: int,
    output_mask: Sequence[bool],
    out_shape: Sequence[Sequence[int] | None],
    **_kwargs: object,
) -> int:
    r"""Eq. C1, the FLOPs of ``aten.convolution_backward`` (its arguments as shapes): the
    input gradient, a transposed convolution of the output gradient with the weight, and
    the weight gradient, a convolution of the input with the output gradient, each counted
    as its forward convolution is. For a convolution with ``g`` groups, ``N`` images,
    ``H'W'`` output positions and ``k × k`` kernels:

    .. math:: F_\text{bwd} = (m_0 + m_1)\, 2 N H'W' C_\text{out} (C_\text{in}/g)\, k^2
        \qquad (C1)

    with ``m_0, m_1`` the output mask (which gradients are needed). torch's own formula
    counts the weight gradient without the ``1/g``."""

    def swapped(shape: Sequence[int]) -> list[int]:  # batch and channels exchanged
        return [shape[1], shape[0], *shape[2:]]

    flops = 0
    if output_mask[0]:
        grad_input = out_shape[0]
        assert grad_input is not None
        flops += conv_flop_count(
            list(grad_out_shape), list(w_shape), list(grad_input), not transposed
        )
    if output_mask[1]:
        grad_weight = out_shape[1]
        assert grad_weight is not None
        first, second = (grad_out_shape, x_shape) if transposed else (x_shape, grad_out_shape)
        flops += conv_flop_count(swapped(first), swapped(second), swapped(grad_weight)) // groups
    return flops


def _counter() -> FlopCounterMode:
    return FlopCounterMode(
        display=False,
        custom_mapping={torch.ops.aten.convolution_backward: conv_backward_flops},
    )


__all__ = [
    "conv_backward_flops",
    "forward_flops",
    "linear_probe_step_flops",
    "lstsq_flops",
    "ridge_uses_kernel",
    "training_step_flops",
]


def forward_flops(module: Callable[[torch.Tensor], object], inputs: torch.Tensor) -> int:
    """FLOPs of ``module(inputs)`` without gradients (eval mode is the caller's choice)."""
    counter = _counter()
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
    counter = _counter()
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
