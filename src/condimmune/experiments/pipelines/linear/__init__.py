"""The linear family's pipeline: a linear extractor ``W`` on raw (or PCA-projected) inputs,
trained by the method against the raw head (the identity extractor)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import ClassVar

from condimmune.core.progress import ProgressCallback
from condimmune.experiments.config import Config, ExperimentConfig
from condimmune.experiments.pipeline import AttackOutcome, Pipeline
from condimmune.experiments.pipelines.linear.attack import ATTACK_SECTION, attack_linear
from condimmune.experiments.pipelines.linear.files import read_run_files, write_run_files
from condimmune.experiments.pipelines.linear.heatmap import heat_maps
from condimmune.experiments.pipelines.linear.metrics import compute_metrics
from condimmune.experiments.pipelines.linear.options import LinearRunOptions, linear_run_options
from condimmune.experiments.pipelines.linear.report import linear_report, summary_tables
from condimmune.experiments.pipelines.linear.run import LinearLoaded, LinearRun, run_linear
from condimmune.experiments.plan import RunPlan
from condimmune.experiments.records import LinearRunMetrics, RunMetrics
from condimmune.experiments.report import FigureSpec, ReportPage, Table, format_number
from condimmune.experiments.sweep_rows import Cell, Column, SweepRow
from condimmune.experiments.tables import SummaryColumn, arrow, count, mean, median
from condimmune.linear.tasks import LinearSource
from condimmune.methods.base import ConfiguredMethod, ModelFamily

__all__ = ["LINEAR_PIPELINE", "LinearPipeline"]

_FIX = "the run directory is damaged: run the experiment again into a new --out"


def _linear(metrics: RunMetrics) -> LinearRunMetrics:
    if not isinstance(metrics, LinearRunMetrics):
        raise TypeError(f"expected the metrics of a linear run, got {type(metrics).__name__}")
    return metrics


class LinearPipeline(Pipeline[LinearRunOptions, LinearRun, LinearLoaded]):
    """The :class:`~condimmune.experiments.pipeline.Pipeline` of linear experiments."""

    family: ClassVar[ModelFamily] = ModelFamily.LINEAR
    metrics_type: ClassVar[type[RunMetrics]] = LinearRunMetrics
    attack_section: ClassVar[str] = ATTACK_SECTION
    # thousands of small operations: one thread each (README "Speed")
    sweep_threads: ClassVar[int] = 1
    run_files: ClassVar[tuple[str, ...]] = (
        "extractor.safetensors",
        "head.safetensors",
        "data.safetensors",
    )
    config_keys: ClassVar[Mapping[str, str]] = MappingProxyType(
        {
            "root": "data.root",
            "per_class": "data.per_class",
            "test_per_class": "data.test_per_class",
            "train_rows": "data.train_rows",
            "test_rows": "data.test_rows",
        }
    )
    sweep_columns: ClassVar[tuple[Column, ...]] = (
        Column("benign", int),
        Column("harmful", int),
        Column("rir", float),
        Column("rir_paper_compatible", float),
        Column("harmful_ratio", float),
        Column("benign_ratio", float),
        Column("bound", float),
        Column("rir_fraction_of_bound", float),
        Column("benign_metric", str),
        Column("benign_original", float),
        Column("benign_immunized", float),
        Column("steps_original", int),
        Column("steps_immunized", int),
        Column("immunized", bool),
        Column("wall_seconds", float),
    )

    def options(self, config: Config, method: ConfiguredMethod) -> LinearRunOptions:
        if not isinstance(config, ExperimentConfig):
            raise TypeError(f"{config.experiment} is not a linear experiment")
        return linear_run_options(config, method)

    def run(
        self,
        plan: RunPlan[LinearRunOptions],
        out: Path | None,
        *,
        progress: bool,
        on_progress: ProgressCallback | None = None,
    ) -> LinearRun:
        return run_linear(plan, progress=progress)  # seconds: its epoch bar is enough

    def write_files(self, directory: Path, run: LinearRun) -> None:
        write_run_files(directory, run.data, run.model, run.raw_model)

    def report(self, run: LinearRun) -> ReportPage:
        return linear_report(run)

    def load(
        self, run_dir: Path, plan: RunPlan[LinearRunOptions], metrics: RunMetrics
    ) -> LinearLoaded:
        data, model, raw_model = read_run_files(run_dir, plan.options.kind, _FIX)
        return LinearLoaded(run_dir, plan, _linear(metrics), data, model, raw_model)

    def evaluate(self, loaded: LinearLoaded, *, progress: bool) -> RunMetrics:
        saved = loaded.metrics
        recomputed, _ = compute_metrics(
            loaded.plan,
            loaded.data,
            loaded.model,
            loaded.raw_model,
            notes=saved.notes,
            train_seconds=saved.train_seconds,
            wall_seconds=saved.wall_seconds,
        )
        return replace(
            recomputed,
            attacks=saved.attacks,
            attack_worst_case=saved.attack_worst_case,
            attack_worst_case_first_order=saved.attack_worst_case_first_order,
            attack_suite_settings=saved.attack_suite_settings,
        )

    def attack(
        self, loaded: LinearLoaded, *, on_progress: ProgressCallback | None
    ) -> AttackOutcome:
        return attack_linear(loaded, on_progress)

    def summary(self, metrics: RunMetrics) -> list[Table]:
        return summary_tables(_linear(metrics))

    def closing_lines(self, metrics: RunMetrics, run_dir: Path) -> list[str]:
        attack = _linear(metrics).attack
        lines = [
            f"The paper's attacker (gradient descent, step 1/L, on a linear head) needs "
            f"{attack.steps_original:,} steps on the raw inputs and {attack.steps_immunized:,} "
            f"on the immunized features ({format_number(attack.harmful_slowdown)}× slower)."
        ]
        whiten = attack.rescaling_attackers.get("whiten-gd")
        if whiten is not None:
            lines.append(
                f"An attacker who whitens the features first needs {whiten.steps_original:,} "
                f"and {whiten.steps_immunized:,} steps, and one who fits the head by least "
                "squares needs a single solve: conditioning does not slow either of them."
            )
        return [
            *lines,
            f"The worst case over every attacker: condimmune attack {run_dir}",
        ]

    def sweep_keys(self, plan: RunPlan[LinearRunOptions]) -> dict[str, int | None]:
        if plan.options.source is LinearSource.HOUSE_PRICE:
            return {"benign": None, "harmful": None}
        return {
            "benign": plan.options.data.benign_digit,
            "harmful": plan.options.data.harmful_digit,
        }

    def sweep_values(self, metrics: RunMetrics) -> dict[str, Cell]:
        m = _linear(metrics)
        bound = m.rir_bound
        return {
            "rir": m.rir,
            "rir_paper_compatible": m.rir_paper_compatible,
            "harmful_ratio": m.harmful_ratio,
            "benign_ratio": m.benign_ratio,
            "bound": math.inf if bound.unbounded else bound.value,
            "rir_fraction_of_bound": m.rir_fraction_of_bound,
            "benign_metric": m.benign_task.metric,
            "benign_original": m.benign_task.original,
            "benign_immunized": m.benign_task.immunized,
            "steps_original": m.attack.steps_original,
            "steps_immunized": m.attack.steps_immunized,
            "immunized": m.immunization_check.immunized,
            "wall_seconds": m.wall_seconds,
        }

    def sweep_summary(self) -> tuple[Sequence[SummaryColumn], Sequence[SummaryColumn]]:
        kept = count("κ_P kept", "benign_ratio", lambda v: isinstance(v, float) and v <= 1 + 1e-6)
        printed = [
            mean("mean RIR", "rir"),
            median("median RIR", "rir"),
            mean("mean RIR (paper-compat.)", "rir_paper_compatible"),
            mean("mean bound", "bound", skip_infinite=True),
            kept,
            count("Def. 3.1", "immunized"),
            mean("s/run", "wall_seconds"),
        ]
        markdown = [
            mean("mean RIR", "rir"),
            median("median RIR", "rir"),
            mean("mean RIR (paper-compatible)", "rir_paper_compatible"),
            median("median RIR (paper-compatible)", "rir_paper_compatible"),
            mean("mean (i)", "harmful_ratio"),
            mean("mean (ii)", "benign_ratio"),
            mean("mean bound", "bound", skip_infinite=True),
            mean("mean RIR/bound", "rir_fraction_of_bound"),
            kept,
            count("RIR > 1", "rir", lambda v: isinstance(v, float) and v > 1),
            count("Def. 3.1", "immunized"),
            arrow(
                "benign metric orig. → imm. (mean)",
                "benign_original",
                "benign_immunized",
                spread=False,
            ),
            mean("s/run", "wall_seconds"),
        ]
        return printed, markdown

    def sweep_figures(self, rows: Sequence[SweepRow], methods: list[str]) -> list[FigureSpec]:
        return heat_maps(rows, methods)


LINEAR_PIPELINE = LinearPipeline()
