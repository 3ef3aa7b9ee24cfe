r"""Settling ``S`` where the common step budget left it open (issue #27).

Eq. Y3 takes the cheapest attacker that *reached* τ. An attacker that stopped at its step
budget on θ_I without reaching τ, after spending less than ``T*(θ_I)``, leaves ``S`` open:
given more steps it could still reach τ more cheaply than ``T*(θ_I)``
(:func:`~condimmune.attacks.yardstick.slowdown_floor`). On a probe the steps cost almost
nothing beside the feature extraction, so its 50-step budget decides little about cost.

Here each such attacker that reads the released weights (a weight-free one costs the same
on both models) is run again on θ_I from its ``trials`` most accurate hyperparameter
settings of the θ_I search, with a budget of

.. math::  B' = \min\bigl(B_{free},\; \lceil (T^*(θ_I) - F_a) / s_a \rceil\bigr)       (R1)

steps (``B_free`` the weight-free attackers' ``weight_free_steps``; a network's rounded up to
its evaluation interval): just enough to pass ``T*(θ_I)`` in FLOPs, never more than the
ceiling's own budget. Its cost on θ_I is then Eq. Y2 over those runs. Only θ_I is extended,
which can only lower ``S``: the defence is never credited by the extension. θ0's side and
the target τ (counted up to the common budget) stay as they were.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from condimmune.attacks.search import StudyTrials
from condimmune.attacks.yardstick import AttackerCurves, Yardstick, slowdown_floor

__all__ = [
    "RESOLVE_TRIALS",
    "extended_curves",
    "extension_steps",
    "resolving_trials",
    "to_resolve",
]

RESOLVE_TRIALS = 2
"""Hyperparameter settings of an attacker's θ_I search run again with the longer budget."""

Extend = Callable[[str, int, Sequence[int]], AttackerCurves]
"""``(attacker, steps, trial indices) → its curves on θ_I with that budget``."""


def to_resolve(stick: Yardstick, exact: frozenset[str], identical: frozenset[str]) -> list[str]:
    """The attackers that leave ``S`` open (:func:`slowdown_floor`) and can be run again on
    θ_I alone: not those in ``identical`` (the weight-free ones, the same on both models)."""
    return [a for a in slowdown_floor(stick, exact, identical)[1] if a not in identical]


def extension_steps(curves: AttackerCurves, below: float, cap: int, eval_every: int) -> int:
    """Eq. R1: the steps after which ``curves``' attacker has spent at least ``below`` FLOPs
    (its cheapest trial's step cost), at most ``cap``, a multiple of ``eval_every`` when
    under the cap; at least its own budget."""
    step = min(curves.step_flops)
    needed = math.ceil(max(below - curves.fixed_flops, 0.0) / step)
    needed = eval_every * math.ceil(needed / eval_every)
    return max(curves.budget_steps, min(cap, needed))


def resolving_trials(trials: StudyTrials, count: int = RESOLVE_TRIALS) -> list[int]:
    """The indices of ``trials``' ``count`` most accurate settings (best accuracy of the
    curve, then the search objective, then the earlier trial)."""
    order = sorted(
        range(len(trials.curves)),
        key=lambda i: (-max(trials.curves[i]), -trials.objectives[i], i),
    )
    return order[:count]


def extended_curves(
    stick: Yardstick,
    immunized: Mapping[str, AttackerCurves],
    trials: Mapping[str, StudyTrials],
    exact: frozenset[str],
    identical: frozenset[str],
    eval_every: Mapping[str, int],
    extend: Extend,
) -> dict[str, AttackerCurves]:
    """The θ_I curves of every attacker :func:`to_resolve` names, run again by ``extend``
    with the budget of Eq. R1 (capped at ``stick.cap_steps``, the weight-free budget);
    ``eval_every`` per attacker (1 for the probes). Attackers whose budget cannot grow are
    left out."""
    if stick.cap_steps is None:
        raise ValueError("the yardstick has no cap_steps (weight_free_steps) to extend to")
    below, cap = stick.cheapest_immunized.flops, stick.cap_steps
    out: dict[str, AttackerCurves] = {}
    for name in to_resolve(stick, exact, identical):
        curves = immunized[name]
        steps = extension_steps(curves, below, cap, eval_every[name])
        if steps > curves.budget_steps:
            out[name] = extend(name, steps, resolving_trials(trials[name]))
    return out
