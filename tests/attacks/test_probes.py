import math

import numpy as np
import pytest
import torch
from _helpers import features_with_singular_values

import condimmune as ci
from condimmune.core.reference import dense_gradient_descent_losses

PROBLEMS = [
    pytest.param(40, [3.0, 2.0, 1.0, 0.5, 0.2], 1, id="tall-full-rank"),
    pytest.param(6, [2.0, 1.5, 1.0, 0.4, 0.3, 0.1, 0.0, 0.0, 0.0], 1, id="wide-rank-deficient"),
    pytest.param(30, [4.0, 1.0, 0.3, 0.1], 3, id="multi-output"),
]


def _worst_case_steps(sv, target: float) -> int:
    """Steps after which GD with 1/L is below ``target`` whatever y: every component decays
    at least as fast as (1 − 1/κ)^{2t}, κ = (s_max/s_min)² over the non-zero s."""
    nz = [s for s in sv if s > 0]
    kappa = (max(nz) / min(nz)) ** 2
    return math.ceil(math.log(target) / (2 * math.log1p(-1 / kappa)))


@pytest.mark.parametrize(("n", "sv", "m"), PROBLEMS)
def test_exact_trajectory_equals_iterated_gradient_descent(n, sv, m, gen):
    Phi = features_with_singular_values(n, sv, gen)
    y = torch.randn(n, m, generator=gen, dtype=torch.float64).squeeze(1)
    # a budget long enough for the 1e-3 target on any y, so the step count is always checked
    budget = _worst_case_steps(sv, 1e-3)
    result = ci.probe_attack(Phi, y, budget=budget)
    losses = dense_gradient_descent_losses(Phi, y, budget)
    Y = y if y.ndim == 2 else y[:, None]
    optimal = float(((Phi @ (torch.linalg.pinv(Phi) @ Y) - Y) ** 2).sum()) / n
    assert result.optimal_loss == pytest.approx(optimal, rel=1e-8, abs=1e-12)
    assert result.initial_loss == pytest.approx(float((Y * Y).sum()) / n, rel=1e-12)
    rel = (losses - optimal) / (losses[0] - optimal)
    torch.testing.assert_close(result.relative_suboptimality, rel, rtol=1e-6, atol=1e-12)
    reached = torch.nonzero(rel <= 1e-3)
    assert reached.numel() > 0  # by the choice of budget
    assert result.steps_to_target == int(reached[0])
    assert 1 <= result.steps_to_target <= budget
    nz = [s for s in sv if s > 0]
    assert result.condition_number == pytest.approx((max(nz) / min(nz)) ** 2, rel=1e-10)
    assert result.step_size == pytest.approx(n / (2 * max(sv) ** 2), rel=1e-12)  # 1/L


@pytest.mark.parametrize("kappa", [10.0, 1e3, 1e6, 1e12], ids=lambda k: f"kappa-{k:g}")
def test_gd_needs_about_kappa_log_one_over_eps_steps(kappa):
    """On a diagonal problem whose target lies on the slowest direction, GD with 1/L needs
    exactly ⌈log ε / (2 log(1 − 1/κ))⌉ ≈ κ log(1/ε)/2 steps."""
    lam = torch.tensor([kappa, kappa / 3, 1.0], dtype=torch.float64)
    Phi = torch.diag(lam.sqrt())
    y = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    eps = 1e-4
    result = ci.probe_attack(Phi, y, target=eps)
    expected = math.ceil(math.log(eps) / (2 * math.log1p(-1 / kappa)))
    assert result.steps_to_target == expected
    # with x = 1/κ, −log(1 − x) ∈ [x, x/(1 − x)], so the exact count lies in
    # [E(1 − 1/κ), E + 1] for E = κ log(1/ε)/2; E/κ = log(1/ε)/2 > 1 makes both ends
    # within E/κ of E: rel = 1/κ is the derived bound, not a fitted one
    assert result.steps_to_target == pytest.approx(kappa * math.log(1 / eps) / 2, rel=1 / kappa)
    assert result.condition_number == pytest.approx(kappa)


def test_perfectly_conditioned_problem_is_solved_in_one_step():
    Phi = 3.0 * torch.eye(4, dtype=torch.float64)
    y = torch.arange(4, dtype=torch.float64)
    result = ci.probe_attack(Phi, y, target=1e-12, budget=5)
    assert result.steps_to_target == 1
    assert result.condition_number == 1.0
    assert result.initial_loss == pytest.approx((0 + 1 + 4 + 9) / 4, rel=1e-15)
    assert result.optimal_loss == pytest.approx(0.0, abs=1e-14)  # y is in the range of Φ
    # every rate is 1 − σᵢ²/σ₁² = 0 up to the SVD's rounding (≈ eps), so after one step
    # the curve is ≈ eps² or exactly 0; 1e-15 is far above that and far below any miss
    torch.testing.assert_close(
        result.relative_suboptimality[1:], torch.zeros(5, dtype=torch.float64), rtol=0, atol=1e-15
    )


def _numpy_steps_to_target(Phi: torch.Tensor, y: torch.Tensor, target: float) -> int:
    """Independent count: iterate GD with step 1/L in numpy until the relative suboptimality
    (against the least-squares optimum) is at most ``target``."""
    phi, y = Phi.numpy(), y.numpy()
    n = phi.shape[0]
    step = n / (2 * np.linalg.norm(phi, 2) ** 2)
    w_star = np.linalg.lstsq(phi, y, rcond=None)[0]
    optimal = np.sum((phi @ w_star - y) ** 2) / n
    w = np.zeros(phi.shape[1])
    initial = np.sum(y**2) / n - optimal
    for t in range(1_000_000):
        if (np.sum((phi @ w - y) ** 2) / n - optimal) / initial <= target:
            return t
        w -= step * (2 / n) * phi.T @ (phi @ w - y)
    raise AssertionError("numpy GD did not reach the target")


def test_comparison_reports_slowdown():
    """Diagonal X and W (κ 4 → 400): both step counts equal a numpy GD reference and the
    slowdown is their ratio."""
    X = torch.diag(torch.tensor([2.0, 1.5, 1.0, 1.0], dtype=torch.float64))
    y = torch.ones(4, dtype=torch.float64)
    W = torch.diag(torch.tensor([1.0, 1.0, 1.0, 0.1], dtype=torch.float64))
    cmp = ci.compare_probe_attacks(X, y, W, target=1e-6)
    assert cmp.original.steps_to_target == _numpy_steps_to_target(X, y, 1e-6)
    assert cmp.immunized.steps_to_target == _numpy_steps_to_target(X @ W.mT, y, 1e-6)
    assert cmp.original.condition_number == pytest.approx(4.0, rel=1e-12)
    assert cmp.immunized.condition_number == pytest.approx(400.0, rel=1e-12)
    assert cmp.slowdown == cmp.immunized.steps_to_target / cmp.original.steps_to_target
    identity = ci.compare_probe_attacks(X, y, torch.eye(4, dtype=torch.float64), target=1e-6)
    # W = I: both attacks see the same matrix, so the same curve and exactly no slowdown
    torch.testing.assert_close(
        identity.immunized.relative_suboptimality, identity.original.relative_suboptimality
    )
    assert identity.slowdown == 1.0


ATTACK_ERRORS = {
    "y-wrong-rows": (dict(y=torch.zeros(5, dtype=torch.float64)), ValueError, "match Phi's rows"),
    "target-above-one": (dict(target=2.0), ValueError, "must be < 1"),
    "target-zero": (dict(target=0.0), ValueError, "target"),
    "budget-zero": (dict(budget=0), ValueError, "budget"),
    "y-float32": (dict(y=torch.zeros(8, dtype=torch.float32)), TypeError, "dtype"),
    "y-orthogonal": (
        dict(y=torch.cat([torch.zeros(4), torch.ones(4)]).double()),
        ci.DegenerateSpectrumError,
        "orthogonal",
    ),
}


@pytest.mark.parametrize("kwargs, exc, match", ATTACK_ERRORS.values(), ids=ATTACK_ERRORS.keys())
def test_attack_errors(kwargs, exc, match):
    Phi = torch.cat([torch.eye(4), torch.zeros(4, 4)]).double()
    args = dict(y=torch.ones(8, dtype=torch.float64))
    args.update(kwargs)
    y = args.pop("y")
    with pytest.raises(exc, match=match):
        ci.probe_attack(Phi, y, **args)


def test_whitening_attacker_undoes_any_linear_immunization(gen):
    X = torch.randn(60, 5, generator=gen, dtype=torch.float64) * torch.tensor(
        [1.0, 3.0, 10.0, 30.0, 100.0], dtype=torch.float64
    )
    y = X @ torch.ones(5, dtype=torch.float64)
    W = torch.randn(5, 5, generator=gen, dtype=torch.float64)
    whitened = ci.attacker_features(X @ W.mT, "whiten")
    assert float(ci.condition_number_features(whitened)) == pytest.approx(1.0, rel=1e-9)
    cmp = ci.compare_probe_attacks(X, y, W, target=1e-6, transform="whiten")
    assert cmp.original.steps_to_target == cmp.immunized.steps_to_target == 1


def test_standardizing_attacker_scales_columns_to_unit_rms(gen):
    Phi = torch.randn(40, 3, generator=gen, dtype=torch.float64) * torch.tensor(
        [0.01, 1.0, 100.0], dtype=torch.float64
    )
    out = ci.attacker_features(Phi, "standardize")
    torch.testing.assert_close(out.square().mean(0), torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="unknown transform 'rotate'"):
        ci.attacker_features(Phi, "rotate")
