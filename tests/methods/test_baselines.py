"""The linear IMMA direction (methods/baselines.py) against finite differences of its
objective, its written-out reverse mode against autograd, and the scale invariance that
follows from differentiating the step 1/L; the linear Opt κ direction against autograd
through the dense eigenvalues."""

import numpy as np
import pytest
import torch

from condimmune.core.spectral import log_condition_number_features
from condimmune.methods.base import LinearProblem
from condimmune.methods.baselines import (
    OPT_KAPPA,
    imma_linear_direction,
    imma_linear_direction_reverse_mode,
)
from condimmune.methods.registry import configure_method


def _objective(weight: torch.Tensor, x: torch.Tensor, y: torch.Tensor, steps: int) -> float:
    """−L_H after ``steps`` GD steps of size 1/L from 0, computed independently (numpy-free,
    no autograd): the function whose gradient the direction must be."""
    phi = x @ weight.mT
    n = phi.shape[0]
    lipschitz = 2.0 / n * float(torch.linalg.svdvals(phi)[0]) ** 2
    head = torch.zeros(phi.shape[1], dtype=phi.dtype)
    for _ in range(steps):
        head = head - (2.0 / n / lipschitz) * (phi.mT @ (phi @ head - y))
    return -float(((phi @ head - y) ** 2).mean())


@pytest.fixture(params=[12, 3], ids=["covariance-side", "gram-side"])
def problem(request):
    # 12 rows: σ_max from the 4 × 4 covariance; 3 rows: from the 3 × 3 Gram matrix
    rows = request.param
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(rows, 5, generator=gen, dtype=torch.float64)
    y = (torch.rand(rows, generator=gen) > 0.5).to(torch.float64)
    w = torch.randn(4, 5, generator=gen, dtype=torch.float64)
    return x, y, w


@pytest.mark.parametrize("steps", [1, 5], ids=["one-step", "five-steps"])
def test_imma_direction_is_the_gradient_of_its_objective(problem, steps):
    x, y, w = problem
    grad = imma_linear_direction(w, x, y, steps)
    h = 1e-6
    numeric = torch.zeros_like(w)
    for i in range(w.shape[0]):
        for j in range(w.shape[1]):
            e = torch.zeros_like(w)
            e[i, j] = h
            numeric[i, j] = (_objective(w + e, x, y, steps) - _objective(w - e, x, y, steps)) / (
                2 * h
            )
    torch.testing.assert_close(grad, numeric, rtol=1e-5, atol=1e-8)


def test_imma_objective_ignores_the_scale_of_the_extractor(problem):
    x, y, w = problem
    grad = imma_linear_direction(w, x, y, 5)
    # f(cW) = f(W) ⇒ ∇f(cW) = ∇f(W)/c and ⟨∇f(W), W⟩ = 0
    torch.testing.assert_close(imma_linear_direction(3.0 * w, x, y, 5), grad / 3.0)
    assert abs(float((grad * w).sum())) <= 1e-10 * float(grad.norm() * w.norm())


@pytest.mark.parametrize("steps", [1, 5], ids=["one-step", "five-steps"])
@pytest.mark.parametrize("seed", [0, 1, 2], ids=["seed-0", "seed-1", "seed-2"])
@pytest.mark.parametrize("rows", [40, 4], ids=["covariance-side", "gram-side"])
def test_imma_gradient_by_hand_is_autograds(rows, seed, steps):
    # 40 rows: σ_max from the 6 × 6 covariance; 4 rows: from the 4 × 4 Gram matrix
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, 7, generator=gen, dtype=torch.float64)
    y = torch.randn(rows, generator=gen, dtype=torch.float64)
    w = torch.randn(6, 7, generator=gen, dtype=torch.float64)
    autograd = imma_linear_direction(w, x, y, steps)
    by_hand = imma_linear_direction_reverse_mode(w, x, y, steps)
    assert isinstance(by_hand, torch.Tensor)
    torch.testing.assert_close(by_hand, autograd, rtol=1e-10, atol=1e-10 * float(autograd.norm()))
    on_numpy = imma_linear_direction(w.numpy(), x.numpy(), y.numpy(), steps)
    assert isinstance(on_numpy, np.ndarray)
    np.testing.assert_allclose(
        on_numpy, autograd.numpy(), rtol=1e-10, atol=1e-10 * float(autograd.norm())
    )


def _opt_kappa_reference(weight, xp, xh, scale):
    """λ ∇_W (log κ(X_P Wᵀ) − log κ(X_H Wᵀ)) by autograd through eigvalsh on all columns."""
    w = weight.detach().clone().requires_grad_(True)
    objective = log_condition_number_features(xp @ w.mT) - log_condition_number_features(xh @ w.mT)
    (grad,) = torch.autograd.grad(objective, w)
    return scale * grad


@pytest.mark.parametrize(
    "rows, zero_columns",
    [(20, []), (20, [0, 3]), (4, [1])],
    ids=["full", "zero-border-columns", "fewer-rows-than-features"],
)
def test_opt_kappa_direction_matches_autograd(rows, zero_columns):
    gen = torch.Generator().manual_seed(1)
    xp = torch.randn(rows, 6, generator=gen, dtype=torch.float64)
    xh = torch.randn(rows, 6, generator=gen, dtype=torch.float64)
    xp[:, zero_columns] = 0.0  # all-zero pixel columns, left out of the fast products
    w = torch.randn(6, 6, generator=gen, dtype=torch.float64)
    problem = LinearProblem(xp, torch.zeros(rows), xh, torch.zeros(rows))
    plan = configure_method(OPT_KAPPA, "linear", weight=0.3).plan(problem)
    assert plan.gradient_direction is not None
    torch.testing.assert_close(
        plan.gradient_direction(w), _opt_kappa_reference(w, xp, xh, 0.3), rtol=1e-9, atol=1e-12
    )
