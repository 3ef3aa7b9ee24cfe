import math

import pytest
import torch
from _helpers import features_with_singular_values

from condimmune.attacks.suite import Attacker, run_attack_suite, run_attacker, worst_case


def _problem(gen, singular_values, n=80):
    x = features_with_singular_values(n, singular_values, gen)
    y = x @ torch.randn(len(singular_values), generator=gen, dtype=torch.float64)
    y = y + 0.1 * torch.randn(n, generator=gen, dtype=torch.float64)
    return x, y


@pytest.mark.parametrize("attacker", list(Attacker), ids=lambda a: a.value)
def test_every_attacker_reaches_the_target_on_a_well_conditioned_problem(attacker, gen):
    x, y = _problem(gen, [2.0, 1.8, 1.5, 1.2, 1.0])
    eye = torch.eye(5, dtype=torch.float64)
    outcome = run_attacker(attacker, x, eye, y, target=1e-6, budget=300)
    assert outcome.steps_to_target is not None, (attacker, outcome.best)
    assert outcome.seconds_to_target is not None and outcome.seconds_to_target >= 0
    assert outcome.curve[0] == pytest.approx(1.0)
    assert outcome.best <= 1e-6


def test_least_squares_attacker_needs_one_step_whatever_the_conditioning(gen):
    x, y = _problem(gen, [1e3, 1.0, 1e-3])
    W = torch.diag(torch.tensor([1.0, 1.0, 1e-4], dtype=torch.float64))
    assert run_attacker("lstsq", x, W, y, target=1e-9).steps_to_target == 1


@pytest.mark.parametrize("kappa", [10.0, 100.0], ids=lambda k: f"kappa-{k:g}")
def test_gd_needs_kappa_log_one_over_eps_steps_on_a_diagonal_problem(kappa):
    lam = torch.tensor([kappa, kappa / 3, 1.0], dtype=torch.float64)
    x = torch.diag(lam.sqrt())
    y = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    eps = 1e-4
    outcome = run_attacker("gd", x, torch.eye(3, dtype=torch.float64), y, target=eps, budget=2000)
    assert outcome.steps_to_target == math.ceil(math.log(eps) / (2 * math.log1p(-1 / kappa)))


def test_tuned_attackers_are_never_slower_than_plain_gd(gen):
    x, y = _problem(gen, [30.0, 10.0, 3.0, 1.0])
    eye = torch.eye(4, dtype=torch.float64)
    plain = run_attacker("gd", x, eye, y, target=1e-4, budget=2000).steps_to_target
    for attacker in ("gd-tuned", "nesterov", "lbfgs"):
        steps = run_attacker(attacker, x, eye, y, target=1e-4, budget=2000).steps_to_target
        assert steps is not None and steps <= plain, attacker


def test_suite_and_worst_case(gen):
    x, y = _problem(gen, [10.0, 3.0, 1.0])
    W = torch.diag(torch.tensor([1.0, 1.0, 0.01], dtype=torch.float64))
    entries = run_attack_suite(
        ["gd", "lstsq"], benign=(x, y), harmful=(x, y), weight=W, target=1e-4, budget=200
    )
    d = entries[Attacker.GD].to_dict(200)
    assert d["harmful_slowdown"] > 1 and set(d) >= {
        "harmful_slowdown",
        "benign_slowdown",
        "harmful_best",
        "benign_best",
    }
    worst = worst_case(entries, 200)
    assert worst["attacker_immunized"] == "lstsq" and worst["harmful_slowdown"] == 1.0
    with pytest.raises(ValueError, match="unknown attacker 'sgd'"):
        run_attack_suite(["sgd"], benign=(x, y), harmful=(x, y), weight=W)
    with pytest.raises(ValueError, match="at least one attacker"):
        run_attack_suite([], benign=(x, y), harmful=(x, y), weight=W)
