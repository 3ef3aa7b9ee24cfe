"""The ``train`` section of both families: the method's name and the settings every method
shares (a method's own options are the ``method`` section)."""

from __future__ import annotations

from typing import ClassVar, Self

from pydantic import Field, field_validator, model_validator

from condimmune.experiments.config.fields import (
    WHERE_NOT_WHAT,
    Accelerator,
    Choice,
    Logger,
    Precision,
    Strategy,
    _check_method,
    _Schema,
)
from condimmune.methods.base import Float, ModelFamily
from condimmune.methods.registry import Method


# ----------------------------------------------------------------------------- linear
class TrainConfig(_Schema):
    """The method's name and the optimisation settings shared by every method (same budget
    for all); the method's own options are the config's ``method`` section."""

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

    @field_validator("method")
    @classmethod
    def _linear_method(cls, value: str) -> str:
        return _check_method(value, ModelFamily.LINEAR)


# ------------------------------------------------------------------------------- deep
class DeepTrainConfig(_Schema):
    """Immunization of the backbone's last blocks (:func:`condimmune.deep.trainer.immunize`):
    the method's name and the settings every method shares (its own options are the config's
    ``method`` section). With ``normalize_covariance`` a penalty sees each batch covariance
    as ``S · k / tr S`` (scale-free, see docs/deep.md), otherwise the raw ``S`` as in the
    paper."""

    _prefix: ClassVar[str] = "train"

    method: Choice = Field(
        default=Method.CONDNUM.value,
        description="a method of condimmune.methods.registry that has a deep version",
    )
    pretrain_epochs: int = Field(
        default=0,
        ge=0,
        le=10_000,
        description="pre-training epochs in the run (0 = none), ≤ 10,000",
    )
    pretrain_lr: Float = Field(default=1e-3, gt=0, description="pre-training learning rate, > 0")
    pretrain_batch_size: int = Field(default=64, ge=1, le=65_536, description="1–65,536")
    fit_head_steps: int = Field(
        default=0,
        ge=0,
        le=10_000,
        description="θ0's head: L-BFGS steps of a softmax head on the frozen benign features "
        "(0 = keep the weights file's head), ≤ 10,000",
    )
    epochs: int = Field(default=3, ge=0, le=10_000, description="immunization epochs, 0–10,000")
    batch_size: int = Field(
        default=64,
        ge=2,
        le=65_536,
        description="global batch, 2–65,536, divisible by devices",
    )
    lr: Float = Field(default=1e-5, gt=0, description="learning rate, > 0")
    momentum: Float = Field(default=0.9, ge=0, lt=1, description="SGD momentum in [0, 1)")
    weight_decay: Float = Field(default=2e-5, ge=0, description="≥ 0")
    label_smoothing: Float = Field(default=0.1, ge=0, lt=1, description="in [0, 1)")
    normalize_covariance: bool = Field(
        default=False, description="regularize S·k/tr S instead of S"
    )
    max_steps: int = Field(
        default=0,
        ge=0,
        le=100_000_000,
        description="stop after this many optimizer steps in total (0 = no cap), ≤ 10⁸",
    )
    precision: Precision = Field(default="32-true", description="Lightning precision")
    accelerator: Accelerator = Field(default="cpu", description="Lightning accelerator")
    devices: int = Field(default=1, ge=1, le=1024, description="processes/devices, 1–1024")
    strategy: Strategy = Field(default="auto", description="Lightning strategy")
    checkpoint_every: int = Field(
        default=50,
        ge=1,
        le=100_000_000,
        description="optimizer steps between checkpoints, ≤ 10⁸",
        json_schema_extra=WHERE_NOT_WHAT,
    )
    logger: Logger = Field(
        default="csv",
        description="Lightning logger: csv or tensorboard",
        json_schema_extra=WHERE_NOT_WHAT,
    )

    @field_validator("method")
    @classmethod
    def _deep_method(cls, value: str) -> str:
        return _check_method(value, ModelFamily.DEEP)

    @model_validator(mode="after")
    def _divisible_batch(self) -> Self:
        if self.batch_size % self.devices:
            raise ValueError(
                f"train.batch_size={self.batch_size} is the global batch and must be divisible "
                f"by train.devices={self.devices}"
            )
        return self
