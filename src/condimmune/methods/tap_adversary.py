r"""The closed-form adversaries a whole-network defence trains against (``full-depth``,
Eq. F3 and F3u of :mod:`condimmune.methods.full_depth`): a ridge probe fitted on one half of
a harmful batch in closed form, scored on the other half, differentiable in both.

Both are bounded (relative to the class-prior predictor) and invariant to the re-scalings a
probing attacker applies first: :func:`ridge_heldout_error` to a global scale (its ridge is
relative to the trace), and on :func:`standardised_union`'s output to any per-feature scale.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ridge_heldout_error", "standardised_union"]


def ridge_heldout_error(
    fit_x: Tensor,
    fit_y: Tensor,
    heldout_x: Tensor,
    heldout_y: Tensor,
    classes: int,
    ridge: float,
) -> Tensor:
    r"""Eq. F3: the held-out squared error of the ridge probe fitted on ``(fit_x, fit_y)``,
    relative to the error of predicting the fit rows' class frequencies.

    With ``Ã = A − 1μᵀ`` (``μ`` the fit rows' mean), ``Y`` one-hot and ``ȳ`` its mean,
    ``W = (ÃᵀÃ + ρ tr(ÃᵀÃ)/k I)⁻¹ Ãᵀ(Y − 1ȳᵀ)`` (an unpenalised intercept ``ȳ``) and
    ``E = ‖(A' − 1μᵀ) W + 1ȳᵀ − Y'‖² / ‖1ȳᵀ − Y'‖²``; differentiable in both feature
    matrices, float64, and scale-free: ``E(cA, cA') = E(A, A')`` for every ``c ≠ 0``."""
    a, held = fit_x.to(torch.float64), heldout_x.to(torch.float64)
    mean = a.mean(dim=0, keepdim=True)
    a, held = a - mean, held - mean
    y = F.one_hot(fit_y, classes).to(torch.float64)
    y_held = F.one_hot(heldout_y, classes).to(torch.float64)
    y_mean = y.mean(dim=0, keepdim=True)
    gram = a.mT @ a
    ridge_abs = ridge * torch.trace(gram) / gram.shape[0]
    eye = torch.eye(gram.shape[0], dtype=torch.float64, device=gram.device)
    w = torch.linalg.solve(gram + ridge_abs * eye, a.mT @ (y - y_mean))
    error = (held @ w + y_mean - y_held).pow(2).sum()
    prior = (y_mean - y_held).pow(2).sum()
    relative: Tensor = error / prior.clamp_min(1e-12)
    return relative


def standardised_union(fit: list[Tensor], heldout: list[Tensor]) -> tuple[Tensor, Tensor]:
    r"""Eq. F3u's inputs: the taps concatenated (float64), each feature centred and divided by
    its standard deviation over the fit rows, the same affine map on the held-out rows.

    A feature constant over the fit rows (a dead channel) is divided by 1 instead of 0, so it
    stays constant and the probe ignores it. Any per-feature re-scaling ``A D`` (D diagonal,
    non-zero) gives the same output up to the signs of the features, and so the same
    ``E`` of :func:`ridge_heldout_error`."""
    a = torch.cat([t.to(torch.float64) for t in fit], dim=1)
    held = torch.cat([t.to(torch.float64) for t in heldout], dim=1)
    mean = a.mean(dim=0, keepdim=True)
    std = a.std(dim=0, keepdim=True)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return (a - mean) / std, (held - mean) / std
