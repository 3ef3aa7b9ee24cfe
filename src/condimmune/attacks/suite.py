"""The attack suite: every attacker (:mod:`condimmune.attacks.attackers`) on both tasks,
raw inputs vs immunized features, its ``metrics.json`` records and the worst case over
attackers (the attacker's best choice, the report's headline)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from condimmune.attacks.attackers import AttackOutcome, run_attacker
from condimmune.attacks.registry import Attacker
from condimmune.attacks.suite_records import AttackSummary
from condimmune.core._choices import parse_choice
from condimmune.core.progress import Progress, ProgressCallback, report, steps_within

__all__ = ["SuiteEntry", "run_attack_suite"]


@dataclass(frozen=True)
class SuiteEntry:
    """One attacker on both tasks, raw inputs vs immunized features."""

    harmful_original: AttackOutcome
    harmful_immunized: AttackOutcome
    benign_original: AttackOutcome
    benign_immunized: AttackOutcome

    @staticmethod
    def _slowdown(original: AttackOutcome, imm: AttackOutcome, budget: int) -> float:
        steps_original = (
            original.steps_to_target if original.steps_to_target is not None else budget + 1
        )
        steps_imm = imm.steps_to_target if imm.steps_to_target is not None else budget + 1
        return steps_imm / max(steps_original, 1)

    def summary(self, budget: int) -> AttackSummary:
        """The ``metrics.json`` entry for runs of ``budget`` steps (see :class:`AttackSummary`)."""
        return AttackSummary(
            harmful_slowdown=self._slowdown(self.harmful_original, self.harmful_immunized, budget),
            benign_slowdown=self._slowdown(self.benign_original, self.benign_immunized, budget),
            harmful_best=self.harmful_immunized.best,
            benign_best=self.benign_immunized.best,
            harmful_best_original=self.harmful_original.best,
            benign_best_original=self.benign_original.best,
            harmful_seconds_original=self.harmful_original.seconds_to_target,
            harmful_seconds_immunized=self.harmful_immunized.seconds_to_target,
            harmful_steps_original=self.harmful_original.steps_to_target,
            harmful_steps_immunized=self.harmful_immunized.steps_to_target,
            benign_steps_original=self.benign_original.steps_to_target,
            benign_steps_immunized=self.benign_immunized.steps_to_target,
            harmful_reached=self.harmful_immunized.steps_to_target is not None,
            setting_immunized=self.harmful_immunized.setting,
            wall_seconds=sum(
                o.wall_seconds
                for o in (
                    self.harmful_original,
                    self.harmful_immunized,
                    self.benign_original,
                    self.benign_immunized,
                )
            ),
        )


def run_attack_suite(
    attackers: list[Attacker | str],
    *,
    benign: tuple[Tensor, Tensor],
    harmful: tuple[Tensor, Tensor],
    weight: Tensor,
    target: float = 1e-3,
    budget: int = 500,
    seed: int = 0,
    full_curves: bool = False,
    on_progress: ProgressCallback | None = None,
) -> dict[Attacker, SuiteEntry]:
    """Every attacker on both tasks (``(x, y)`` pairs), original (the identity
    extractor, raw inputs) vs immunized (``weight``); each stops at ``target`` unless
    ``full_curves`` (:func:`~condimmune.attacks.attackers.run_attacker`). ``on_progress``
    hears the attackers (task ``"attackers"``) and, at depth 1, each one's steps."""
    chosen = [parse_choice(Attacker, a, "attacker") for a in attackers]
    if not chosen:
        raise ValueError("name at least one attacker")
    identity = torch.eye(weight.shape[1], dtype=weight.dtype, device=weight.device)
    # one tiny run first, so one-time start-up costs do not land in the first timing; on
    # its own small full-rank inputs (a slice of the data can be all zero: raw-pixel borders)
    x0 = harmful[0]
    d = min(4, weight.shape[1])
    dtype, device = x0.dtype, x0.device
    warm = torch.linspace(1.0, 2.0, 8 * d, dtype=dtype, device=device).reshape(8, d)
    warm = warm + torch.eye(8, d, dtype=dtype, device=device)
    y_warm = torch.linspace(0.0, 1.0, 8, dtype=dtype, device=device)
    run_attacker(chosen[0], warm, identity[:d, :d], y_warm, budget=2)
    out: dict[Attacker, SuiteEntry] = {}
    for done, attacker in enumerate(chosen):
        report(on_progress, Progress("attackers", done, len(chosen), attacker.value, "attacker"))
        runs: dict[str, AttackOutcome] = {}
        for task, (x, y) in (("harmful", harmful), ("benign", benign)):
            for which, w in (("original", identity), ("immunized", weight)):
                item = f"{task}, {'raw inputs' if which == 'original' else which}"
                runs[f"{task}_{which}"] = run_attacker(
                    attacker,
                    x,
                    w,
                    y,
                    target=target,
                    budget=budget,
                    seed=seed,
                    full_curve=full_curves,
                    on_progress=steps_within(on_progress, attacker.value, 4, len(runs), item),
                )
        out[attacker] = SuiteEntry(**runs)
    report(on_progress, Progress("attackers", len(chosen), len(chosen), unit="attacker"))
    return out
