"""The deep experiments' schema: ``model``, ``data``, ``train`` and ``eval`` sections."""

from __future__ import annotations

from typing import ClassVar, Self

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from condimmune.experiments.config.deep_attack import DeepAttackConfig
from condimmune.experiments.config.fields import (
    MAX_SEED,
    Accelerator,
    Choice,
    Float,
    Logger,
    Precision,
    Strategy,
    _check_experiment,
    _check_method,
    _Schema,
)
from condimmune.experiments.config.linear import ExperimentConfig
from condimmune.experiments.registry import (
    Experiment,
)
from condimmune.methods.registry import Method


# -------------------------------------------------------------------------------- deep
class ModelConfig(_Schema):
    """The deep backbone (:mod:`condimmune.deep.backbones`) and where its weights come from."""

    _prefix: ClassVar[str] = "model"

    backbone: Choice = Field(
        default="small-cnn", description="a condimmune.deep.backbones.Backbone"
    )
    weights: str | None = Field(
        default=None,
        description="a local safetensors file or torch state_dict; 'imagenet' = the installed "
        "ImageNet checkpoint (mobilenet-v2); None = seeded random init",
    )
    image_size: int = Field(default=28, ge=4, le=1024, description="input side in pixels, 4–1024")
    trainable_blocks: int = Field(
        default=2,
        ge=0,
        le=17,
        description="mobilenet-v2: inverted-residual blocks trained (plus the final conv), 0–17",
    )
    cache_prefix: bool = Field(
        default=False,
        description="run the frozen prefix once per image (turns training augmentation off)",
    )
    cache_dir: str | None = Field(
        default=None,
        description="weights and prefix cache; None = $CONDIMMUNE_CACHE_DIR or "
        "$XDG_CACHE_HOME/condimmune (~/.cache/condimmune)",
    )

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, value: str) -> str:
        from condimmune.core._choices import parse_choice
        from condimmune.deep.backbones import Backbone

        return parse_choice(Backbone, value, "model.backbone").value

    @model_validator(mode="after")
    def _blocks_of_mobilenet(self) -> Self:
        default = type(self).model_fields["trainable_blocks"].default
        if self.backbone != "mobilenet-v2" and self.trainable_blocks != default:
            raise ValueError(
                f"model.trainable_blocks is read by backbone mobilenet-v2 only, not {self.backbone}"
            )
        if self.weights == "imagenet" and self.backbone != "mobilenet-v2":
            raise ValueError(
                "model.weights=imagenet names the installed mobilenet-v2 checkpoint; give "
                f"{self.backbone} a weights file"
            )
        return self


def _digit_group(text: str, key: str) -> set[int]:
    """Mirror of :func:`condimmune.deep.images.parse_digits` (without importing torch)."""
    digits = [int(c) for c in text if c in "0123456789"]
    if not digits or any(c not in "0123456789, " for c in text):
        raise ValueError(f"{key} must list digits, e.g. '01234' or '0,1,2', got {text!r}")
    if len(set(digits)) != len(digits):
        raise ValueError(f"{key} lists a digit twice: {text!r}")
    if len(digits) < 2:
        raise ValueError(f"{key} needs at least two digits (a classification task), got {text!r}")
    return set(digits)


class DeepDataConfig(_Schema):
    """Deep-experiment data. ``mnist-cnn``: the packaged MNIST subset (or IDX files in
    ``root``) split into two digit groups. ImageNet experiments: ``root`` is the ImageNet
    folder (pre-training / benign task), ``harmful_root`` the Cars or Country211 folder.
    ``mobilenet-fashion-mnist``: ``root`` the Fashion-MNIST IDX folder, ``harmful_root`` MNIST
    IDX files (None = the packaged subset)."""

    _prefix: ClassVar[str] = "data"

    root: str | None = Field(
        default=None,
        description="mnist-cnn: MNIST IDX folder (None = packaged); ImageNet folder; "
        "Fashion-MNIST IDX folder",
    )
    harmful_root: str | None = Field(
        default=None,
        description="imagenet-*: the Stanford Cars or Country211 folder; "
        "mobilenet-fashion-mnist: MNIST IDX folder (None = packaged subset)",
    )
    benign_digits: str = Field(
        default="01234", description="mnist-cnn: benign digit group, e.g. 01234"
    )
    harmful_digits: str = Field(default="56789", description="mnist-cnn: harmful digit group")
    train_per_class: int = Field(
        default=400, ge=1, le=100_000, description="mnist-cnn: training images per digit, 1–100,000"
    )
    test_per_class: int = Field(
        default=100,
        ge=1,
        le=100_000,
        description="mnist-cnn, mobilenet-fashion-mnist: held-out images per digit, 1–100,000",
    )
    max_train_images: int = Field(
        default=0,
        ge=0,
        le=10_000_000,
        description="imagenet-*, mobilenet-*: seeded subsample of each training split "
        "(0 = all), ≤ 10⁷",
    )
    max_test_images: int = Field(
        default=0,
        ge=0,
        le=10_000_000,
        description="imagenet-*: same for the test splits; mobilenet-*: the benign test set, ≤ 10⁷",
    )
    num_workers: int = Field(default=0, ge=0, le=256, description="data-loader processes, 0–256")

    @model_validator(mode="after")
    def _digit_groups(self) -> Self:
        benign = _digit_group(self.benign_digits, "data.benign_digits")
        harmful = _digit_group(self.harmful_digits, "data.harmful_digits")
        if benign & harmful:
            raise ValueError(
                "data.benign_digits and data.harmful_digits overlap: "
                f"{sorted(benign & harmful)} in both"
            )
        return self


class DeepTrainConfig(_Schema):
    """Immunization of the backbone's last blocks (:func:`condimmune.deep.trainer.immunize`).

    ``benign_weight``/``harmful_weight`` are λ_P and λ_H of the loss
    ``CE + λ_P R_well(S_P) + λ_H R_ill(S_H)`` on the gathered batch covariances; with
    ``normalize_covariance`` the regularizers see ``S · k / tr S`` (scale-free, see
    docs/deep.md), otherwise the raw ``S`` as in the paper.
    """

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
    benign_weight: Float = Field(default=5e-5, ge=0, description="λ_P, ≥ 0")
    harmful_weight: Float = Field(default=2e6, ge=0, description="λ_H, ≥ 0")
    normalize_covariance: bool = Field(
        default=False, description="regularize S·k/tr S instead of S"
    )
    benign_guard: bool = Field(
        default=True,
        description="condnum: skip R_ill on steps whose benign batch κ exceeds θ0's first batch κ",
    )
    opt_kappa_weight: Float = Field(default=1.0, ge=0, description="opt-kappa's λ, ≥ 0")
    imma_weight: Float = Field(default=1.0, ge=0, description="imma's weight, ≥ 0")
    imma_inner_steps: int = Field(default=5, ge=1, le=1_000, description="1–1000")
    closed_form_ridge: Float = Field(
        default=1e-6,
        gt=0,
        description="relative ridge ρ·tr(K)/k added to the feature covariances of closed-form",
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
        default=50, ge=1, le=100_000_000, description="optimizer steps between checkpoints, ≤ 10⁸"
    )
    logger: Logger = Field(default="csv", description="Lightning logger: csv or tensorboard")

    @field_validator("method")
    @classmethod
    def _deep_method(cls, value: str) -> str:
        return _check_method(value, linear=False)

    @model_validator(mode="after")
    def _divisible_batch(self) -> Self:
        if self.batch_size % self.devices:
            raise ValueError(
                f"train.batch_size={self.batch_size} is the global batch and must be divisible "
                f"by train.devices={self.devices}"
            )
        return self


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


class DeepExperimentConfig(_Schema):
    """A deep experiment (``mnist-cnn``, ``imagenet-*``, ``mobilenet-fashion-mnist``)."""

    experiment: Choice = Field(default=Experiment.MNIST_CNN.value, description="a deep experiment")
    seed: int = Field(default=0, ge=0, le=MAX_SEED, description="0 ≤ seed < 2³²")
    threads: int = Field(
        default=0,
        ge=0,
        le=1024,
        description="CPU threads for torch, set by the CLI (0: torch's default, all cores)",
    )
    model: ModelConfig = Field(default_factory=lambda: ModelConfig())
    data: DeepDataConfig = Field(default_factory=lambda: DeepDataConfig())
    train: DeepTrainConfig = Field(default_factory=lambda: DeepTrainConfig())
    eval: DeepEvalConfig = Field(default_factory=lambda: DeepEvalConfig())
    attack: DeepAttackConfig = Field(default_factory=lambda: DeepAttackConfig())

    @field_validator("experiment")
    @classmethod
    def _deep_experiment(cls, value: str) -> str:
        return _check_experiment(value, deep=True)


Config = ExperimentConfig | DeepExperimentConfig
