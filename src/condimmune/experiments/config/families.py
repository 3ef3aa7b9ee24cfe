"""The one table that says what each model family is made of.

A :class:`~condimmune.methods.base.ModelFamily` (which an experiment declares in
:mod:`condimmune.experiments.registry`) maps to its config schema and to where its
pipeline lives. Config parsing reads the schema from here and
:func:`condimmune.experiments.pipeline.pipeline_for` the pipeline; every other difference
between linear and deep runs is a method of that pipeline. The pipeline is named, not
imported: parsing a config (and ``--help``) must not import torch or the deep stack.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from condimmune.experiments.config.schema import DeepExperimentConfig, ExperimentConfig
from condimmune.methods.base import ModelFamily

__all__ = ["FAMILIES", "FamilyParts"]


@dataclass(frozen=True)
class FamilyParts:
    """A family's config schema and its pipeline's location ``"module:attribute"``."""

    config: type[ExperimentConfig] | type[DeepExperimentConfig]
    pipeline: str


FAMILIES: Mapping[ModelFamily, FamilyParts] = MappingProxyType(
    {
        ModelFamily.LINEAR: FamilyParts(
            ExperimentConfig, "condimmune.experiments.pipelines.linear:LINEAR_PIPELINE"
        ),
        ModelFamily.DEEP: FamilyParts(
            DeepExperimentConfig, "condimmune.experiments.pipelines.deep:DEEP_PIPELINE"
        ),
    }
)
"""Every family's parts, the one place a family is chosen."""
