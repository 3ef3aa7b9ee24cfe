import math

import pytest
import torch
from _helpers import features_with_singular_values

import condimmune as ci
from condimmune.core.reference import dense_gradient_descent_losses

PROBLEMS = {
    "tall-full-rank": (40, [3.0, 2.0, 1.0, 0.5, 0.2], 1),
    "wide-rank-deficient": (6, [2.0, 1.5, 1.0, 0.4, 0.3, 0.1, 0.0, 0.0, 0.0], 1),
    "multi-output": (30, [4.0, 1.0, 0.3, 0.1], 3),
}


@pytest.mark.parametrize("n, sv, m", PROBLEMS.values(), ids=PROBLEMS.keys())
def test_exact_trajectory_equals_iterated_gradient_descent(n, sv, m, gen):
    Phi = features_with_singular_values(n, sv, gen)
    y = torch.randn(n, m, generator=gen, dtype=torch.float64).squeeze(1)
    result = ci.probe_attack(Phi, y, budget=200)
    losses = dense_gradient_descent_losses(Phi, y, 200)
    Y = y if y.ndim == 2 else y[:, None]
    optimal = float(((Phi @ (torch.linalg.pinv(Phi) @ Y) - Y) ** 2).sum()) / n
    assert result.optimal_loss == pytest.approx(optimal, rel=1e-8, abs=1e-12)
    rel = (losses - optimal) / (losses[0] - optimal)
    torch.testing.assert_close(result.relative_suboptimality, rel, rtol=1e-6, atol=1e-12)
    reached = torch.nonzero(rel <= 1e-3)
    if reached.numel():
        assert result.steps_to_target == int(reached[0])


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
    assert result.steps_to_target == pytest.approx(
        kappa * math.log(1 / eps) / 2, rel=1 / kappa + 1e-3
    )
    assert result.condition_number == pytest.approx(kappa)


def test_perfectly_conditioned_problem_is_solved_in_one_step():
    Phi = 3.0 * torch.eye(4, dtype=torch.float64)
    y = torch.arange(4, dtype=torch.float64)
    result = ci.probe_attack(Phi, y, target=1e-12)
    assert result.steps_to_target == 1
    assert float(result.relative_suboptimality[1]) == pytest.approx(0.0, abs=1e-15)


def test_comparison_reports_slowdown(gen):
    X = torch.randn(50, 4, generator=gen, dtype=torch.float64)
    y = X @ torch.ones(4, dtype=torch.float64)
    W = torch.diag(torch.tensor([1.0, 1.0, 1.0, 0.01], dtype=torch.float64))
    cmp = ci.compare_probe_attacks(X, y, W, target=1e-6)
    assert cmp.immunized.steps_to_target > cmp.raw.steps_to_target
    assert cmp.slowdown == pytest.approx(cmp.immunized.steps_to_target / cmp.raw.steps_to_target)
    identity = ci.compare_probe_attacks(X, y, torch.eye(4, dtype=torch.float64), target=1e-6)
    assert identity.slowdown == pytest.approx(1.0)


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
    assert cmp.raw.steps_to_target == cmp.immunized.steps_to_target == 1


def test_standardizing_attacker_scales_columns_to_unit_rms(gen):
    Phi = torch.randn(40, 3, generator=gen, dtype=torch.float64) * torch.tensor(
        [0.01, 1.0, 100.0], dtype=torch.float64
    )
    out = ci.attacker_features(Phi, "standardize")
    torch.testing.assert_close(out.square().mean(0), torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="unknown transform 'rotate'"):
        ci.attacker_features(Phi, "rotate")
