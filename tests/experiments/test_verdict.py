"""The verdict written from an attack suite's numbers, and the one way lower bounds are
marked (experiments/verdict.py): cases as data."""

from __future__ import annotations

import math

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


# --- the yardstick's ceiling and share (Eq. Y4–Y5) ------------------------------------------


def _stick(s_flops: float, s_reached: bool, free_flops: float, free_reached: bool):
    """θ0's cheapest attacker costs 10 FLOPs; θ_I's and the weight-free one's as given."""
    from condimmune.attacks.yardstick import Cost, Yardstick

    base = Cost("linear-adam", 10.0, 3, True)
    on_immunized = Cost("linear-adam", s_flops, 3 if s_reached else None, s_reached)
    free = Cost("raw-adam", free_flops, 5 if free_reached else None, free_reached)
    s, s_max = s_flops / 10.0, free_flops / 10.0
    p = math.log(s) / math.log(s_max) if s_max > 1 else None
    return Yardstick(0.9, base, on_immunized, free, s, s_max, p, [base, free], [on_immunized])


YARDSTICK_CASES = {
    "both-exact": ((100.0, True, 1000.0, True), "S_max = 100", "P = 0.5"),
    "no-head-start": ((10.0, True, 5.0, True), "S_max = 0.5", "P undefined (S_max ≤ 1"),
    "s-lower-bound": ((100.0, False, 1000.0, True), "S_max = 100", "P ≥ 0.5"),
    "ceiling-lower-bound": ((100.0, True, 1000.0, False), "S_max ≥ 100", "P ≤ 0.5"),
    "ceiling-below-one-unreached": ((10.0, True, 5.0, False), "S_max ≥ 0.5", "P unknown until"),
    "both-bounds": ((100.0, False, 1000.0, False), "S_max ≥ 100", "P unknown (S_max ≥ 100"),
}


@pytest.mark.parametrize("case", YARDSTICK_CASES, ids=list(YARDSTICK_CASES))
def test_the_ceiling_and_share_say_what_is_known(case):
    from condimmune.experiments.verdict import ceiling_text, share_text, yardstick_lines

    args, ceiling, share = YARDSTICK_CASES[case]
    y = _stick(*args)
    assert ceiling_text(y) == ceiling
    assert share_text(y).startswith(share), share_text(y)
    text = " ".join(yardstick_lines(y, 0.95))
    assert ceiling in text and share in text
    assert ("No weight-free attacker reached τ" in text) == (not args[3])


@pytest.mark.parametrize(
    ("cap", "settled", "hint"),
    [
        (None, False, "set `attack.weight_free_steps` to settle them"),
        (800, False, "the record predates settling θ0's side: attack again"),
    ],
    ids=["no-cap", "record-before-the-rule"],
)
def test_an_attacker_short_on_theta0_is_told_how_to_settle_it(cap, settled, hint):
    from dataclasses import replace

    from condimmune.attacks.yardstick import Cost
    from condimmune.experiments.verdict import settle_hint, yardstick_lines

    y = _stick(100.0, True, 1000.0, True)
    cheap = Cost("skip-adam", 5.0, None, False)  # stopped at 5 < T*(θ0) = 10 on θ0
    y = replace(y, original=[*y.original, cheap], cap_steps=cap, theta0_settled=settled)
    assert settle_hint(y).startswith(hint)
    assert f"alike ({settle_hint(y)})." in " ".join(yardstick_lines(y, 0.95))


def test_s_is_called_an_upper_end_while_competent_attackers_stopped_short():
    """A probe that reached τ on θ0 stops short on θ_I below T*(θ_I) = 100: the report, the
    command's line and the prefix ceiling say so; once it is settled (here: extended and
    reached) nothing is said but which attackers were run again."""
    from dataclasses import replace

    from condimmune.attacks.yardstick import Cost
    from condimmune.experiments.verdict import (
        floor_text,
        prefix_ceiling_text,
        theta0_unsettled,
        yardstick_lines,
    )

    y = _stick(100.0, True, 1000.0, True)
    probe = Cost("std-adam", 10.0, 2, True)
    short = Cost("std-adam", 40.0, None, False)
    open_ = replace(y, original=[*y.original, probe], immunized=[*y.immunized, short])
    assert floor_text(open_) == "S ≥ 4 only (1 attacker stopped short of τ)"
    assert "S ≥ 4. A longer budget" in " ".join(yardstick_lines(open_, 0.95))
    assert floor_text(y) == ""
    assert "On θ0" not in " ".join(yardstick_lines(y, 0.95))
    cheap = Cost("skip-adam", 5.0, None, False)  # stopped at 5 < T*(θ0) = 10 on θ0
    text = " ".join(yardstick_lines(replace(y, original=[*y.original, cheap]), 0.95))
    assert "On θ0, 1 attacker(s) stopped at their step budget below T*(θ0)" in text
    assert theta0_unsettled(replace(y, original=[*y.original, cheap])) == [cheap]
    assert theta0_unsettled(y) == []
    dear = Cost("skip-adam", 50.0, None, False)  # spent more than T*(θ0): settled
    assert theta0_unsettled(replace(y, original=[*y.original, dear])) == []
    done = replace(
        open_, immunized=[*y.immunized, Cost("std-adam", 400.0, 300, True)], extended=["std-adam"]
    )
    text = " ".join(yardstick_lines(done, 0.95))
    assert floor_text(done) == "" and "longer budget because they had stopped short" in text
    assert "Run again on θ0" not in text
    settled = replace(done, extended_original=["skip-adam"], theta0_settled=True)
    text = " ".join(yardstick_lines(settled, 0.95))
    assert "Run again on θ0 with a longer budget" in text and "`skip-adam`" in text
    skip = Cost("skip-adam", 20.0, 4, True)  # the prefix ceiling: 2, unless a blocks-reinit
    stuck = Cost("blocks-reinit", 15.0, None, False)  # that stopped at 15 could be cheaper
    assert prefix_ceiling_text(replace(y, original=[*y.original, skip])) == "C(prefix) = 2"
    opened = replace(y, original=[*y.original, skip, stuck])
    assert prefix_ceiling_text(opened) == "C(prefix) ≤ 2 (1 stopped short of τ)"
