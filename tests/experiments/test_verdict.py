"""The verdict written from an attack suite's numbers, and the one way lower bounds are
marked (experiments/verdict.py): cases as data."""

from __future__ import annotations

import pytest

from condimmune.experiments.verdict import (
    HOLD_FACTOR,
    classify,
    slowdown_text,
    steps_text,
    verdict_text,
)

SLOWDOWNS = {
    "held": (3.0, False),  # θ_I never reached the target: a lower bound
    "slowed": (HOLD_FACTOR, True),
    "undone": (1.5, True),
    "neither": (1.0, False),  # reached on neither model
}


def test_classify_sorts_attackers_by_outcome_and_leaves_out_the_inconclusive():
    v = classify(SLOWDOWNS, inconclusive=["neither"])
    assert v.held == [("held", 3.0)]
    assert v.slowed == [("slowed", HOLD_FACTOR)]
    assert v.undone == [("undone", 1.5)]
    assert classify(SLOWDOWNS).held == [("held", 3.0), ("neither", 1.0)]


@pytest.mark.parametrize(
    ("utility", "expected"),
    [
        pytest.param(None, None, id="no-utility"),
        pytest.param((1.0, 5.0), "changes by -1.0 points: within the 5-point", id="within"),
        pytest.param((6.5, 5.0), "changes by -6.5 points: **fails** the 5-point", id="fails"),
        pytest.param((0.04, 5.0), "changes by +0.0 points", id="no-minus-zero"),
    ],
)
def test_verdict_text(utility, expected):
    text = verdict_text("`m`", SLOWDOWNS, ("undone", 1.5, True), utility, ["neither"])
    assert text.startswith("**Verdict for `m`.** The worst case over 4 attackers is `undone`")
    assert "Held within the budget (θ_I never reaches the target) against: `held` (3×, lower" in (
        text
    )
    assert "Undone (less than 2× slower) by: `undone` (1.5×)." in text
    assert "no evidence either way: `neither`." in text
    if expected is None:
        assert "utility" not in text
    else:
        assert expected in text


@pytest.mark.parametrize(
    ("steps", "budget", "shown"),
    [(None, 500, "> 500"), (392, 500, "392"), (None, 10_000, "> 10,000"), (0, 5, "0")],
)
def test_unreached_steps_are_shown_as_more_than_the_budget(steps, budget, shown):
    assert steps_text(steps, budget) == shown


@pytest.mark.parametrize(
    ("slowdown", "reached", "shown"), [(2.5, True, "2.5"), (2.5, False, "≥ 2.5")]
)
def test_a_lower_bound_slowdown_is_marked(slowdown, reached, shown):
    assert slowdown_text(slowdown, reached) == shown
