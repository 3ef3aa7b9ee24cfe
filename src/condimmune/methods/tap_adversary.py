r"""The closed-form adversaries a whole-network defence trains against (``full-depth``,
Eq. F3 and F3u of :mod:`condimmune.methods.full_depth`): a ridge probe fitted on one half of
a harmful batch in closed form, scored on the other half, differentiable in both; and how
activations are pooled into the features the probes (and the suite's probing attackers)
read, :func:`pool_activations`.

Both are bounded (relative to the class-prior predictor) and invariant to the re-scalings a
probing attacker applies first: :func:`ridge_heldout_error` to a global scale (its ridge is
relative to the trace), and on :func:`standardised_union`'s output to any per-feature scale.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["pool_activations", "ridge_heldout_error", "standardised_union"]


def pool_activations(output: Tensor, dims: int = 0) -> Tensor:
    """``n × features`` from activations: a convolutional ``n × c × h × w`` map averaged to
    ``c × s × s`` with the largest ``s ≤ h`` such that ``c s² ≤ dims`` (at least ``1 × 1``;
    ``dims = 0``: the spatial mean, ``c`` values), flattened; a token sequence ``n × t × c``
    averaged over its tokens; ``n × c`` kept.

    ``dims = 0`` is how the taps are read (the anchor, the tap adversaries, ``tap-adam``);
    ``dims > 0`` is the skip probe's rule (``attack.skip_dims``), which keeps a coarse
    spatial grid, and the union adversary's with ``method.union_dims``."""
    if output.dim() == 4:
        if dims == 0:
            return output.mean(dim=(2, 3))
        import torch.nn.functional as F

        channels, height = output.shape[1], output.shape[2]
        side = max(1, min(height, math.isqrt(max(dims // channels, 1))))
        return F.adaptive_avg_pool2d(output, side).flatten(1)
    if output.dim() == 3:
        return output.mean(dim=1)
    if output.dim() == 2:
        return output
    raise ValueError(
        f"activations to pool must have 2–4 dimensions, got shape {tuple(output.shape)}"
    )


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
    matrices, float64, and scale-free: ``E(cA, cA') = E(A, A')`` for every ``c ≠ 0``.

    With more features than fit rows (``k > n``) the same ``W`` is formed in its dual form,
    ``W = Ãᵀ(ÃÃᵀ + ρ tr(ÃÃᵀ)/k I)⁻¹ (Y − 1ȳᵀ)`` (the push-through identity, exact): an
    ``n × n`` solve instead of ``k × k``, so wide features (a spatial grid per tap) stay
    cheap."""
    import torch
    import torch.nn.functional as F

    a, held = fit_x.to(torch.float64), heldout_x.to(torch.float64)
    mean = a.mean(dim=0, keepdim=True)
    a, held = a - mean, held - mean
    y = F.one_hot(fit_y, classes).to(torch.float64)
    y_held = F.one_hot(heldout_y, classes).to(torch.float64)
    y_mean = y.mean(dim=0, keepdim=True)
    rows, features = a.shape
    dual = features > rows
    gram = a @ a.mT if dual else a.mT @ a
    ridge_abs = ridge * torch.trace(gram) / features
    eye = torch.eye(gram.shape[0], dtype=torch.float64, device=gram.device)
    solved = torch.linalg.solve(gram + ridge_abs * eye, y - y_mean if dual else a.mT @ (y - y_mean))
    prediction = (held @ a.mT) @ solved if dual else held @ solved
    error = (prediction + y_mean - y_held).pow(2).sum()
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
    import torch

    a = torch.cat([t.to(torch.float64) for t in fit], dim=1)
    held = torch.cat([t.to(torch.float64) for t in heldout], dim=1)
    mean = a.mean(dim=0, keepdim=True)
    std = a.std(dim=0, keepdim=True)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return (a - mean) / std, (held - mean) / std
