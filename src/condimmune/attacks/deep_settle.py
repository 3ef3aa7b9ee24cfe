"""The suite's settling runs (Eq. R1 of :mod:`condimmune.attacks.deep_resolve`): the
attackers that stopped short of a model's ``T*`` run again on that model with a longer
budget, θ0 first, then θ_I, and the yardstick recomputed after each side.

Each run is stored beside its model's search (:func:`~condimmune.attacks.search.replayed`,
a study named after the search, the budget and the rule): θ0's in θ0's storage, so every
method's run of one θ0 settles it once and all of them read the same ``T*(θ0)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from condimmune.attacks.deep_inputs import ReleasedModel, Task
from condimmune.attacks.deep_objective import (
    attacker_objective,
    harmful_curves,
    step_budget,
    studies,
)
from condimmune.attacks.deep_records import DeepAttackOptions
from condimmune.attacks.deep_resolve import (
    Extend,
    extended_curves,
    to_resolve,
    to_settle_original,
)
from condimmune.attacks.registry import CLOSED_FORM, DEEP_ATTACKERS, WEIGHT_FREE, DeepAttacker
from condimmune.attacks.search import Study, StudyTrials, replayed
from condimmune.attacks.yardstick import AttackerCurves, Yardstick, yardstick
from condimmune.core.progress import Progress, ProgressCallback, report

__all__ = ["SETTLE_RULE", "settled"]

SETTLE_RULE = 2
"""The version of the settling rule (which settings run again, how they are seeded), part
of the stored runs' study names: raise it when the rule changes."""


def settled(
    stick: Yardstick,
    costs: tuple[list[AttackerCurves], list[AttackerCurves]],
    searches: Mapping[str, tuple[StudyTrials, StudyTrials]],
    models: tuple[ReleasedModel, ReleasedModel],
    options: DeepAttackOptions,
    *,
    on_progress: ProgressCallback | None = None,
) -> Yardstick:
    """``stick`` (with ``cap_steps`` set) after the attackers that stopped short of
    ``T*(θ0)`` on θ0 were run again there, then those that stopped short of ``T*(θ_I)`` on
    θ_I (Eq. R1), Eq. Y2–Y5 recomputed at ``stick``'s τ (the longer runs cannot move it);
    ``costs`` and ``searches`` (harmful task) per attacker on θ0 and θ_I, ``models`` θ0 and
    θ_I. ``on_progress`` hears each run (task ``"settling T*"``)."""
    if stick.cap_steps is None:
        raise ValueError("the yardstick has no cap_steps (weight_free_steps) to extend to")
    cap, stick = stick.cap_steps, replace(stick, theta0_settled=True)
    first = to_settle_original(stick, CLOSED_FORM, WEIGHT_FREE)
    # θ_I's list does not move with θ0's runs (T*(θ_I) reads θ_I's curves alone): the total
    # is known before any run
    total = len(first) + len(to_resolve(stick, CLOSED_FORM, WEIGHT_FREE))
    done = [0]

    def tell(name: str | None) -> None:
        if name is None:
            report(on_progress, Progress("settling T*", total, total, unit="attacker"))
            return
        report(on_progress, Progress("settling T*", done[0], total, name, "attacker"))
        done[0] += 1

    every = {
        c.attacker: step_budget(DEEP_ATTACKERS[DeepAttacker(c.attacker)], options).eval_every
        for side in costs
        for c in side
    }
    sides = list(costs)
    extended: list[list[str]] = [[], []]
    for side in (0, 1):
        names = first if side == 0 else to_resolve(stick, CLOSED_FORM, WEIGHT_FREE)
        best = stick.cheapest_original if side == 0 else stick.cheapest_immunized
        by_name = {c.attacker: c for c in sides[side]}
        found = {n: pair[side] for n, pair in searches.items()}
        run = _extender(side, models[side], found, options, tell)
        new = extended_curves(names, best.flops, cap, by_name, found, every, run)
        if not new:
            continue
        sides[side] = [new.get(c.attacker, c) for c in sides[side]]
        extended[side] = sorted(new)
        stick = replace(
            yardstick(sides[0], sides[1], options.target_fraction, target=stick.target),
            cap_steps=cap,
            extended_original=extended[0],
            extended=extended[1],
            theta0_settled=True,
        )
    if total:
        tell(None)
    return stick


def _extender(
    side: int,
    model: ReleasedModel,
    searches: Mapping[str, StudyTrials],
    options: DeepAttackOptions,
    tell: Callable[[str | None], None],
) -> Extend:
    """Eq. R1's runs of one model (``side`` 0: θ0, 1: θ_I), stored beside its search."""

    def extend(name: str, steps: int, picks: Sequence[int]) -> AttackerCurves:
        tell(name)
        attacker = DeepAttacker(name)
        spec = DEEP_ATTACKERS[attacker]
        budget = replace(step_budget(spec, options), steps=steps)
        objective = attacker_objective(attacker, spec, model, Task.HARMFUL, budget, options)
        search = studies(attacker, Task.HARMFUL, options)[side]
        where = Study(search.storage, f"{search.name}/settled-r{SETTLE_RULE}-{steps}")
        found = searches[name]
        trials = replayed(where, [(found.numbers[i], found.params[i]) for i in picks], objective)
        curves = harmful_curves(attacker, model, trials, budget.eval_steps, options)
        assert curves is not None  # the yardstick was measured: the FLOPs are known
        return curves

    return extend
