r"""A softmax (multinomial logistic-regression) head fitted on frozen features.

Used twice: to give an ImageNet backbone θ0 its classifier for a new benign task (the
released model before immunization), and as the benign *linear probe* that compares θ0 with
θ_I: what a legitimate user of either released extractor gets on the benign task by fitting
a linear classifier on its features.

.. math::
    \min_{W, b}\ \frac1n\sum_i \mathrm{CE}(W\phi_i + b,\ y_i) + \frac{\ell_2}{2}\|W\|_F^2

solved by full-batch L-BFGS (strong-Wolfe line search) from zero, in float64, on features
centred with the training rows' mean and divided by one global scale (the root mean
per-feature variance; folded back into ``W, b`` afterwards), so the fit does not depend on
the scale of the features. One scale for all features, not one per feature: a per-feature
standardization gives near-constant (e.g. dead ReLU) features huge weights, whose
gradients then blow up the backbone when the head is trained further. Deterministic.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["fit_linear_head", "linear_probe_top1"]


def fit_linear_head(
    features: Tensor, labels: Tensor, num_classes: int, *, steps: int, l2: float = 1e-2
) -> tuple[Tensor, Tensor]:
    """``(W, b)`` (``num_classes × k``, ``num_classes``; float64) of the fitted head, such
    that the logits are ``features @ W.T + b``.

    The default ``l2`` keeps the head smooth enough to be trained further: on MobileNetV2's
    Fashion-MNIST features (2,000 images) ``l2 = 1e-4`` gives ‖W‖ ≈ 14 instead of 5, and SGD
    at lr 1e-3 on the task loss alone then diverges within 5 steps (measured, docs/deep.md).
    """
    if steps < 1:
        raise ValueError(f"the head needs at least one L-BFGS step, got steps={steps}")
    if features.shape[0] != labels.shape[0]:
        raise ValueError(f"{features.shape[0]} feature rows but {labels.shape[0]} labels")
    x = features.to(torch.float64)
    mean = x.mean(dim=0)
    scale = x.var(dim=0).mean().sqrt().clamp_min(1e-12)
    z = (x - mean) / scale
    w = torch.zeros(num_classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(z @ w.mT + b, labels) + 0.5 * l2 * (w * w).sum()
        torch.autograd.backward(loss)
        return loss.detach()

    opt.step(closure)  # type: ignore[no-untyped-call]
    with torch.no_grad():
        weight = w / scale
        bias = b - weight @ mean
    return weight.detach(), bias.detach()


def linear_probe_top1(
    train: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    num_classes: int,
    *,
    steps: int,
    l2: float = 1e-2,
) -> float:
    """Top-1 accuracy on ``test`` of the head :func:`fit_linear_head` fits on ``train``."""
    weight, bias = fit_linear_head(train[0], train[1], num_classes, steps=steps, l2=l2)
    logits = test[0].to(torch.float64) @ weight.mT + bias
    return float((logits.argmax(dim=1) == test[1]).double().mean())
