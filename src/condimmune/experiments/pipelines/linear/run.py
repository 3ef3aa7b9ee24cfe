"""A linear run: the data, the raw head (the identity extractor) and the method's extractor
trained on it, and their metrics."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from condimmune.attacks.probes import ProbeComparison
from condimmune.experiments.pipeline import LoadedRun, RunResult
from condimmune.experiments.pipelines.linear.metrics import compute_metrics
from condimmune.experiments.pipelines.linear.options import LinearRunOptions
from condimmune.experiments.plan import RunPlan
from condimmune.experiments.records import LinearRunMetrics
from condimmune.linear.data import load_task_data
from condimmune.linear.tasks import LinearTaskData
from condimmune.linear.train import LinearModel, TrainingHistory, train_linear
from condimmune.methods.base import ModelFamily
from condimmune.methods.registry import Method, configure_method

__all__ = ["LinearLoaded", "LinearRun", "run_linear"]


@dataclass(frozen=True)
class LinearRun(RunResult):
    """A linear run in memory (numpy arrays: a linear run never imports torch): its data,
    both models, the training history and the paper's attacker on each task
    (``"harmful"``, ``"benign"``), raw vs immunized."""

    metrics: LinearRunMetrics
    data: LinearTaskData
    model: LinearModel[NDArray[np.floating[Any]]]
    raw_model: LinearModel[NDArray[np.floating[Any]]]
    history: TrainingHistory
    attacks: dict[str, ProbeComparison[NDArray[np.floating[Any]]]]


@dataclass(frozen=True)
class LinearLoaded(LoadedRun):
    """A linear run directory read back: the exact rows and both models."""

    metrics: LinearRunMetrics
    data: LinearTaskData
    model: LinearModel[NDArray[np.floating[Any]]]
    raw_model: LinearModel[NDArray[np.floating[Any]]]


def run_linear(plan: RunPlan[Any], *, progress: bool) -> LinearRun:
    """Load the rows, train the raw head and the method's extractor, measure both."""
    options: LinearRunOptions = plan.options
    start = time.perf_counter()
    data = load_task_data(options.source, options.data, plan.seed, root_key="data.root")
    raw_options = replace(options.train, method=configure_method(Method.NONE, ModelFamily.LINEAR))
    raw_model, _ = train_linear(
        data, raw_options, seed=plan.seed, progress=progress, kappa_history=False
    )
    train_start = time.perf_counter()
    model, history = train_linear(data, options.train, seed=plan.seed, progress=progress)
    train_seconds = time.perf_counter() - train_start
    metrics, attacks = compute_metrics(
        plan, data, model, raw_model, notes=[*data.notes, *history.notes]
    )
    metrics = replace(
        metrics, train_seconds=train_seconds, wall_seconds=time.perf_counter() - start
    )
    return LinearRun(plan, metrics, data, model, raw_model, history, attacks)
