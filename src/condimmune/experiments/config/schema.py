"""The two configuration schemas: a linear experiment's and a deep experiment's sections,
and the ``method`` section whose schema is the options model of ``train.method``."""

from __future__ import annotations

from typing import Any, ClassVar, Self

from pydantic import Field, SerializeAsAny, field_validator, model_validator

from condimmune.deep.canvas import HarmfulImages
from condimmune.experiments.config.data import DataConfig, DeepDataConfig
from condimmune.experiments.config.fields import (
    MAX_SEED,
    WHERE_NOT_WHAT,
    Choice,
    _check_experiment,
    _Schema,
    resolve_method_section,
)
from condimmune.experiments.config.measure import AttackConfig, DeepAttackConfig, DeepEvalConfig
from condimmune.experiments.config.model import ModelConfig
from condimmune.experiments.config.training import DeepTrainConfig, TrainConfig
from condimmune.experiments.registry import Experiment, experiment_spec
from condimmune.methods.base import MethodOptions, ModelFamily, NoOptions


class ExperimentConfig(_Schema):
    """A linear experiment (``mnist-pair``, ``house-price``, ``digits``)."""

    FAMILY: ClassVar[ModelFamily] = ModelFamily.LINEAR

    experiment: Choice = Field(
        default=Experiment.MNIST_PAIR.value, description="a linear experiment"
    )
    seed: int = Field(default=0, ge=0, le=MAX_SEED, description="0 ≤ seed < 2³²")
    threads: int = Field(
        default=1,
        ge=0,
        le=1024,
        description="CPU threads of numpy's BLAS (a linear run never imports torch), set by "
        "the CLI (0: the BLAS's default, all cores). 1 by default: a linear run is thousands "
        "of small ops, and on a busy machine a thread pool per op costs more than it gains "
        "(benchmarks/bench_speed.py, case contention)",
        json_schema_extra=WHERE_NOT_WHAT,
    )
    data: DataConfig = Field(default_factory=lambda: DataConfig())
    train: TrainConfig = Field(default_factory=lambda: TrainConfig())
    method: SerializeAsAny[MethodOptions] = Field(
        default_factory=NoOptions,
        description="the options of train.method (its own schema: condimmune config)",
    )
    attack: AttackConfig = Field(default_factory=lambda: AttackConfig())

    @model_validator(mode="before")
    @classmethod
    def _method_section(cls, data: Any) -> Any:
        return resolve_method_section(data, cls.FAMILY, Experiment.MNIST_PAIR.value)

    @field_validator("experiment")
    @classmethod
    def _linear_experiment(cls, value: str) -> str:
        return _check_experiment(value, cls.FAMILY, "DeepExperimentConfig")


class DeepExperimentConfig(_Schema):
    """A deep experiment (``mnist-cnn``, ``imagenet-*``, ``mobilenet-fashion-mnist``)."""

    FAMILY: ClassVar[ModelFamily] = ModelFamily.DEEP

    experiment: Choice = Field(default=Experiment.MNIST_CNN.value, description="a deep experiment")
    seed: int = Field(default=0, ge=0, le=MAX_SEED, description="0 ≤ seed < 2³²")
    threads: int = Field(
        default=0,
        ge=0,
        le=1024,
        description="CPU threads for torch, set by the CLI (0: torch's default, all cores)",
        json_schema_extra=WHERE_NOT_WHAT,
    )
    model: ModelConfig = Field(default_factory=lambda: ModelConfig())
    data: DeepDataConfig = Field(default_factory=lambda: DeepDataConfig())
    train: DeepTrainConfig = Field(default_factory=lambda: DeepTrainConfig())
    method: SerializeAsAny[MethodOptions] = Field(
        default_factory=NoOptions,
        description="the options of train.method (its own schema: condimmune config)",
    )
    eval: DeepEvalConfig = Field(default_factory=lambda: DeepEvalConfig())
    attack: DeepAttackConfig = Field(default_factory=lambda: DeepAttackConfig())

    @model_validator(mode="before")
    @classmethod
    def _method_section(cls, data: Any) -> Any:
        return resolve_method_section(data, cls.FAMILY, Experiment.MNIST_CNN.value)

    @field_validator("experiment")
    @classmethod
    def _deep_experiment(cls, value: str) -> str:
        return _check_experiment(value, cls.FAMILY, "ExperimentConfig")

    @model_validator(mode="after")
    def _garment_folder(self) -> Self:
        d = self.data
        mnist = d.harmful_images == HarmfulImages.MNIST
        digits = experiment_spec(self.experiment).digit_groups
        if digits and d.harmful_root is not None and mnist:
            raise ValueError(
                f"data.harmful_root={d.harmful_root} is read by {self.experiment} only with "
                "data.harmful_images=fashion-mnist (its Fashion-MNIST folder); unset it or set "
                "data.harmful_images=fashion-mnist"
            )
        return self


Config = ExperimentConfig | DeepExperimentConfig
