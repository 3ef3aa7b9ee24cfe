r"""Slow, dense float64 reference computations.

They follow the paper's formulas literally on the ``k × k`` covariance
``S = ΦᵀΦ`` (full ``eigvalsh``) and solve the ``d × d`` system
``(XᵀX + λI)`` afresh, as the reference code does each step (but on the correct side).
Tests check every fast path against them; ``benchmarks/bench_step.py`` times them.
"""

from __future__ import annotations

import math

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


def _dense_coefficient(S: Tensor, weight: float, weighting: str, *, ill: bool) -> float:
    """The coefficient of a regularizer's preconditioned gradient under ``weighting``, from the
    full spectrum of ``S`` (``docs/theory.md`` §4; :class:`~condimmune.core.step.StepWeighting`).
    """
    if weighting == "fixed":
        return weight
    lam: Tensor = torch.linalg.eigvalsh(S)
    p = S.shape[0]
    if ill:
        nz: list[float] = lam[nonzero_mask(lam)].tolist()
        k = len(nz)
        d2 = (float((S * S).sum()) / (2 * k) - 0.5 * nz[0] ** 2) ** 2
        unit = d2 / (2 * max(nz[0] * (1 - 1 / k), nz[-1] / k))
        monotone = k * d2 / (2 * nz[0] * (k - 1))
    else:
        s1, s2 = float(lam[-1]), max(float(lam[-2]), 0.0)
        unit = 1 / (2 * s1 * (1 - 1 / p))
        monotone = (math.sqrt(s1) - math.sqrt(s2)) / (2 * (s1**1.5 * (1 - 1 / p) + s2**1.5 / p))
    return weight * (unit if weighting == "unit" else min(monotone, unit))


def dense_regularizer_gradient(
    weight: Tensor,
    benign_x: Tensor,
    harmful_x: Tensor,
    *,
    benign_ridge: float,
    harmful_ridge: float,
    benign_weight: float,
    harmful_weight: float,
    weighting: str = "fixed",
) -> Tensor:
    """c_P ∇_W R_well (K_P + ρ_P I)⁻¹ + c_H ∇_W R_ill (K_H + ρ_H I)⁻¹, densely.

    ``c = λ`` (the weight) for ``weighting="fixed"``; for ``"unit"`` and ``"monotone"`` the
    weight times the step size read off the full spectrum of ``S`` (Alg. 1 with the
    spectral step rules). A weight of 0 leaves its regularizer out.
    """
    w = weight.detach().clone().requires_grad_(True)
    d = weight.shape[1]
    eye = torch.eye(d, dtype=weight.dtype, device=weight.device)
    total = torch.zeros_like(weight)
    for x, ridge, lam, ill in (
        (benign_x, benign_ridge, benign_weight, False),
        (harmful_x, harmful_ridge, harmful_weight, True),
    ):
        if lam == 0:
            continue
        with torch.enable_grad():  # also under a caller's no_grad (a training loop)
            phi = x @ w.mT
            S = phi.mT @ phi
            (g,) = torch.autograd.grad(_dense_r_ill(S) if ill else _dense_r_well(S), w)
        coefficient = _dense_coefficient(S.detach(), lam, weighting, ill=ill)
        pre: Tensor = torch.linalg.solve(x.mT @ x + ridge * eye, g.mT).mT
        total = total + coefficient * pre
    return total


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
