"""The deep experiments' ``attack`` section: the worst-case attack suite of
``condimmune attack RUN_DIR`` (:mod:`condimmune.attacks.deep_suite`, docs/attacks.md).

It is stored with the run (``config.yaml``) and can be changed at attack time with
``condimmune attack RUN_DIR --set attack.KEY=VALUE``.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, field_validator

from condimmune.experiments.config.fields import Float, _Schema


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
    skip_dims: int = Field(
        default=2048, ge=1, le=1_000_000, description="skip probe: pooled prefix values per image"
    )

    @field_validator("attackers")
    @classmethod
    def _known_attackers(cls, value: str) -> str:
        from condimmune.attacks.registry import DeepAttacker
        from condimmune.core._choices import parse_choice

        if value.strip() == "all":
            return "all"
        names = [n.strip() for n in value.split(",")]
        for name in names:
            parse_choice(DeepAttacker, name, "attack.attackers entry")
        if len(set(names)) != len(names):
            raise ValueError(f"attack.attackers names an attacker twice: {value!r}")
        return ",".join(names)
