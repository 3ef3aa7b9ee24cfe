"""The linear experiments' schema: ``data``, ``train`` and ``attack`` sections."""

from __future__ import annotations

from typing import ClassVar, Self

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from condimmune.experiments.config.fields import (
    MAX_SEED,
    Choice,
    Float,
    StepRule,
    _check_experiment,
    _check_method,
    _Schema,
)
from condimmune.experiments.registry import (
    Experiment,
)
from condimmune.methods.registry import Method


# ------------------------------------------------------------------------------ linear
class DataConfig(_Schema):
    """Where the data comes from and how it is preprocessed (fitted on training rows only).

    ``pca_components``: project both tasks on the top principal components of their
    pooled training rows (0 = raw inputs). ``drop_collinear``: drop columns that are
    exact linear combinations of others (house price). See ``docs/theory.md``. Which keys
    each experiment reads: :mod:`condimmune.experiments.registry`.
    """

    _prefix: ClassVar[str] = "data"

    root: str | None = Field(
        default=None,
        description="mnist-pair: folder of MNIST IDX files (None = packaged subset); "
        "house-price: Kaggle's train.csv; not read by digits",
    )
    benign_digit: int = Field(default=1, description="digit 0–9 of the benign one-vs-rest task")
    harmful_digit: int = Field(
        default=7, description="digit 0–9 of the harmful task, different from benign_digit"
    )
    per_class: int = Field(
        default=300,
        ge=2,
        le=100_000,
        description="training positives (= negatives) per task, 2–100,000",
    )
    test_per_class: int = Field(
        default=100, ge=1, le=100_000, description="held-out positives per task, 1–100,000"
    )
    train_rows: int = Field(
        default=200,
        ge=2,
        le=1_000_000,
        description="house-price training rows per task, 2–1,000,000",
    )
    test_rows: int = Field(
        default=100,
        ge=1,
        le=1_000_000,
        description="house-price held-out rows per task, 1–1,000,000",
    )
    pca_components: int = Field(
        default=0,
        ge=0,
        le=100_000,
        description="principal components kept (0 = raw inputs), ≤ 100,000",
    )
    drop_collinear: bool = Field(default=False, description="drop exactly collinear input columns")

    @model_validator(mode="after")
    def _two_digits(self) -> Self:
        for key, digit in (
            ("data.benign_digit", self.benign_digit),
            ("data.harmful_digit", self.harmful_digit),
        ):
            if not 0 <= digit <= 9:
                raise ValueError(f"{key} must be a digit 0–9, got {digit}")
        if self.benign_digit == self.harmful_digit:
            raise ValueError(
                f"data.benign_digit and data.harmful_digit are both {self.benign_digit}; "
                "choose two different digits"
            )
        return self


class TrainConfig(_Schema):
    """Optimisation settings shared by every method (same budget for all).

    ``benign_weight``/``harmful_weight``: for ``condnum`` and ``r-ill-only``, the fraction
    [0, 1) of the spectral step size (``step_rule``: ``unit`` or ``monotone``, see
    :class:`condimmune.core.step.StepWeighting`) taken by each preconditioned regularizer step.
    """

    _prefix: ClassVar[str] = "train"

    method: Choice = Field(
        default=Method.CONDNUM.value,
        description="a method of condimmune.methods.registry that has a linear version",
    )
    epochs: int = Field(default=30, ge=1, le=10_000, description="passes over the data, 1–10,000")
    batch_size: int = Field(
        default=64, ge=1, le=1_000_000, description="minibatch rows, 1–1,000,000"
    )
    lr: Float = Field(default=1e-3, gt=0, description="learning rate, > 0")
    step_rule: StepRule = Field(default="unit", description="spectral step weighting")
    benign_weight: Float = Field(
        default=0.5, ge=0, lt=1, description="R_well step fraction in [0, 1)"
    )
    harmful_weight: Float = Field(
        default=0.2, ge=0, lt=1, description="R_ill step fraction in [0, 1)"
    )
    benign_ridge: Float = Field(default=1.0, gt=0, description="benign preconditioner ridge, > 0")
    harmful_ridge: Float = Field(
        default=1e-7, gt=0, description="harmful preconditioner ridge, > 0"
    )
    opt_kappa_weight: Float = Field(default=1.0, ge=0, description="opt-kappa's λ, ≥ 0")
    imma_weight: Float = Field(default=1.0, ge=0, description="imma's weight, ≥ 0")
    imma_inner_steps: int = Field(
        default=5, ge=1, le=1_000, description="imma's unrolled attack steps, 1–1000"
    )

    @field_validator("method")
    @classmethod
    def _linear_method(cls, value: str) -> str:
        return _check_method(value, linear=True)


class AttackConfig(_Schema):
    """The linear-probing attacker: GD with step 1/L to a relative suboptimality target."""

    _prefix: ClassVar[str] = "attack"

    target: Float = Field(default=1e-3, gt=0, lt=1, description="relative suboptimality in (0, 1)")
    budget: int = Field(
        default=2000, ge=1, le=1_000_000, description="GD steps at most, 1–1,000,000"
    )


class ExperimentConfig(_Schema):
    """A linear experiment (``mnist-pair``, ``house-price``, ``digits``)."""

    experiment: Choice = Field(
        default=Experiment.MNIST_PAIR.value, description="a linear experiment"
    )
    seed: int = Field(default=0, ge=0, le=MAX_SEED, description="0 ≤ seed < 2³²")
    threads: int = Field(
        default=1,
        ge=0,
        le=1024,
        description="CPU threads for torch, set by the CLI (0: torch's default, all cores). "
        "1 by default: a linear run is thousands of small ops, and on a busy machine a thread "
        "pool per op costs more than it gains (benchmarks/bench_speed.py, case contention)",
    )
    data: DataConfig = Field(default_factory=lambda: DataConfig())
    train: TrainConfig = Field(default_factory=lambda: TrainConfig())
    attack: AttackConfig = Field(default_factory=lambda: AttackConfig())

    @field_validator("experiment")
    @classmethod
    def _linear_experiment(cls, value: str) -> str:
        return _check_experiment(value, deep=False)
