import json
import math

import pytest
import torch
from _helpers import features_with_singular_values

from condimmune.attacks.attackers import AttackOutcome, run_attacker
from condimmune.attacks.registry import Attacker
from condimmune.attacks.suite import SuiteEntry, run_attack_suite
from condimmune.attacks.suite_records import DECOMPOSITION_ATTACKERS, AttackSummary, WorstCase


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
    assert run_attacker("linear-lstsq", x, W, y, target=1e-9).steps_to_target == 1


@pytest.mark.parametrize("kappa", [10.0, 100.0], ids=lambda k: f"kappa-{k:g}")
def test_gd_needs_kappa_log_one_over_eps_steps_on_a_diagonal_problem(kappa):
    lam = torch.tensor([kappa, kappa / 3, 1.0], dtype=torch.float64)
    x = torch.diag(lam.sqrt())
    y = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    eps = 1e-4
    outcome = run_attacker(
        "linear-gd", x, torch.eye(3, dtype=torch.float64), y, target=eps, budget=2000
    )
    assert outcome.steps_to_target == math.ceil(math.log(eps) / (2 * math.log1p(-1 / kappa)))


def test_tuned_attackers_are_never_slower_than_plain_gd(gen):
    x, y = _problem(gen, [30.0, 10.0, 3.0, 1.0])
    eye = torch.eye(4, dtype=torch.float64)
    plain = run_attacker("linear-gd", x, eye, y, target=1e-4, budget=2000).steps_to_target
    for attacker in ("linear-gd-tuned", "linear-momentum", "linear-lbfgs"):
        steps = run_attacker(attacker, x, eye, y, target=1e-4, budget=2000).steps_to_target
        assert steps is not None and steps <= plain, attacker


def test_suite_and_worst_case(gen):
    x, y = _problem(gen, [10.0, 3.0, 1.0])
    W = torch.diag(torch.tensor([1.0, 1.0, 0.01], dtype=torch.float64))
    entries = run_attack_suite(
        ["linear-gd", "linear-lstsq"],
        benign=(x, y),
        harmful=(x, y),
        weight=W,
        target=1e-4,
        budget=200,
    )
    assert entries[Attacker.LINEAR_GD].summary(200).harmful_slowdown > 1
    worst = WorstCase.of({a: e.summary(200) for a, e in entries.items()}, 200)
    assert worst.attacker_immunized is Attacker.LINEAR_LSTSQ and worst.harmful_slowdown == 1.0
    with pytest.raises(ValueError, match="unknown attacker 'sgd'"):
        run_attack_suite(["sgd"], benign=(x, y), harmful=(x, y), weight=W)
    with pytest.raises(ValueError, match="at least one attacker"):
        run_attack_suite([], benign=(x, y), harmful=(x, y), weight=W)


def test_the_suite_runs_on_inputs_with_all_zero_columns(gen):
    """Raw pixels: the image borders are zero in every image (the warm-up run once took
    its inputs from the first columns and divided by their zero Lipschitz constant)."""
    x, y = _problem(gen, [10.0, 3.0, 1.0])
    padded = torch.cat([torch.zeros(x.shape[0], 5, dtype=x.dtype), x], dim=1)
    W = torch.eye(padded.shape[1], dtype=torch.float64)
    entries = run_attack_suite(
        ["linear-gd"], benign=(padded, y), harmful=(padded, y), weight=W, target=1e-4, budget=50
    )
    assert entries[Attacker.LINEAR_GD].summary(50).harmful_slowdown == 1.0


def summaries(entries: dict[Attacker, SuiteEntry], budget: int) -> dict[Attacker, AttackSummary]:
    return {a: e.summary(budget) for a, e in entries.items()}


STOPPING = [a for a in Attacker if a is not Attacker.LINEAR_LSTSQ]


@pytest.mark.parametrize("attacker", STOPPING, ids=lambda a: a.value)
def test_an_attacker_stops_at_the_target_with_the_same_result(attacker, gen):
    """Stopping at the target changes nothing the suite reports but the curve after it
    (not computed: NaN) and the best value (the one at the target)."""
    x, y = _problem(gen, [3.0, 2.0, 1.0])
    W = torch.diag(torch.tensor([1.0, 0.7, 0.5], dtype=torch.float64))
    budget, target = 400, 1e-4
    stopped = run_attacker(attacker, x, W, y, target=target, budget=budget)
    full = run_attacker(attacker, x, W, y, target=target, budget=budget, full_curve=True)
    hit = full.steps_to_target
    assert hit is not None and hit < budget, attacker  # the problem is easy enough
    assert stopped.steps_to_target == hit and stopped.setting == full.setting
    assert stopped.curve.shape == full.curve.shape == (budget + 1,)
    assert torch.equal(stopped.curve[: hit + 1], full.curve[: hit + 1])
    assert bool(stopped.curve[hit + 1 :].isnan().all())
    assert not bool(full.curve.isnan().any()) and full.best <= stopped.best <= target


def _metrics_entry(e: SuiteEntry, budget: int) -> dict[str, object]:
    """The ``metrics.json`` entry as it was written before ``AttackSummary`` existed."""

    def steps(o: AttackOutcome) -> int:
        return o.steps_to_target if o.steps_to_target is not None else budget + 1

    def slowdown(raw: AttackOutcome, imm: AttackOutcome) -> float:
        return steps(imm) / max(steps(raw), 1)

    outcomes = (e.harmful_original, e.harmful_immunized, e.benign_original, e.benign_immunized)
    return {
        "harmful_slowdown": slowdown(e.harmful_original, e.harmful_immunized),
        "benign_slowdown": slowdown(e.benign_original, e.benign_immunized),
        "harmful_best": e.harmful_immunized.best,
        "benign_best": e.benign_immunized.best,
        "harmful_best_original": e.harmful_original.best,
        "benign_best_original": e.benign_original.best,
        "harmful_seconds_original": e.harmful_original.seconds_to_target,
        "harmful_seconds_immunized": e.harmful_immunized.seconds_to_target,
        "harmful_steps_original": e.harmful_original.steps_to_target,
        "harmful_steps_immunized": e.harmful_immunized.steps_to_target,
        "benign_steps_original": e.benign_original.steps_to_target,
        "benign_steps_immunized": e.benign_immunized.steps_to_target,
        "harmful_reached": e.harmful_immunized.steps_to_target is not None,
        "setting_immunized": e.harmful_immunized.setting,
        "wall_seconds": sum(o.wall_seconds for o in outcomes),
    }


@pytest.fixture(scope="module")
def small_suite():
    """gd cannot reach the target on the immunized features within the budget; lstsq can."""
    gen = torch.Generator().manual_seed(5)
    x, y = _problem(gen, [10.0, 3.0, 1.0])
    W = torch.diag(torch.tensor([1.0, 1.0, 1e-3], dtype=torch.float64))
    budget = 40
    entries = run_attack_suite(
        ["linear-gd", "linear-adam", "linear-lstsq"],
        benign=(x, y),
        harmful=(x, y),
        weight=W,
        target=1e-4,
        budget=budget,
    )
    return entries, budget


def test_attack_summary_writes_the_metrics_entry_unchanged(small_suite):
    entries, budget = small_suite
    assert entries[Attacker.LINEAR_GD].harmful_immunized.steps_to_target is None  # null fields
    for entry in entries.values():
        summary = entry.summary(budget)
        expected = _metrics_entry(entry, budget)
        out = summary.to_json()
        assert list(out) == list(expected)  # key order is the file's order
        assert json.dumps(out) == json.dumps(expected)
        assert AttackSummary.from_json(json.loads(json.dumps(out))) == summary


def test_worst_case_record_writes_the_metrics_entry_unchanged(small_suite):
    entries, budget = small_suite
    for exclude in (frozenset(), DECOMPOSITION_ATTACKERS):
        record = WorstCase.of(summaries(entries, budget), budget, exclude=exclude)
        out = record.to_json()
        assert list(out) == [
            "attacker_original",
            "steps_original",
            "attacker_immunized",
            "steps_immunized",
            "harmful_slowdown",
        ]
        assert type(out["attacker_original"]) is str and type(out["attacker_immunized"]) is str
        assert out["harmful_slowdown"] == out["steps_immunized"] / max(out["steps_original"], 1)
        back = WorstCase.from_json(json.loads(json.dumps(out)))
        assert back == record and isinstance(back.attacker_original, Attacker)
    assert (
        WorstCase.of(summaries(entries, budget), budget).attacker_immunized is Attacker.LINEAR_LSTSQ
    )
    first_order = WorstCase.of(summaries(entries, budget), budget, exclude=DECOMPOSITION_ATTACKERS)
    assert first_order.attacker_immunized is not Attacker.LINEAR_LSTSQ
    with pytest.raises(ValueError, match="no attacker left"):
        WorstCase.of(entries, budget, exclude=frozenset(Attacker))
