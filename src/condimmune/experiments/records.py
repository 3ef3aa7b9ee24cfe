"""The typed form of a run's ``metrics.json``: one frozen record per run kind.

``metrics.json`` is ``LinearRunMetrics.to_json()`` or ``DeepRunMetrics.to_json()``, and
reading it back is strict (:class:`~condimmune.core.records.JsonRecord`): a missing field,
an extra field or a value of the wrong type is an error that names the field, so
``condimmune evaluate`` can never call a damaged file a match. The README documents the
fields; the report, the CLI table and the sweep read these records, never raw dicts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from condimmune.attacks.deep_headline import DeepAttackSuite
from condimmune.attacks.suite_records import AttackSummary, SuiteSettings, WorstCase
from condimmune.core.records import JsonRecord, JsonValue
from condimmune.deep.records import GroupRatios
from condimmune.methods.base import OptionValue, method_label

__all__ = [
    "BenignTaskScores",
    "BoundRecord",
    "CheckRecord",
    "DeepAttackRecord",
    "DeepRunMetrics",
    "DeepTrainingRecord",
    "GdPairRecord",
    "GroupRatioPair",
    "KappaPair",
    "LinearAttackRecord",
    "LinearRunMetrics",
    "OriginalImmunized",
    "ProbeCurveRecord",
    "RescalingAttack",
    "RunMetrics",
    "metric_differences",
]


@dataclass(frozen=True)
class OriginalImmunized(JsonRecord):
    """One quantity of the original model and of the immunized one (every record names the
    two models so: for a linear run the original is the identity extractor, raw inputs)."""

    original: float
    immunized: float


@dataclass(frozen=True)
class KappaPair(JsonRecord):
    """One κ (numerical range or paper-compatible) per task, original vs immunized."""

    benign: OriginalImmunized
    harmful: OriginalImmunized


@dataclass(frozen=True)
class BoundRecord(JsonRecord):
    """The RIR ceiling over invertible linear extractors (docs/theory.md)."""

    value: float | None
    unbounded: bool
    reason: str


@dataclass(frozen=True)
class BenignTaskScores(JsonRecord):
    """Held-out benign score (``accuracy`` or ``mse``) and training loss, original (W = I)
    vs immunized."""

    metric: str
    original: float
    immunized: float
    train_loss_original: float
    train_loss_immunized: float


@dataclass(frozen=True)
class RescalingAttack(JsonRecord):
    """The paper's attacker after a rescaling step (standardize or whiten) of the features."""

    steps_original: int
    steps_immunized: int
    harmful_slowdown: float


@dataclass(frozen=True)
class LinearAttackRecord(JsonRecord):
    """The paper's attacker (GD, step 1/L) on both tasks, steps to ``target``."""

    target: float
    steps_original: int
    steps_immunized: int
    harmful_slowdown: float
    benign_steps_original: int
    benign_steps_immunized: int
    benign_slowdown: float
    rescaling_attackers: dict[str, RescalingAttack]


@dataclass(frozen=True)
class CheckRecord(JsonRecord):
    """Def. 3.1: (a) harmful κ ×10, (b) benign κ not larger, (c) benign loss kept
    (``utility_*`` are ``null`` when no benign loss was compared)."""

    immunized: bool
    harmful_ok: bool
    harmful_margin: float
    benign_ok: bool
    benign_margin: float
    utility_ok: bool | None
    utility_gap: float | None


@dataclass(frozen=True)
class LinearRunMetrics(JsonRecord):
    """``metrics.json`` of a linear run (schema in README.md); the attack-suite fields are
    present once ``condimmune attack`` has run (``attack_suite_settings``: since run
    directories record them; an attack of a run without them replaces its attack fields)."""

    experiment: str
    method: str
    seed: int
    rir: float
    kappa: KappaPair
    harmful_ratio: float
    benign_ratio: float
    rir_paper_compatible: float
    kappa_paper_compatible: KappaPair
    rir_bound: BoundRecord
    rir_fraction_of_bound: float | None
    benign_task: BenignTaskScores
    attack: LinearAttackRecord
    immunization_check: CheckRecord
    train_seconds: float
    notes: list[str]
    wall_seconds: float
    attacks: dict[str, AttackSummary] | None = None
    attack_worst_case: WorstCase | None = None
    attack_worst_case_first_order: WorstCase | None = None
    attack_suite_settings: SuiteSettings | None = None
    method_options: dict[str, OptionValue] | None = None
    """The method's options that differ from its defaults (left out when none)."""


@dataclass(frozen=True)
class GroupRatioPair(JsonRecord):
    """RIR_θ0 over random groups (Eq. 17–18) with the honest and the paper-compatible κ."""

    honest: GroupRatios
    paper_compatible: GroupRatios


@dataclass(frozen=True)
class GdPairRecord(JsonRecord):
    """The paper's attacker (GD 1/L) on θ0's and θ_I's harmful features."""

    steps_original: int
    steps_immunized: int
    slowdown: float
    condition_number_original: float
    condition_number_immunized: float


@dataclass(frozen=True)
class ProbeCurveRecord(JsonRecord):
    """The Adam softmax probe (Fig. 3): steps to ``level`` held-out accuracy."""

    level: float
    steps_original: int | None
    steps_immunized: int | None
    slowdown: float
    final_accuracy_original: float
    final_accuracy_immunized: float
    setting_original: str
    setting_immunized: str


@dataclass(frozen=True)
class DeepAttackRecord(JsonRecord):
    gd: GdPairRecord
    gd_whitened: GdPairRecord
    linear_probe: ProbeCurveRecord


@dataclass(frozen=True)
class DeepTrainingRecord(JsonRecord):
    """The immunization's steps; for a whole-network method also how often its guard rolled
    back and the tap adversaries' held-out error at the last step (left out otherwise)."""

    steps: int
    pretrain_steps: int
    resumed_from_step: int | None
    rank_deficient_steps: int
    processes: int
    guard_rollbacks: int | None = None
    last_tap_error: float | None = None


@dataclass(frozen=True)
class DeepRunMetrics(JsonRecord):
    """``metrics.json`` of a deep run (θ0 vs θ_I; docs/deep.md). ``benign_probe``: top-1 of a
    softmax head fitted on each extractor's benign features (``eval.benign_probe_steps``);
    ``prefix_seconds``: time spent on the frozen prefix (``model.cache_prefix``);
    ``attack_suite``: the worst-case attack suite, once ``condimmune attack`` has run."""

    experiment: str
    method: str
    seed: int
    backbone: str
    feature_dim: int
    benign_task: str
    harmful_task: str
    rir_theta0: GroupRatioPair
    rir_theta0_paper_protocol: GroupRatioPair | None
    benign_accuracy: OriginalImmunized
    attack: DeepAttackRecord
    train_seconds: float
    training: DeepTrainingRecord
    wall_seconds: float
    benign_probe: OriginalImmunized | None = None
    prefix_seconds: float | None = None
    attack_suite: DeepAttackSuite | None = None
    method_options: dict[str, OptionValue] | None = None
    """The method's options that differ from its defaults (left out when none): runs of two
    variants of a method are combined apart (``condimmune attack-matrix``)."""

    @property
    def method_label(self) -> str:
        """The method with its changed options: ``name (option=value, …)``."""
        return method_label(self.method, self.method_options)


RunMetrics = LinearRunMetrics | DeepRunMetrics


_TIMINGS = frozenset({"wall_seconds", "train_seconds"})


def metric_differences(
    recomputed: JsonRecord, saved: JsonRecord, *, rel: float = 1e-6
) -> list[str]:
    """Dotted fields whose values differ (numbers beyond ``rel``), including fields present
    on one side only; wall-clock timings are not compared."""
    out: list[str] = []

    def walk(a: JsonValue, b: JsonValue, key: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(a.keys() | b.keys()):
                if k in _TIMINGS:
                    continue
                sub = f"{key}.{k}" if key else k
                if k not in a or k not in b:
                    out.append(sub)
                else:
                    walk(a[k], b[k], sub)
        elif isinstance(a, list) and isinstance(b, list):
            if len(a) != len(b):
                out.append(key)
            else:
                for i, (x, y) in enumerate(zip(a, b, strict=True)):
                    walk(x, y, f"{key}[{i}]")
        elif (
            isinstance(a, int | float)
            and isinstance(b, int | float)
            and not isinstance(a, bool)
            and not isinstance(b, bool)
        ):
            same_nan = math.isnan(a) and math.isnan(b)
            if not (same_nan or math.isclose(a, b, rel_tol=rel, abs_tol=1e-12)):
                out.append(key)
        elif a != b:
            out.append(key)

    walk(saved.to_json(), recomputed.to_json(), "")
    return out
