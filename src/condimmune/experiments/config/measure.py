"""How a run is measured: the linear ``attack`` section (the paper's attacker at run time and
the attack suite), the deep ``eval`` section (RIR_θ0 over groups, the in-run probes) and
the deep ``attack`` section (the worst-case suite of ``condimmune attack RUN_DIR``, changed
at attack time with ``--set attack.KEY=VALUE``)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, field_validator

from condimmune.experiments.config.fields import WHERE_NOT_WHAT, _Schema, attacker_list
from condimmune.methods.base import Float


# ----------------------------------------------------------------------------- linear
class AttackConfig(_Schema):
    """The paper's linear-probing attacker at run time (GD with step 1/L to a relative
    suboptimality target), and the attack suite of ``condimmune attack``: which attackers,
    and their step budget (``--set attack.KEY=VALUE`` changes them at attack time)."""

    _prefix: ClassVar[str] = "attack"

    target: Float = Field(default=1e-3, gt=0, lt=1, description="relative suboptimality in (0, 1)")
    budget: int = Field(
        default=2000,
        ge=1,
        le=1_000_000,
        description="steps of the paper's GD attacker's curve, 1–1,000,000 (its step count "
        "is exact whatever the budget)",
    )
    attackers: str = Field(
        default="all",
        description="comma-separated attackers of the suite (condimmune.attacks.registry) or 'all'",
    )
    suite_budget: int = Field(
        default=500,
        ge=1,
        le=1_000_000,
        description="steps per attacker of the suite, 1–1,000,000 (the curves are kept in "
        "memory); an attacker stops at the target unless attack.full_curves",
    )
    full_curves: bool = Field(
        default=False,
        description="run every attacker of the suite for all suite_budget steps (whole "
        "curves in attack_report.md's figures; slower) instead of stopping at the target",
    )

    @field_validator("attackers")
    @classmethod
    def _known_attackers(cls, value: str) -> str:
        from condimmune.attacks.registry import Attacker

        return attacker_list(value, Attacker)


# ------------------------------------------------------------------------------- deep
class DeepEvalConfig(_Schema):
    """RIR_θ0 over ``groups`` random subsets of ``group_size`` samples (Eq. 17–18), and the
    linear-probing attackers on the harmful features."""

    _prefix: ClassVar[str] = "eval"

    groups: int = Field(default=20, ge=2, le=10_000, description="random groups, 2–10,000")
    group_size: int = Field(default=100, ge=3, le=1_000_000, description="samples per group, 3–10⁶")
    attack_target: Float = Field(default=1e-3, gt=0, lt=1, description="in (0, 1)")
    attack_budget: int = Field(
        default=2000, ge=1, le=1_000_000, description="GD steps, 1–1,000,000"
    )
    probe_steps: int = Field(
        default=300, ge=1, le=1_000_000, description="probe steps, 1–1,000,000"
    )
    batch_size: int = Field(default=256, ge=1, le=65_536, description="feature batch, 1–65,536")
    benign_probe_steps: int = Field(
        default=0,
        ge=0,
        le=10_000,
        description="benign linear probe on θ0's and θ_I's features: L-BFGS steps (0 = off)",
    )


class DeepAttackConfig(_Schema):
    """Which attackers, their search budget (Optuna trials per attacker, model and task), step
    budgets, the wall-clock cap per attacker and task, the target and the utility cap."""

    _prefix: ClassVar[str] = "attack"

    attackers: str = Field(
        default="all",
        description="comma-separated deep attackers (condimmune.attacks.registry) or 'all'",
    )
    trials: int = Field(
        default=20,
        ge=1,
        le=10_000,
        description="search trials of each attacker on cached features, per model and task",
    )
    finetune_trials: int = Field(
        default=20,
        ge=1,
        le=10_000,
        description="search trials of each attacker that trains network blocks, per model and task",
    )
    probe_steps: int = Field(
        default=200, ge=1, le=1_000_000, description="steps of a probe on cached features"
    )
    finetune_steps: int = Field(
        default=100, ge=1, le=1_000_000, description="minibatch steps of a fine-tuning attacker"
    )
    finetune_eval_every: int = Field(
        default=10, ge=1, le=1_000_000, description="held-out evaluation period of fine-tuning"
    )
    weight_free_steps: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description="steps of the weight-free attackers (raw-adam, scratch-adam, full-reinit), "
        "searched once per θ0 and shared by its runs; None = probe_steps or finetune_steps",
    )
    raw_probe_steps: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description="steps of raw-adam alone (a linear head on the raw pixels: cheap steps, "
        "so a long budget bounds S_max in seconds); None = as weight_free_steps",
    )
    batch_size: int = Field(default=128, ge=1, le=65_536, description="fine-tuning minibatch")
    finetune_benign: bool = Field(
        default=True, description="attackers that train network blocks also attack the benign task"
    )
    benign_trials: int | None = Field(
        default=None,
        ge=1,
        le=10_000,
        description="at most this many trials per search on the benign task (None: as harmful)",
    )
    seconds: Float = Field(
        default=600.0,
        gt=0,
        description="wall-clock cap of one attacker's search on one task (θ0 and θ_I together)",
    )
    target_fraction: Float = Field(
        default=0.95, gt=0, le=1, description="target = this fraction of θ0's best accuracy"
    )
    utility_cap: Float = Field(
        default=5.0,
        ge=0,
        le=100,
        description="largest benign linear-probe accuracy drop (points) a method may have",
    )
    storage: str | None = Field(
        default=None,
        description="Optuna storage URL; None = sqlite:///<run dir>/attack_studies.db",
    )
    theta0_storage: str | None = Field(
        default=None,
        description=(
            "Optuna storage URL for θ0's searches, shared by the runs of one θ0 (every method "
            "of a seed): each is searched once; None = the run's own storage"
        ),
    )
    skip_dims: int = Field(
        default=2048, ge=1, le=1_000_000, description="skip probe: pooled prefix values per image"
    )
    labels_per_class: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description="the attacker has this many labelled harmful training images per class "
        "(a seeded subset; None: all of them)",
    )
    prefix_curve: bool = Field(
        default=False,
        description="also measure the prefix ceilings C(k) on θ0: the network kept through "
        "each tap and re-initialised after it, trained like full-reinit (searched once per θ0)",
    )
    workers: int = Field(
        default=1,
        ge=0,
        le=1024,
        description="processes that make the attackers' searches at once, one thread each "
        "(the numbers do not depend on it); 0: one per core, 1: all in this process",
        json_schema_extra=WHERE_NOT_WHAT,
    )

    @field_validator("attackers")
    @classmethod
    def _known_attackers(cls, value: str) -> str:
        from condimmune.attacks.registry import DeepAttacker

        return attacker_list(value, DeepAttacker)
