"""The worst-case yardstick (attacks/yardstick.py, Eq. Y1–Y5) and its cost currency
(attacks/cost.py): hand counts, constructed defences, and S ≤ S_max as a property."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from condimmune.attacks.cost import forward_flops, linear_probe_step_flops, training_step_flops
from condimmune.attacks.yardstick import (
    AttackerCurves,
    attack_cost,
    ceiling,
    ceiling_stopped_short,
    cheapest,
    slowdown_floor,
    stopped_short,
    weight_reading_slowdown,
    yardstick,
)
from condimmune.core.errors import ArgumentError

STEPS = [0, 10, 20, 30, 40]


def curves(
    name: str, *curve: list[float], step_flops: float = 1.0, fixed: float = 0.0, free: bool = False
) -> AttackerCurves:
    return AttackerCurves(
        name, list(curve), STEPS, fixed, [step_flops] * len(curve), STEPS[-1], free
    )


# --- cost currency ------------------------------------------------------------------------
def test_a_linear_probe_step_is_counted_by_hand():
    batch, features, classes = 32, 64, 10
    head = nn.Linear(features, classes)
    x, y = torch.randn(batch, features), torch.randint(0, classes, (batch,))
    counted = training_step_flops(head, x, lambda out: nn.functional.cross_entropy(out, y))
    assert counted == linear_probe_step_flops(batch, features, classes) == 4 * 32 * 64 * 10
    assert head.weight.grad is None  # left as it was


def test_a_network_step_is_counted_by_hand():
    """Conv (3→4, 3×3, 8×8 output) then a linear layer: forward 2·MACs each; backward the
    weight gradients (2·MACs each) and the input gradient of the second layer only."""
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 8 * 8, 5))
    x = torch.randn(2, 3, 8, 8)
    conv_macs = 2 * 4 * 8 * 8 * 3 * 3 * 3
    linear_macs = 2 * (4 * 8 * 8) * 5
    forward = 2 * (conv_macs + linear_macs)
    assert forward_flops(net, x) == forward
    backward = 2 * conv_macs + 2 * linear_macs + 2 * linear_macs  # weights, then input of fc
    assert training_step_flops(net, x, lambda out: out.square().sum()) == forward + backward


@pytest.mark.parametrize(
    ("channels", "out_channels", "groups", "input_grad"),
    [
        pytest.param(8, 8, 8, True, id="depthwise"),
        pytest.param(8, 16, 4, True, id="grouped"),
        pytest.param(8, 16, 1, True, id="dense"),
        pytest.param(8, 8, 8, False, id="depthwise-data-input"),
    ],
)
def test_a_grouped_convolution_step_is_counted_by_hand(channels, out_channels, groups, input_grad):
    """Eq. C1: forward and both gradients 2·N·H'W'·C_out·(C_in/g)·k² each (torch's own
    backward formula counts the weight gradient g times over: 16.5× the forward for a
    depthwise convolution over 32 channels)."""
    conv = nn.Conv2d(channels, out_channels, 3, padding=1, groups=groups, bias=False)
    x = torch.randn(2, channels, 6, 6, requires_grad=input_grad)
    product = 2 * 2 * 6 * 6 * out_channels * (channels // groups) * 3 * 3
    assert forward_flops(conv, x) == product
    passes = 3 if input_grad else 2  # forward, weight gradient, input gradient if needed
    assert training_step_flops(conv, x, lambda out: out.square().sum()) == passes * product


def test_a_mobilenet_block_step_costs_at_most_three_forward_passes():
    """An inverted residual (1×1 expansion, 3×3 depthwise, 1×1 projection): the backward
    pass costs at most twice the forward (it was 9× with the depthwise weight gradient
    counted as a dense one)."""
    from torchvision.models.mobilenetv2 import InvertedResidual

    block = InvertedResidual(16, 16, stride=1, expand_ratio=6)
    x = torch.randn(4, 16, 8, 8, requires_grad=True)
    forward = forward_flops(block.eval(), x)
    step = training_step_flops(block.train(), x, lambda out: out.square().sum())
    assert 2 * forward < step <= 3 * forward


# --- Eq. Y1-Y5 ------------------------------------------------------------------------------
def test_cost_is_the_first_step_of_the_cheapest_trial_or_a_lower_bound():
    a = curves(
        "a", [0.1, 0.5, 0.9, 0.9, 0.9], [0.1, 0.95, 0.95, 0.95, 0.95], step_flops=3.0, fixed=100.0
    )
    cost = attack_cost(a, 0.9)
    assert (cost.steps, cost.flops, cost.reached) == (10, 100.0 + 30.0, True)
    never = attack_cost(a, 0.99)
    assert (never.steps, never.flops, never.reached) == (None, 100.0 + 40 * 3.0, False)
    assert cheapest([never, cost]) == cost
    assert cheapest([never]) == never


def test_a_defence_that_does_nothing_gives_s_of_one():
    same = [curves("probe", [0.2, 0.8, 0.9, 0.9, 0.9]), curves("tune", [0.1, 0.5, 0.7, 0.9, 0.95])]
    free = curves("scratch", [0.1, 0.2, 0.3, 0.95, 0.95], step_flops=50.0, free=True)
    y = yardstick([*same, free], same, 0.95)
    assert y.target == pytest.approx(0.95 * 0.95)
    assert y.s == 1.0 and y.p == 0.0
    assert y.s_max is not None and y.s_max > 1


def test_a_model_no_weight_reading_attacker_can_use_gives_s_max():
    """θ_I as good as a re-initialised network: only the weight-free attackers reach τ."""
    probe = curves("probe", [0.2, 0.9, 0.95, 0.95, 0.95])
    useless = curves("probe", [0.1, 0.1, 0.1, 0.1, 0.1])
    free = curves("scratch", [0.1, 0.3, 0.6, 0.95, 0.95], step_flops=20.0, free=True)
    y = yardstick([probe, free], [useless], 0.9)
    assert y.cheapest_immunized.attacker == "scratch"
    assert y.s == y.s_max and y.p == pytest.approx(1.0)


def test_the_weight_reading_slowdown_leaves_the_weight_free_attackers_out():
    """Raw pixels the cheapest on both models (S = 1), while every weight-reading attacker
    needs twice the steps on θ_I: the diagnostic says 2, a bound when θ_I's never reached."""
    free = curves("raw", [0.1, 0.95, 0.95, 0.95, 0.95], free=True)
    fast = curves("probe", [0.1, 0.2, 0.95, 0.95, 0.95], step_flops=2.0)
    slow = curves("probe", [0.1, 0.2, 0.3, 0.3, 0.95], step_flops=2.0)
    never = curves("probe", [0.1, 0.2, 0.3, 0.3, 0.3], step_flops=2.0)
    y = yardstick([free, fast], [free, slow], 0.95)
    assert y.s == 1.0
    assert weight_reading_slowdown(y, {"raw"}) == (2.0, True)
    bound = weight_reading_slowdown(yardstick([free, fast], [free, never], 0.95), {"raw"})
    assert bound == (2.0, False)  # the whole budget of θ_I's trial: a lower bound
    unused = yardstick([free, never], [free, never], 0.95)  # θ0: no weight-reading route
    assert weight_reading_slowdown(unused, {"raw"}) is None
    assert weight_reading_slowdown(y, {"raw", "probe"}) is None


def test_the_prefix_ceiling_is_the_cheapest_prefix_only_attack_on_theta0():
    """C(prefix) / T*(θ0): the weight-free set gives S_max, every attacker gives 1, a set
    whose attackers never reach τ gives a lower bound, an empty one nothing."""
    free = curves("scratch", [0.1, 0.3, 0.6, 0.95, 0.95], step_flops=20.0, free=True)
    skip = curves("skip", [0.1, 0.5, 0.95, 0.95, 0.95], step_flops=4.0)
    probe = curves("probe", [0.2, 0.95, 0.95, 0.95, 0.95])
    stuck = curves("stuck", [0.1, 0.1, 0.1, 0.1, 0.1], step_flops=3.0)
    y = yardstick([probe, skip, free, stuck], [probe, skip, stuck], 0.9)
    assert ceiling(y, {"scratch"}) == (y.s_max, True) == (60.0, True)
    assert ceiling(y, {"scratch", "skip", "probe", "stuck"}) == (1.0, True)
    assert ceiling(y, {"scratch", "skip"}) == (8.0, True)  # 2 steps × 4 over 1 step × 1
    assert ceiling(y, {"stuck"}) == (12.0, False)  # its whole budget, 40 steps × 3, over 10
    assert ceiling(y, {"nobody"}) is None


def test_an_extended_budget_measures_the_cost_of_the_target_but_does_not_move_it():
    """A weight-free attacker run past the common budget (40 steps here, then 80) reaches
    0.99 late: the target stays 0.9 × θ0's best within the common budget, and its cost is
    where it first reaches that target."""
    steps = [0, 20, 40, 60, 80]
    probe = AttackerCurves("probe", [[0.1, 0.8, 0.9, 0.9, 0.9]], steps, 0.0, [1.0], 40)
    late = [[0.1, 0.3, 0.5, 0.85, 0.99]]
    extended = AttackerCurves("scratch", late, steps, 0.0, [10.0], 80, True, target_steps=40)
    y = yardstick([probe, extended], [probe], 0.9)
    assert y.target == pytest.approx(0.81)
    assert y.cheapest_original.attacker == "probe"
    assert y.cheapest_weight_free is not None and y.cheapest_weight_free.steps == 60
    assert y.s_max == pytest.approx(600.0 / 40.0)
    unguarded = AttackerCurves("scratch", late, steps, 0.0, [10.0], 80, True)
    assert yardstick([probe, unguarded], [probe], 0.9).target == pytest.approx(0.891)


def test_a_target_fixed_earlier_is_kept_when_longer_runs_reach_more():
    """Eq. R1's runs on θ0 may reach a higher accuracy than the search did: the yardstick
    recomputed after them keeps the τ the first one fixed."""
    probe = curves("probe", [0.1, 0.8, 0.9, 0.9, 0.9])
    longer = curves("probe", [0.1, 0.8, 0.9, 0.95, 1.0])
    first = yardstick([probe], [probe], 0.9)
    kept = yardstick([longer], [probe], 0.9, target=first.target)
    assert kept.target == first.target == pytest.approx(0.81)
    assert yardstick([longer], [probe], 0.9).target == pytest.approx(0.9)  # what it would be
    assert kept.cheapest_original == first.cheapest_original


def test_without_weight_free_attackers_there_is_no_ceiling():
    y = yardstick(
        [curves("p", [0.5, 0.9, 0.9, 0.9, 0.9])], [curves("p", [0.5, 0.5, 0.5, 0.5, 0.9])], 1.0
    )
    assert y.cheapest_weight_free is None and y.s_max is None and y.p is None
    assert y.s == 4.0  # step 40 vs step 10


@pytest.mark.parametrize(
    ("make", "message"),
    [
        pytest.param(lambda: curves("x"), "has no trials", id="no-trials"),
        pytest.param(
            lambda: AttackerCurves("x", [[0.1]], STEPS, 0, [1.0], 1), "one accuracy per", id="short"
        ),
        pytest.param(
            lambda: curves("x", [0.1] * 5, step_flops=0.0), "FLOPs must be", id="free-step"
        ),
        pytest.param(
            lambda: yardstick([curves("x", [0.1] * 5)], [], 0.9), "both models", id="empty"
        ),
        pytest.param(
            lambda: yardstick([curves("x", [0.1] * 5)], [curves("x", [0.1] * 5)], 0.0),
            "fraction",
            id="fraction",
        ),
        pytest.param(
            lambda: yardstick([curves("x", [0.1] * 5)], [curves("x", [0.1] * 5)], 0.9, target=2.0),
            "target must be an accuracy",
            id="target",
        ),
    ],
)
def test_bad_arguments_are_refused(make, message):
    with pytest.raises(ArgumentError, match=message):
        make()


_curve = st.lists(st.floats(0.0, 1.0), min_size=len(STEPS), max_size=len(STEPS))


@settings(max_examples=200, deadline=None)
@given(
    original=st.lists(_curve, min_size=1, max_size=3),
    immunized=st.lists(_curve, min_size=1, max_size=3),
    scratch=_curve,
    flops=st.floats(0.1, 1e3),
    fraction=st.floats(0.05, 1.0),
)
def test_s_never_exceeds_the_ceiling(original, immunized, scratch, flops, fraction):
    free = curves("scratch", scratch, step_flops=flops, free=True)
    y = yardstick(
        [curves(f"a{i}", c) for i, c in enumerate(original)] + [free],
        [curves(f"a{i}", c) for i, c in enumerate(immunized)],
        fraction,
    )
    assert y.cheapest_original.reached  # τ ≤ the best accuracy on θ0
    assert y.cheapest_weight_free is not None and y.s_max is not None
    if y.cheapest_weight_free.reached:
        assert y.s <= y.s_max * (1 + 1e-12)
        if y.p is not None and y.s > 0:
            assert y.p <= 1 + 1e-9 or math.isclose(y.s, y.s_max)


@settings(max_examples=200, deadline=None)
@given(
    prefix=st.lists(_curve, max_size=2),
    blocks_original=st.lists(_curve, min_size=1, max_size=2),
    blocks_immunized=st.lists(_curve, min_size=1, max_size=2),
    scratch=_curve,
    fraction=st.floats(0.05, 1.0),
)
def test_a_defence_that_keeps_the_prefix_never_passes_its_ceiling(
    prefix, blocks_original, blocks_immunized, scratch, fraction
):
    """The prefix-only attackers cost the same on θ_I as on θ0 when the prefix is kept, so
    S ≤ C(prefix) ≤ S_max whenever those ceilings were reached; and C ≥ 1."""
    kept = [curves(f"p{i}", c, step_flops=3.0) for i, c in enumerate(prefix)]
    free = curves("scratch", scratch, step_flops=50.0, free=True)
    y = yardstick(
        [*kept, free, *(curves(f"b{i}", c) for i, c in enumerate(blocks_original))],
        [*kept, *(curves(f"b{i}", c) for i, c in enumerate(blocks_immunized))],
        fraction,
    )
    found = ceiling(y, {*(k.attacker for k in kept), "scratch"})
    assert found is not None
    value, reached = found
    if reached:
        assert value >= 1.0 - 1e-12 and y.s <= value * (1 + 1e-12)
        if y.s_max is not None and y.cheapest_weight_free is not None:
            assert value <= y.s_max * (1 + 1e-12)


def test_the_cheapest_trial_counts_not_the_first_to_reach():
    """A wide trial that reaches τ at step 10 costs more than a narrow one at step 20."""
    a = AttackerCurves(
        "mlp", [[0, 0.9, 0.9, 0.9, 0.9], [0, 0, 0.9, 0.9, 0.9]], STEPS, 5.0, [10.0, 2.0], 40
    )
    cost = attack_cost(a, 0.9)
    assert (cost.flops, cost.steps) == (5.0 + 20 * 2.0, 20)
    with pytest.raises(ArgumentError, match="one step_flops per trial"):
        AttackerCurves("mlp", [[0.0] * 5], STEPS, 0.0, [1.0, 2.0], 40)


# --- attackers that stopped short of τ (S open) -------------------------------------------
def test_the_floor_counts_each_attacker_that_stopped_short_at_what_it_spent():
    """On θ_I a probe stops at 40 steps × 1 without reaching τ, below the cheapest θ_I cost (a
    network, 3 steps × 50): S = 150 / 10 is only the upper end, S ≥ 40 / 10. Settled: a
    closed-form attacker, and one given the cap (the longest budget). One that never reached
    τ anywhere still counts (0.2 × 40 = 8 on θ_I: S ≥ 0.8), unless it is the same on both
    models (weight-free): what it costs on θ_I it costs on θ0, so it cannot take S below 1."""
    probe = curves("probe", [0.2, 0.95, 0.95, 0.95, 0.95])
    stuck_probe = curves("probe", [0.2, 0.5, 0.6, 0.7, 0.8])
    tune = curves("tune", [0.1, 0.5, 0.7, 0.95, 0.95], step_flops=5.0)
    lstsq = curves("lstsq", [0.9, 0.9, 0.9, 0.9, 0.9], step_flops=0.5)
    never = curves("never", [0.1, 0.1, 0.1, 0.1, 0.1], step_flops=0.2)
    y = yardstick([probe, tune, lstsq, never], [stuck_probe, tune, lstsq, never], 0.95)
    assert y.cheapest_immunized.attacker == "tune" and y.s == pytest.approx(15.0)
    assert [c.attacker for c in stopped_short(y.immunized, 150.0, {"lstsq"})] == [
        "probe",
        "never",
    ]
    assert slowdown_floor(y, {"lstsq"}) == (pytest.approx(0.8), ["probe", "never"])
    assert slowdown_floor(y, {"lstsq"}, {"never"}) == (pytest.approx(1.0), ["probe", "never"])
    assert stopped_short(y.immunized, 150.0, {"lstsq"}, cap=40) == []  # all given the cap
    assert [c.attacker for c in stopped_short(y.immunized, 150.0, {"lstsq"}, cap=80)] == [
        "probe",
        "never",
    ]
    settled = yardstick([probe, tune], [probe, tune], 0.95)
    assert slowdown_floor(settled, set()) == (settled.s, [])


@settings(max_examples=60, deadline=None)
@given(
    original=st.lists(st.floats(0.0, 1.0), min_size=5, max_size=5),
    immunized=st.lists(st.floats(0.0, 1.0), min_size=5, max_size=5),
    flops=st.floats(0.1, 10.0),
)
def test_the_floor_never_exceeds_s(original, immunized, flops):
    reach = curves("probe", [0.1, 0.95, 0.95, 0.95, 0.95])
    other = curves("other", original, step_flops=flops)
    other_i = curves("other", immunized, step_flops=flops)
    free = curves("scratch", [0.1, 0.3, 0.6, 0.95, 0.95], step_flops=20.0, free=True)
    y = yardstick([reach, other, free], [curves("probe", immunized), other_i], 0.9)
    floor, _ = slowdown_floor(y, set())
    assert floor <= y.s


def test_a_ceiling_is_only_an_upper_end_while_one_of_its_attackers_stopped_short():
    """The prefix set {skip, blocks}: skip reaches τ at 8 × T*(θ0); blocks stopped at 40 steps
    × 0.1 = 4 < 8 without reaching it: given more steps it could be the cheaper one."""
    probe = curves("probe", [0.2, 0.95, 0.95, 0.95, 0.95])
    skip = curves("skip", [0.1, 0.5, 0.95, 0.95, 0.95], step_flops=4.0)
    blocks = curves("blocks", [0.1, 0.2, 0.3, 0.4, 0.5], step_flops=0.1)
    y = yardstick([probe, skip, blocks], [probe, skip, blocks], 0.9)
    assert ceiling(y, {"skip", "blocks"}) == (8.0, True)
    assert [c.attacker for c in ceiling_stopped_short(y, {"skip", "blocks"}, set())] == ["blocks"]
    assert ceiling_stopped_short(y, {"skip", "blocks"}, {"blocks"}) == []  # closed form
    assert ceiling_stopped_short(y, {"blocks"}, set()) == []  # the ceiling is a lower bound
