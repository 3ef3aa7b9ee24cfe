"""Typed experiment configuration (pydantic v2): YAML loading, ``--set`` overrides, one-line errors.

Two schemas (``config/schema.py``): :class:`ExperimentConfig` for the linear experiments and
:class:`DeepExperimentConfig` for the deep ones (the experiment's family picks one, in
``config/families.py``), built from sections organised by concept
(``data``, ``training``, ``model``, ``measure``: evaluation and attacks) and the ``method``
section, whose schema is the options model of ``train.method``. Unknown keys, wrong types,
out-of-range values and non-finite floats are refused by the schema; every public function
here turns such a problem into a one-line ``ValueError`` that names the dotted key, e.g.
``invalid value for train.epochs: 0 (must be ≥ 1)``.

Upper bounds (in each field's description) are there to stop a typo from starting a run that
silently goes on for days: counts of epochs ≤ 10,000, examples per class ≤ 100,000, attack and
probe steps ≤ 1,000,000, devices ≤ 1024, inner IMMA steps ≤ 1000, batch sizes ≤ 65,536 (deep)
or 1,000,000 (linear), seeds < 2³². Learning rates, ridges and loss weights are only required
to be finite (and positive or non-negative where the maths needs it).

Every run writes its resolved configuration (:func:`config_to_dict`), with the seed and package
versions, to ``config.yaml`` beside its results; :func:`config_from_dict` reads it back.

Config files are read by :mod:`condimmune.experiments.yaml_reading` (repeated keys, anchors
and oversized or deeply nested files refused; ``012``, ``yes`` and ``none`` are text), and
``--set`` values follow the same text rules: the same text is the same value in a file and on
the command line, or is refused by both.

The configs are mutable and validate assignments (``config.train.lr = -1`` raises); for a
changed, validated copy use :func:`apply_overrides`.
"""

from condimmune.experiments.config.api import (
    apply_overrides,
    config_from_dict,
    config_to_dict,
    default_config,
    load_config,
    resolve_config,
)
from condimmune.experiments.config.data import DataConfig, DeepDataConfig
from condimmune.experiments.config.errors import ConfigError
from condimmune.experiments.config.measure import AttackConfig, DeepAttackConfig, DeepEvalConfig
from condimmune.experiments.config.model import ModelConfig
from condimmune.experiments.config.schema import Config, DeepExperimentConfig, ExperimentConfig
from condimmune.experiments.config.training import DeepTrainConfig, TrainConfig
from condimmune.experiments.registry import Experiment

__all__ = [
    "AttackConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "DeepAttackConfig",
    "DeepDataConfig",
    "DeepEvalConfig",
    "DeepExperimentConfig",
    "DeepTrainConfig",
    "Experiment",
    "ExperimentConfig",
    "ModelConfig",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "default_config",
    "load_config",
    "resolve_config",
]
