r"""The worst-case yardstick (issue #27, ``../shared/research/worst-case-yardstick.md``): one
target per released model's task, one cost currency across attacker families, and the
from-scratch ceiling.

For a task and the original model θ0, the **target** is fixed before θ_I is attacked:

.. math::  τ = f · \max_{a ∈ A} \max_{j,t ≤ B} a^{θ0}_{a,j}(t)                      (Y1)

over every attacker ``a`` (its trials ``j``, evaluation steps ``t`` up to the common budget
``B`` of its family: an attacker given a longer budget, to measure what reaching τ costs
it, does not move τ). The **cost** of attacker
``a`` on model ``M`` is the floating-point work until its cheapest trial first reaches τ,

.. math::  T_a(M) = F_a + \max(t_a(M, τ), 1) · s_a                                  (Y2)

with ``F_a`` the work done once (feature extraction), ``s_a`` the work of one training step
and ``t_a`` the first evaluation step at which a trial reaches τ (steps reported beside it;
at least one step is charged, as the per-attacker slowdowns count ``max(steps, 1)``, so that
every cost is positive).
An attacker that never reaches τ within its budget ``B_a`` steps gives the lower bound
``T_a(M) > F_a + B_a · s_a``, never a silent cap. The cheapest attacker on ``M``,

.. math::  T^*(M) = \min_a T_a(M),                                                     (Y3)

includes the **weight-free** attackers (probes on the raw inputs, a network trained from
scratch): they do not read ``M``, so they cost the same on every model, and

.. math::  S = T^*(θ_I) / T^*(θ0) \;\le\; S_{max} = T^*(\text{weight-free}) / T^*(θ0). (Y4)

No defence can pass ``S_max``; the fraction of the achievable protection it reached is

.. math::  P = \log S / \log S_{max} \quad (S_{max} > 1).                              (Y5)

Everything here is arithmetic on recorded curves: the searches and the FLOP counts are made
elsewhere (:mod:`condimmune.attacks.cost`).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from condimmune.core.errors import ArgumentError
from condimmune.core.records import JsonRecord

__all__ = [
    "AttackerCurves",
    "Cost",
    "PrefixPoint",
    "Yardstick",
    "attack_cost",
    "ceiling",
    "ceiling_stopped_short",
    "cheapest",
    "original_stopped_short",
    "slowdown_floor",
    "stopped_short",
    "weight_reading_slowdown",
    "yardstick",
]


@dataclass(frozen=True)
class AttackerCurves:
    """One attacker's search on one model and task: the held-out accuracy of each trial at
    ``eval_steps``, the work done once (``fixed_flops``) and per training step of each trial
    (``step_flops``, one per trial: a trial's hyperparameters may change its width), its step
    budget, and whether it reads the released weights."""

    attacker: str
    curves: Sequence[Sequence[float]]
    eval_steps: Sequence[int]
    fixed_flops: float
    step_flops: Sequence[float]
    budget_steps: int
    weight_free: bool = False
    target_steps: int | None = None
    """Only evaluations up to this step may set the target (Eq. Y1): an attacker given a
    longer budget than the common one (the weight-free attackers' ``weight_free_steps``)
    must not raise τ beyond what the common budget reaches, or the extension would decide
    the target it is there to measure the cost of. ``None``: every evaluation."""

    def __post_init__(self) -> None:
        if not self.curves:
            raise ArgumentError(f"attacker {self.attacker!r} has no trials")
        if any(len(c) != len(self.eval_steps) for c in self.curves):
            raise ArgumentError(
                f"attacker {self.attacker!r}: every curve needs one accuracy per evaluation "
                f"step ({len(self.eval_steps)})"
            )
        if len(self.step_flops) != len(self.curves):
            raise ArgumentError(
                f"attacker {self.attacker!r}: give one step_flops per trial ({len(self.curves)})"
            )
        if self.fixed_flops < 0 or min(self.step_flops) <= 0 or self.budget_steps < 0:
            raise ArgumentError(
                f"attacker {self.attacker!r}: FLOPs must be ≥ 0 (per step > 0) and the budget "
                f"≥ 0, got {self.fixed_flops}, {self.step_flops}, {self.budget_steps}"
            )

    @property
    def target_accuracy(self) -> float:
        """The best accuracy that counts for the target: up to ``target_steps``."""
        last = self.target_steps
        kept = [i for i, t in enumerate(self.eval_steps) if last is None or t <= last]
        return max((c[i] for c in self.curves for i in kept), default=0.0)


@dataclass(frozen=True)
class Cost(JsonRecord):
    """``T_a(M)`` (Eq. Y2): FLOPs to the target, or with ``reached`` false a lower bound (the
    budget's FLOPs); ``steps`` the training steps beside it (``None`` when not reached)."""

    attacker: str
    flops: float
    steps: int | None
    reached: bool
    budget_steps: int = 0
    """The steps the attacker was given (0 in records made before it was stored)."""


@dataclass(frozen=True)
class PrefixPoint(JsonRecord):
    """Eq. Y6 (:mod:`condimmune.attacks.prefix_curve`) at one tap: the cost on θ0 of
    training the network kept through the tap and re-initialised after it (a lower bound
    when it did not reach τ), and ``ceiling`` = that cost over ``T*(θ0)``."""

    tap: str
    cost: Cost
    ceiling: float


@dataclass(frozen=True)
class Yardstick(JsonRecord):
    """Eq. Y1–Y5 for one task: the target, the cheapest attacker on θ0, on θ_I and among the
    weight-free ones, ``S``, ``S_max`` and ``P`` (``None`` when ``S_max ≤ 1``), and every
    attacker's cost on both models. ``S`` is a lower bound when ``cheapest_immunized`` did
    not reach the target; ``S_max`` when ``cheapest_weight_free`` did not."""

    target: float
    cheapest_original: Cost
    cheapest_immunized: Cost
    cheapest_weight_free: Cost | None
    s: float
    s_max: float | None
    p: float | None
    original: list[Cost]
    immunized: list[Cost]
    extended: list[str] = field(default_factory=list)
    """The attackers whose θ_I cost was settled with a longer budget
    (:mod:`condimmune.attacks.deep_resolve`): their costs in ``immunized`` come from it."""
    extended_original: list[str] = field(default_factory=list)
    """The attackers whose θ0 cost was settled with a longer budget (the same rule): their
    costs in ``original`` come from it."""
    theta0_settled: bool = False
    """θ0's side went through that rule (false in records made before it, whose ``T*(θ0)``
    may be overstated where :func:`original_stopped_short` names attackers)."""
    cap_steps: int | None = None
    """The longest step budget any attacker is given (``weight_free_steps``): an attacker
    that did not reach τ within it counts as settled at that budget (:func:`stopped_short`);
    ``None`` when there is none."""
    prefix_curve: list[PrefixPoint] | None = None
    """``C(k)`` at every tap but the last (Eq. Y6), when the attack measured it
    (``attack.prefix_curve``)."""


def attack_cost(curves: AttackerCurves, target: float) -> Cost:
    """Eq. Y2 for one attacker on one model: its cheapest trial to ``target``; if no trial
    reaches it, the cheapest trial's whole budget (a lower bound)."""
    hits = [
        (curves.fixed_flops + max(t, 1) * step, t)
        for c, step in zip(curves.curves, curves.step_flops, strict=True)
        if (t := next((t for t, a in zip(curves.eval_steps, c, strict=True) if a >= target), None))
        is not None
    ]
    if hits:
        flops, steps = min(hits)
        return Cost(curves.attacker, flops, steps, True, curves.budget_steps)
    budget = curves.fixed_flops + max(curves.budget_steps, 1) * min(curves.step_flops)
    return Cost(curves.attacker, budget, None, False, curves.budget_steps)


def cheapest(costs: Sequence[Cost]) -> Cost:
    """Eq. Y3: the least cost among those that reached the target; if none did, the least
    lower bound (itself a lower bound on the cheapest)."""
    if not costs:
        raise ArgumentError("no attacker to compare; give at least one")
    reached = [c for c in costs if c.reached]
    return min(reached or costs, key=lambda c: c.flops)


def stopped_short(
    costs: Sequence[Cost], below: float, exact: Collection[str], cap: int | None = None
) -> list[Cost]:
    """The attackers in ``costs`` not settled against the cost ``below``: stopped by their
    step budget without reaching τ after spending less than ``below`` (Eq. Y2's lower
    bound: given more steps, each could still reach τ anywhere above what it spent). Settled
    by construction: the attackers in ``exact`` (closed-form solutions, which more steps
    cannot change) and those that were given ``cap`` steps, the longest budget of all (the
    ceiling's own: "> that budget" is then their reported cost, as everywhere)."""
    return [
        c
        for c in costs
        if not c.reached
        and c.attacker not in exact
        and c.flops < below
        and (cap is None or c.budget_steps < cap)
    ]


def original_stopped_short(stick: Yardstick, exact: Collection[str]) -> list[Cost]:
    """The attackers that :func:`stopped_short` of ``T*(θ0)`` on θ0: given more steps they
    could make ``T*(θ0)`` smaller, which would raise S and S_max alike; none when no
    attacker reached τ on θ0."""
    best = stick.cheapest_original
    if not best.reached:
        return []
    return stopped_short(stick.original, best.flops, exact, stick.cap_steps)


def slowdown_floor(
    stick: Yardstick, exact: Collection[str], identical: Collection[str] = ()
) -> tuple[float, list[str]]:
    """The least ``S`` (Eq. Y4) that the recorded curves allow, and the attackers that set
    it: each attacker that :func:`stopped_short` of ``T*(θ_I)`` on θ_I counted at what it
    spent, as if it had reached τ with its next step — except that an attacker in
    ``identical`` (the weight-free ones: the same cost on both models) cannot take ``S``
    below 1, since what it costs on θ_I it costs on θ0 too. θ0's measured ``T*`` stands:
    more steps can only lower it, which raises ``S``, so the floor stays a floor. Equal to
    ``S`` when no attacker stopped short; below it, ``S`` is only the upper end of what was
    measured, and a longer budget for those attackers decides where the truth lies."""
    best, base = stick.cheapest_immunized, stick.cheapest_original.flops
    short = stopped_short(stick.immunized, best.flops, exact, stick.cap_steps)
    spent = [max(c.flops, base) if c.attacker in identical else c.flops for c in short]
    return min([best.flops, *spent]) / base, [c.attacker for c in short]


def weight_reading_slowdown(
    stick: Yardstick, weight_free: Collection[str]
) -> tuple[float, bool] | None:
    """``S`` restricted to the attackers that read the released weights (a diagnostic beside
    Eq. Y4, not the headline): the cheapest such attack on θ_I over the cheapest on θ0, and
    whether θ_I's reached the target (else the ratio is a lower bound); ``None`` when no
    weight-reading attacker reached the target on θ0."""
    reading = [
        [c for c in costs if c.attacker not in weight_free]
        for costs in (stick.original, stick.immunized)
    ]
    if not reading[0] or not reading[1]:
        return None
    best_original, best_immunized = cheapest(reading[0]), cheapest(reading[1])
    if not best_original.reached:
        return None
    return best_immunized.flops / best_original.flops, best_immunized.reached


def ceiling(stick: Yardstick, attackers: Collection[str]) -> tuple[float, bool] | None:
    """The prefix ceiling ``C(k) / T*(θ0)`` (issue #27): the cheapest attack on θ0 among
    ``attackers`` (those that read at most the released layers up to depth ``k``) over
    the cheapest of all, and whether it reached the target (else a lower bound). With the
    weight-free attackers it is ``S_max``; a defence that leaves those layers as released
    cannot make ``S`` larger. ``None`` when none of ``attackers`` was run."""
    costs = [c for c in stick.original if c.attacker in attackers]
    if not costs:
        return None
    best = cheapest(costs)
    return best.flops / stick.cheapest_original.flops, best.reached


def ceiling_stopped_short(
    stick: Yardstick, attackers: Collection[str], exact: Collection[str]
) -> list[Cost]:
    """The attackers of :func:`ceiling`'s set that :func:`stopped_short` of its value on θ0
    (given more steps, one could make the ceiling lower: it is then only an upper end);
    none when the ceiling itself is a lower bound or was not measured."""
    found = ceiling(stick, attackers)
    if found is None or not found[1]:
        return []
    costs = [c for c in stick.original if c.attacker in attackers]
    limit = found[0] * stick.cheapest_original.flops
    return stopped_short(costs, limit, exact, stick.cap_steps)


def yardstick(
    original: Sequence[AttackerCurves],
    immunized: Sequence[AttackerCurves],
    fraction: float,
    *,
    target: float | None = None,
) -> Yardstick:
    """Eq. Y1–Y5 from every attacker's curves on θ0 (``original``) and θ_I (``immunized``).
    Weight-free attackers may be given on either side or both (their cost is the same); the
    target is ``fraction`` of the best accuracy of any attacker on θ0 (Eq. Y1), or
    ``target`` when given: the τ an earlier yardstick of these models fixed, kept when
    attackers were run again (Eq. R1) so that their longer runs cannot move it."""
    if not 0 < fraction <= 1:
        raise ArgumentError(f"fraction must be in (0, 1], got {fraction}")
    if target is not None and not 0 <= target <= 1:
        raise ArgumentError(f"target must be an accuracy in [0, 1], got {target}")
    if not original or not immunized:
        raise ArgumentError("give the attackers of both models (θ0 and θ_I)")
    free = {c.attacker: c for c in [*original, *immunized] if c.weight_free}
    on_original = {c.attacker: c for c in original} | free
    on_immunized = {c.attacker: c for c in immunized} | free
    if target is None:
        target = fraction * max(c.target_accuracy for c in on_original.values())
    cost_original = [attack_cost(c, target) for c in on_original.values()]
    cost_immunized = [attack_cost(c, target) for c in on_immunized.values()]
    best_original, best_immunized = cheapest(cost_original), cheapest(cost_immunized)
    s = best_immunized.flops / best_original.flops
    best_free = cheapest([c for c in cost_original if c.attacker in free]) if free else None
    s_max = None if best_free is None else best_free.flops / best_original.flops
    p = math.log(s) / math.log(s_max) if s_max is not None and s_max > 1 else None
    return Yardstick(
        target,
        best_original,
        best_immunized,
        best_free,
        s,
        s_max,
        p,
        cost_original,
        cost_immunized,
    )
