"""The linear attack suite's records in ``metrics.json`` and its headline rule: the settings,
one attacker's summary and the worst case over attackers. Kept apart from the suite that
computes them (:mod:`condimmune.attacks.suite`, which needs torch), so that reading or
writing a linear run's metrics never imports torch (issue #30)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from condimmune.attacks.registry import Attacker
from condimmune.core.records import JsonRecord

__all__ = ["DECOMPOSITION_ATTACKERS", "AttackSummary", "SuiteSettings", "WorstCase"]


@dataclass(frozen=True)
class SuiteSettings(JsonRecord):
    """What a linear suite's numbers depend on besides the run (``metrics.json``'s
    ``attack_suite_settings``): the target, the step budget, and whether attackers ran on
    after the target. Results of two attacks merge only under equal settings."""

    target: float
    budget: int
    full_curves: bool = False


@dataclass(frozen=True)
class AttackSummary(JsonRecord):
    """One attacker's entry in ``metrics.json`` (``attacks.<attacker>``): harmful and benign
    task, raw inputs vs immunized features.

    Slowdowns are ``steps(immunized) / max(steps(original), 1)``, where an unreached target counts
    as ``budget + 1`` steps, so a slowdown with ``harmful_reached = False`` is a lower bound.
    ``*_best`` are the lowest relative suboptimalities reached (immunized unless ``_raw``);
    ``*_steps_*`` and ``harmful_seconds_*`` are ``None`` (JSON ``null``) when the target was
    not reached; ``setting_immunized`` is the setting chosen on the harmful immunized run;
    ``wall_seconds`` adds up the four sweeps.
    """

    harmful_slowdown: float
    benign_slowdown: float
    harmful_best: float
    benign_best: float
    harmful_best_original: float
    benign_best_original: float
    harmful_seconds_original: float | None
    harmful_seconds_immunized: float | None
    harmful_steps_original: int | None
    harmful_steps_immunized: int | None
    benign_steps_original: int | None
    benign_steps_immunized: int | None
    harmful_reached: bool
    setting_immunized: str
    wall_seconds: float


DECOMPOSITION_ATTACKERS: frozenset[Attacker] = frozenset(
    {Attacker.LINEAR_LSTSQ, Attacker.WHITEN_GD}
)
"""Attackers that factorize the features (closed-form head, PCA whitening)."""


@dataclass(frozen=True)
class WorstCase(JsonRecord):
    """The attacker's best choice on each side (the report's headline, ``metrics.json``'s
    ``attack_worst_case``): the fastest attacker on raw inputs and its steps to the harmful
    target, the fastest on immunized features and its steps (an unreached target counts as
    ``budget + 1``), and ``harmful_slowdown = steps_immunized / max(steps_original, 1)``.
    """

    attacker_original: Attacker
    steps_original: int
    attacker_immunized: Attacker
    steps_immunized: int
    harmful_slowdown: float

    @classmethod
    def of(
        cls,
        summaries: Mapping[Attacker, AttackSummary],
        budget: int,
        *,
        exclude: frozenset[Attacker] = frozenset(),
    ) -> WorstCase:
        """The worst case over ``summaries`` (runs of ``budget`` steps); ``exclude`` leaves
        some attackers out (e.g. :data:`DECOMPOSITION_ATTACKERS`)."""
        kept = {a: e for a, e in summaries.items() if a not in exclude}
        if not kept:
            raise ValueError("no attacker left to compare")

        def fastest(side: str) -> tuple[Attacker, int]:
            def steps(a: Attacker) -> int:
                s: int | None = getattr(kept[a], f"harmful_steps_{side}")
                return s if s is not None else budget + 1

            best = min(kept, key=steps)
            return best, steps(best)

        raw_attacker, raw_steps = fastest("original")
        imm_attacker, imm_steps = fastest("immunized")
        return cls(
            attacker_original=raw_attacker,
            steps_original=raw_steps,
            attacker_immunized=imm_attacker,
            steps_immunized=imm_steps,
            harmful_slowdown=imm_steps / max(raw_steps, 1),
        )
