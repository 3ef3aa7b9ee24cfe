r"""The linear AdamW probe's trial written out: the held-out accuracy curve of a linear head
trained full-batch by AdamW on the cross-entropy, without autograd or ``torch.optim``.

With :math:`\tilde A = [A, 1]` (``n`` rows, a bias column), :math:`\Theta` the head
(``c × (k + 1)``, ``nn.Linear``'s layout, from zero) and :math:`Y` the one-hot labels, one
step is

.. math::  G = (\mathrm{softmax}(\tilde A\Theta^\top) - Y)^\top \tilde A/n
           \qquad \text{(the mean cross-entropy's gradient)}  \quad \text{(Eq. P1)}

followed by ``torch.optim.AdamW``'s update with its defaults (β = (0.9, 0.999), ε = 1e-8),
the decay applied to the bias as well, as AdamW does to every parameter it is given:

.. math::  \Theta \leftarrow \Theta(1 - \eta\lambda),\;
           m \leftarrow \beta_1 m + (1-\beta_1) G,\;
           v \leftarrow \beta_2 v + (1-\beta_2) G^2,\;
           \Theta \leftarrow \Theta - \frac{\eta}{1-\beta_1^t}\,
           \frac{m}{\sqrt{v}/\sqrt{1-\beta_2^t} + \epsilon}  \quad \text{(Eq. P2)}

It is the generic probe's trial (``nn.Linear`` + ``torch.optim.AdamW`` +
``F.cross_entropy``, :func:`~condimmune.attacks.deep_train.probe_curve`) with the same
numbers up to rounding (``tests/attacks/test_adam_probe.py`` compares them in float64), at a
fraction of its per-step overhead: a step is a dozen tensor operations instead of a module
call, an autograd pass and the optimizer's bookkeeping. That matters for the raw-pixel probe
(``raw-adam``), whose 20,000-step searches on the few-label point took 540 of a θ0 attack's
850 s (``benchmarks/bench_probe.py`` times both in one run).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["adamw_linear_accuracies"]

_BETA1, _BETA2, _EPS = 0.9, 0.999, 1e-8


def _with_bias(x: Tensor) -> Tensor:
    return torch.cat([x, x.new_ones(x.shape[0], 1)], dim=1)


_BLOCK = 64  # held-out evaluations per product


class _HeldOut:
    """Held-out accuracies of a series of heads, evaluated ``_BLOCK`` heads at a time: one
    product with ``c × _BLOCK`` columns instead of ``_BLOCK`` products with ``c`` (the same
    sums, blocked differently: equal up to rounding), which a skinny product's per-call
    cost and poor blocking would otherwise dominate."""

    def __init__(self, x: Tensor, y: Tensor, theta: Tensor) -> None:
        self.x, self.y, self.classes = x, y.unsqueeze(1), theta.shape[0]
        self.heads = theta.new_empty(_BLOCK * theta.shape[0], theta.shape[1])
        self.held = 0
        self.accuracies: list[float] = []

    def add(self, theta: Tensor) -> None:
        c = self.classes
        self.heads[self.held * c : (self.held + 1) * c].copy_(theta)
        self.held += 1
        if self.held == _BLOCK:
            self.flush()

    def flush(self) -> list[float]:
        if self.held:
            logits = self.x @ self.heads[: self.held * self.classes].mT
            hits = logits.view(self.x.shape[0], self.held, self.classes).argmax(dim=2)
            counts = hits.eq(self.y).sum(dim=0).tolist()
            self.accuracies += [count / self.x.shape[0] for count in counts]
            self.held = 0
        return self.accuracies


def adamw_linear_accuracies(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    classes: int,
    *,
    lr: float,
    weight_decay: float,
    steps: int,
    eval_steps: set[int],
) -> list[float]:
    """Held-out accuracy at step 0 and at each step in ``eval_steps`` (Eq. P1–P2, in the
    dtype of ``train_x``), stopping after the first step whose training loss (measured
    before that step's update, as ``opt.step(closure)`` does) is not finite: the list is
    then shorter, and the caller pads it with the last accuracy.

    Features that are zero on every training row are left out: their gradient is zero, so
    their weights stay at zero and never touch a prediction (raw pixels at the border)."""
    live = train_x.ne(0).any(dim=0)
    a, at = _with_bias(train_x[:, live]), _with_bias(test_x[:, live])
    n = a.shape[0]
    onehot = torch.nn.functional.one_hot(train_y, classes).to(a.dtype)
    labels = train_y.unsqueeze(1)
    # c × (k + 1), as nn.Linear stores it: the product with the long side contiguous in
    # both factors is several times faster than with Θ's columns strided
    theta = a.new_zeros(classes, a.shape[1])
    exp_avg, exp_avg_sq = torch.zeros_like(theta), torch.zeros_like(theta)
    logits, grad = a.new_empty(n, classes), torch.empty_like(theta)
    held_out = _HeldOut(at, test_y, theta)
    held_out.add(theta)
    for t in range(1, steps + 1):
        torch.mm(a, theta.mT, out=logits)
        log_p = logits.log_softmax(dim=1)
        loss = -float(log_p.gather(1, labels).sum()) / n  # not Y·log p: 0 · -inf is NaN
        torch.mm(log_p.exp_().sub_(onehot).div_(n).mT, a, out=grad)  # Eq. P1
        theta.mul_(1.0 - lr * weight_decay)  # Eq. P2, in torch's order
        exp_avg.lerp_(grad, 1.0 - _BETA1)
        exp_avg_sq.mul_(_BETA2).addcmul_(grad, grad, value=1.0 - _BETA2)
        denom = (exp_avg_sq.sqrt() / math.sqrt(1.0 - _BETA2**t)).add_(_EPS)
        theta.addcdiv_(exp_avg, denom, value=-lr / (1.0 - _BETA1**t))
        if not math.isfinite(loss):
            break
        if t in eval_steps:
            held_out.add(theta)
    return held_out.flush()
