r"""Settling ``T*(θ0)`` and ``S`` where the common step budget left them open (issue #27).

Eq. Y3 takes the cheapest attacker that *reached* τ. An attacker that stopped at its step
budget on a model without reaching τ, after spending less than that model's ``T*``, leaves
``T*`` open: given more steps it could still reach τ more cheaply
(:func:`~condimmune.attacks.yardstick.stopped_short`). On a probe the steps cost almost
nothing beside the feature extraction, so its 50-step budget decides little about cost.

Each such attacker that reads the released weights (a weight-free one costs the same on
both models and already has the longest budget) is run again on that model from its
``trials`` most accurate hyperparameter settings of its search there, with a budget of

.. math::  B' = \min\bigl(B_{free},\; \lceil (T^*(M) - F_a) / s_a \rceil\bigr)        (R1)

steps (``B_free`` the weight-free attackers' ``weight_free_steps``; a network's rounded up to
its evaluation interval): just enough to pass ``T*(M)`` in FLOPs, never more than the
ceiling's own budget. Its cost on ``M`` is then Eq. Y2 over those runs. Both sides are
settled by the same rule: on θ0 first (:func:`to_settle_original`; a lower ``T*(θ0)``
raises ``S`` and ``S_max`` alike: a θ0 attacker cut short made every defence look weaker
than it is), then on θ_I (:func:`to_resolve`; a lower ``T*(θ_I)`` lowers ``S``). The
target τ (counted up to the common budget) does not move.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from condimmune.attacks.search import StudyTrials
from condimmune.attacks.yardstick import (
    AttackerCurves,
    Yardstick,
    original_stopped_short,
    slowdown_floor,
)

__all__ = [
    "RESOLVE_TRIALS",
    "extended_curves",
    "extension_steps",
    "resolving_trials",
    "to_resolve",
    "to_settle_original",
]

RESOLVE_TRIALS = 2
"""Hyperparameter settings of an attacker's search on a model run again with the longer
budget."""

Extend = Callable[[str, int, Sequence[int]], AttackerCurves]
"""``(attacker, steps, trial indices) → its curves on the model with that budget``."""


def to_resolve(stick: Yardstick, exact: frozenset[str], identical: frozenset[str]) -> list[str]:
    """The attackers that leave ``S`` open on θ_I (:func:`slowdown_floor`) and can be run
    again on θ_I alone: not those in ``identical`` (the weight-free ones, the same on both
    models)."""
    return [a for a in slowdown_floor(stick, exact, identical)[1] if a not in identical]


def to_settle_original(
    stick: Yardstick, exact: frozenset[str], identical: frozenset[str]
) -> list[str]:
    """The attackers that stopped short of ``T*(θ0)`` on θ0 (:func:`original_stopped_short`),
    less those in ``identical``."""
    short = original_stopped_short(stick, exact)
    return [c.attacker for c in short if c.attacker not in identical]


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
    names: Sequence[str],
    below: float,
    cap: int,
    curves: Mapping[str, AttackerCurves],
    trials: Mapping[str, StudyTrials],
    eval_every: Mapping[str, int],
    extend: Extend,
) -> dict[str, AttackerCurves]:
    """The curves of each attacker of ``names`` on one model, run again by ``extend`` with
    the budget of Eq. R1 to pass the cost ``below`` (that model's ``T*``), capped at ``cap``
    (the weight-free budget); ``eval_every`` per attacker (1 for the probes), ``trials`` its
    search on that model. Attackers whose budget cannot grow are left out."""
    out: dict[str, AttackerCurves] = {}
    for name in names:
        steps = extension_steps(curves[name], below, cap, eval_every[name])
        if steps > curves[name].budget_steps:
            out[name] = extend(name, steps, resolving_trials(trials[name]))
    return out
