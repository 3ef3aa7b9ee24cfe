"""Settling T*(θ0) and S with a longer budget (attacks/deep_resolve.py, Eq. R1) on hand-made
curves."""

from __future__ import annotations

from dataclasses import replace

import pytest

from condimmune.attacks.deep_resolve import (
    extended_curves,
    extension_steps,
    resolving_trials,
    to_resolve,
    to_settle_original,
)
from condimmune.attacks.search import StudyTrials
from condimmune.attacks.yardstick import AttackerCurves, yardstick

STEPS = [0, 10, 20, 30, 40]


def _curves(name, *curve, step=1.0, fixed=0.0, steps=STEPS):
    return AttackerCurves(name, list(curve), list(steps), fixed, [step] * len(curve), steps[-1])


@pytest.mark.parametrize(
    ("below", "cap", "every", "expected"),
    [
        pytest.param(110.0, 1000, 1, 50, id="just-past-the-cost"),
        pytest.param(110.0, 45, 1, 45, id="capped"),
        pytest.param(110.0, 1000, 20, 60, id="rounded-up-to-the-evaluation-interval"),
        pytest.param(5.0, 1000, 1, 40, id="never-below-its-own-budget"),
    ],
)
def test_the_extension_runs_just_past_the_cost_to_settle(below, cap, every, expected):
    curves = _curves("probe", [0.1] * 5, step=2.0, fixed=10.0)  # 10 + 2 × steps
    assert extension_steps(curves, below, cap, every) == expected


def test_the_most_accurate_settings_are_run_again():
    trials = StudyTrials(
        [{"lr": 1.0}, {"lr": 2.0}, {"lr": 3.0}],
        [[0.1, 0.5], [0.1, 0.7], [0.1, 0.7]],
        [0.3, 0.2, 0.4],
        1.0,
        [0, 1, 2],
    )
    assert resolving_trials(trials) == [2, 1]  # 0.7 twice: the higher objective first
    assert resolving_trials(trials, 1) == [2]


def test_an_attacker_that_reaches_tau_with_more_steps_lowers_s_and_nothing_else_moves():
    probe = _curves("probe", [0.2, 0.95, 0.95, 0.95, 0.95])
    short = _curves("probe", [0.2, 0.5, 0.6, 0.7, 0.8])
    tune = _curves("tune", [0.1, 0.5, 0.7, 0.95, 0.95], step=5.0)
    stick = replace(yardstick([probe, tune], [short, tune], 0.95), cap_steps=800)
    assert to_resolve(stick, frozenset(), frozenset()) == ["probe"]
    assert to_resolve(stick, frozenset(), frozenset({"probe"})) == []  # the same on both
    assert stick.s == pytest.approx(15.0)
    trials = {"probe": StudyTrials([{"lr": 1.0}], [short.curves[0]], [0.5], 1.0, [0])}
    calls = []

    def extend(name, steps, picks):
        calls.append((name, steps, list(picks)))
        longer = list(range(0, steps + 1, 10))
        rising = [0.2, 0.5, 0.6, 0.7, 0.8, 0.9] + [0.95] * (len(longer) - 6)
        return _curves(name, rising, steps=longer)

    immunized = {"probe": short, "tune": tune}
    names = to_resolve(stick, frozenset(), frozenset())
    best = stick.cheapest_immunized.flops
    new = extended_curves(names, best, 800, immunized, trials, {"probe": 1}, extend)
    assert calls == [("probe", 150, [0])]  # enough steps to spend T*(θ_I) = 150
    again = yardstick([probe, tune], [new["probe"], tune], 0.95)
    assert again.target == stick.target and again.cheapest_immunized.attacker == "probe"
    assert again.s == pytest.approx(6.0) and again.s < stick.s  # reached at step 60
    assert to_resolve(again, frozenset(), frozenset()) == []
    assert extended_curves(names, best, 40, immunized, trials, {"probe": 1}, extend) == {}


def test_an_attacker_cut_short_on_theta0_is_settled_and_s_rises_with_s_max():
    """On θ0 the probe stops at 40 steps below the fine-tuning's cost, which sets T*(θ0) =
    150; the probe reaches τ at step 60 given more steps, so T*(θ0) falls to 60: S and S_max
    both rise by the same factor, τ stays."""
    short = _curves("probe", [0.2, 0.5, 0.6, 0.7, 0.8])
    tune = _curves("tune", [0.1, 0.5, 0.7, 0.95, 0.95], step=5.0)
    slow = _curves("tune", [0.1, 0.5, 0.7, 0.8, 0.95], step=5.0)
    free = replace(_curves("scratch", [0.1, 0.2, 0.5, 0.9, 0.95], step=20.0), weight_free=True)
    stick = replace(yardstick([short, tune, free], [short, slow, free], 0.95), cap_steps=800)
    assert stick.cheapest_original.attacker == "tune"
    assert to_settle_original(stick, frozenset(), frozenset()) == ["probe"]
    assert to_settle_original(stick, frozenset({"probe"}), frozenset()) == []  # closed form
    assert to_settle_original(stick, frozenset(), frozenset({"probe"})) == []  # weight-free
    capped = replace(stick, cap_steps=40)  # it had the longest budget already: settled
    assert to_settle_original(capped, frozenset(), frozenset()) == []
    longer = list(range(0, 101, 10))
    rising = _curves("probe", [0.2, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.95, 0.95, 0.95, 0.95],
                     steps=longer)  # fmt: skip
    again = yardstick([rising, tune, free], [short, slow, free], 0.95)
    assert again.target == stick.target and again.cheapest_original.flops == pytest.approx(60)
    assert again.s == pytest.approx(stick.s * 150 / 60)
    assert again.s_max == pytest.approx(stick.s_max * 150 / 60)
    unreached = replace(stick, cheapest_original=replace(stick.cheapest_original, reached=False))
    assert to_settle_original(unreached, frozenset(), frozenset()) == []
