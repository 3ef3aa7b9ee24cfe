"""What a run produced, in memory: the run directory is its serialisation, the report its
reading. Shared by the runners and the reports, so neither imports the other."""

from __future__ import annotations

from dataclasses import dataclass

from condimmune.attacks.probes import ProbeComparison
from condimmune.deep.checkpoint import DeepHistory
from condimmune.experiments.config import DeepExperimentConfig, ExperimentConfig
from condimmune.experiments.deep_evaluation import DeepCurves
from condimmune.experiments.records import DeepRunMetrics, LinearRunMetrics
from condimmune.linear.tasks import LinearTaskData
from condimmune.linear.train import LinearModel, TrainingHistory

__all__ = ["DeepRunArtifacts", "RunArtifacts"]


@dataclass(frozen=True)
class RunArtifacts:
    """What a run produced, in memory (the run directory is its serialisation)."""

    config: ExperimentConfig
    data: LinearTaskData
    model: LinearModel
    raw_model: LinearModel
    history: TrainingHistory
    metrics: LinearRunMetrics
    attacks: dict[str, ProbeComparison]
    """The paper's attacker on each task ("harmful", "benign"), raw vs immunized."""


@dataclass(frozen=True)
class DeepRunArtifacts:
    config: DeepExperimentConfig
    metrics: DeepRunMetrics | None
    """``None`` on the non-zero ranks of a multi-process run (they write nothing)."""
    history: DeepHistory
    curves: DeepCurves | None
