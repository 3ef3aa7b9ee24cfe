r"""Slow, dense float64 reference computations.

They follow the paper's formulas literally on the ``k × k`` covariance
``S = ΦᵀΦ`` (full ``eigvalsh``) and solve the ``d × d`` system
``(XᵀX + λI)`` afresh, as the reference code does each step (but on the correct side).
Tests check every fast path against them; ``benchmarks/bench_step.py`` times them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from condimmune.core.spectral import nonzero_mask

__all__ = ["dense_gradient_descent_losses", "dense_regularizer_gradient"]


def _dense_r_well(S: Tensor) -> Tensor:
    """Eq. 3 on the full spectrum of ``S``."""
    lam: Tensor = torch.linalg.eigvalsh(S)
    return 0.5 * lam[-1] ** 2 - (S * S).sum() / (2 * S.shape[0])


def _dense_r_ill(S: Tensor) -> Tensor:
    """Eq. 12 on the non-zero spectrum of ``S`` (default ``rtol``)."""
    lam: Tensor = torch.linalg.eigvalsh(S)
    nz = lam[nonzero_mask(lam)]
    return 1.0 / ((S * S).sum() / (2 * nz.numel()) - 0.5 * nz[0] ** 2)


def dense_regularizer_gradient(
    weight: Tensor,
    benign_x: Tensor,
    harmful_x: Tensor,
    *,
    benign_ridge: float,
    harmful_ridge: float,
    benign_weight: float,
    harmful_weight: float,
) -> Tensor:
    """λ_P ∇_W R_well (K_P + ρ_P I)⁻¹ + λ_H ∇_W R_ill (K_H + ρ_H I)⁻¹, densely."""
    w = weight.detach().clone().requires_grad_(True)
    phi_p = benign_x @ w.mT
    phi_h = harmful_x @ w.mT
    (g_p,) = torch.autograd.grad(_dense_r_well(phi_p.mT @ phi_p), w)
    (g_h,) = torch.autograd.grad(_dense_r_ill(phi_h.mT @ phi_h), w)
    d = weight.shape[1]
    eye = torch.eye(d, dtype=weight.dtype, device=weight.device)
    pre_p: Tensor = torch.linalg.solve(benign_x.mT @ benign_x + benign_ridge * eye, g_p.mT).mT
    pre_h: Tensor = torch.linalg.solve(harmful_x.mT @ harmful_x + harmful_ridge * eye, g_h.mT).mT
    return benign_weight * pre_p + harmful_weight * pre_h


def dense_gradient_descent_losses(Phi: Tensor, y: Tensor, steps: int) -> Tensor:
    """Iterate GD with step 1/L on ``‖Φw − y‖²/n`` from ``w = 0``; losses at t = 0..steps."""
    n = Phi.shape[0]
    hess = 2.0 / n * (Phi.mT @ Phi)
    step = 1.0 / float(torch.linalg.eigvalsh(hess)[-1])
    Y = y if y.ndim == 2 else y[:, None]
    w = torch.zeros(Phi.shape[1], Y.shape[1], dtype=Phi.dtype)
    losses = []
    for _ in range(steps + 1):
        resid = Phi @ w - Y
        losses.append(float((resid * resid).sum()) / n)
        w = w - step * (2.0 / n) * (Phi.mT @ resid)
    return torch.tensor(losses, dtype=Phi.dtype)
