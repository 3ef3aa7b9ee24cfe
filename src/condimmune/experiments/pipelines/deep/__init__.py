"""The deep family's pipeline: a backbone's θ0 (loaded and/or pre-trained in the run), its
last blocks immunized by the method on Lightning Fabric, evaluated against θ0."""

from __future__ import annotations

import math
import shutil
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from types import MappingProxyType
from typing import ClassVar

from matplotlib.figure import Figure

from condimmune.core.progress import ProgressCallback
from condimmune.experiments.config import Config, DeepExperimentConfig
from condimmune.experiments.pipeline import AttackOutcome, Pipeline
from condimmune.experiments.pipelines.deep.attack import STUDIES_FILE, attack_deep
from condimmune.experiments.pipelines.deep.attack_report import ATTACK_SECTION
from condimmune.experiments.pipelines.deep.data import load_deep_data
from condimmune.experiments.pipelines.deep.evaluation import evaluate_deep
from condimmune.experiments.pipelines.deep.files import MODEL_FILES, load_model, write_model_files
from condimmune.experiments.pipelines.deep.options import DeepRunOptions, deep_run_options
from condimmune.experiments.pipelines.deep.original import prefix_outputs, warm_prefix_cache
from condimmune.experiments.pipelines.deep.report import deep_report, deep_summary
from condimmune.experiments.pipelines.deep.run import (
    DeepLoaded,
    DeepRun,
    checkpoint_dir,
    fabric_for,
    run_deep,
)
from condimmune.experiments.plan import RunPlan
from condimmune.experiments.records import DeepRunMetrics, RunMetrics
from condimmune.experiments.report import FigureSpec, ReportPage, Table, format_number, save_figure
from condimmune.experiments.sweep_rows import Cell, Column, SweepRow
from condimmune.experiments.tables import MethodStats, SummaryColumn, arrow, mean_std, summarize
from condimmune.methods.base import ConfiguredMethod, ModelFamily

__all__ = ["DEEP_PIPELINE", "DeepPipeline"]

_FIX = "pass a deep run directory written by `condimmune run`"


def _deep(metrics: RunMetrics) -> DeepRunMetrics:
    if not isinstance(metrics, DeepRunMetrics):
        raise TypeError(f"expected the metrics of a deep run, got {type(metrics).__name__}")
    return metrics


class DeepPipeline(Pipeline[DeepRunOptions, DeepRun, DeepLoaded]):
    """The :class:`~condimmune.experiments.pipeline.Pipeline` of deep experiments."""

    family: ClassVar[ModelFamily] = ModelFamily.DEEP
    metrics_type: ClassVar[type[RunMetrics]] = DeepRunMetrics
    packages: ClassVar[tuple[str, ...]] = ("torchvision", "timm", "lightning")
    attack_section: ClassVar[str] = ATTACK_SECTION
    run_files: ClassVar[tuple[str, ...]] = MODEL_FILES
    unsealed_files: ClassVar[tuple[str, ...]] = (f"{STUDIES_FILE}*",)
    config_keys: ClassVar[Mapping[str, str]] = MappingProxyType(
        {
            "train_per_class": "data.train_per_class",
            "test_per_class": "data.test_per_class",
            "defence_per_class": "data.defence_per_class",
            "cache_prefix": "model.cache_prefix",
            "devices": "train.devices",
            "trainable_blocks": "model.trainable_blocks",
            "batch_size": "train.batch_size",
            "logger": "train.logger",
            "groups": "eval.groups",
            "group_size": "eval.group_size",
            "storage": "attack.storage",
            "seconds": "attack.seconds",
            "trials": "attack.trials",
            "finetune_trials": "attack.finetune_trials",
            "probe_steps": "attack.probe_steps",
            "finetune_steps": "attack.finetune_steps",
            "weight_free_steps": "attack.weight_free_steps",
            "raw_probe_steps": "attack.raw_probe_steps",
            "benign_trials": "attack.benign_trials",
            "labels_per_class": "attack.labels_per_class",
            "prefix_curve": "attack.prefix_curve",
            "target_fraction": "attack.target_fraction",
            "utility_cap": "attack.utility_cap",
        }
    )
    sweep_columns: ClassVar[tuple[Column, ...]] = (
        Column("rir", float),
        Column("rir_paper_compatible", float),
        Column("harmful_ratio", float),
        Column("benign_ratio", float),
        Column("paper_rir", float),
        Column("paper_rir_paper_compatible", float),
        Column("paper_harmful_ratio", float),
        Column("paper_benign_ratio", float),
        Column("benign_head_original", float),
        Column("benign_head_immunized", float),
        Column("benign_probe_original", float),
        Column("benign_probe_immunized", float),
        Column("harmful_probe_original", float),
        Column("harmful_probe_immunized", float),
        Column("probe_steps_original", int),
        Column("probe_steps_immunized", int),
        Column("probe_slowdown", float),
        Column("gd_steps_original", int),
        Column("gd_steps_immunized", int),
        Column("gd_slowdown", float),
        Column("whitened_gd_slowdown", float),
        Column("prefix_seconds", float),
        Column("train_seconds", float),
        Column("wall_seconds", float),
    )

    def options(self, config: Config, method: ConfiguredMethod) -> DeepRunOptions:
        if not isinstance(config, DeepExperimentConfig):
            raise TypeError(f"{config.experiment} is not a deep experiment")
        return deep_run_options(config, method)

    def primary(self, plan: RunPlan[DeepRunOptions]) -> bool:
        return fabric_for(plan.options).is_global_zero

    def run(
        self,
        plan: RunPlan[DeepRunOptions],
        out: Path | None,
        *,
        progress: bool,
        on_progress: ProgressCallback | None = None,
    ) -> DeepRun | None:
        return run_deep(plan, out, progress=progress, on_progress=on_progress)

    def write_files(self, directory: Path, run: DeepRun) -> None:
        write_model_files(directory, run.original, run.immunized, run.logs)

    def report(self, run: DeepRun) -> ReportPage:
        return deep_report(run)

    def finish(self, plan: RunPlan[DeepRunOptions], out: Path) -> None:
        folder = checkpoint_dir(out)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)

    def before_sweep(self, plans: list[RunPlan[DeepRunOptions]], progress: bool) -> None:
        for seed in sorted({p.seed for p in plans}):
            warm_prefix_cache(next(p for p in plans if p.seed == seed), progress)

    def load(self, run_dir: Path, plan: RunPlan[DeepRunOptions], metrics: RunMetrics) -> DeepLoaded:
        original, d0 = load_model(run_dir / MODEL_FILES[0], plan, _FIX)
        immunized, d1 = load_model(run_dir / MODEL_FILES[1], plan, _FIX)
        return DeepLoaded(run_dir, plan, _deep(metrics), original, immunized, (d0, d1))

    def evaluate(self, loaded: DeepLoaded, *, progress: bool) -> RunMetrics:
        plan, saved = loaded.plan, loaded.metrics
        options: DeepRunOptions = plan.options
        data = load_deep_data(options.data, options.model, plan.seed)
        original, immunized = loaded.original, loaded.immunized
        if options.model.cache_prefix:  # as the run evaluated them: on cached prefix outputs
            data = prefix_outputs(original, data, options, progress)
            original.read_prefix()
            immunized.read_prefix()
        recomputed, _ = evaluate_deep(plan, data, original, immunized)
        return replace(
            recomputed,
            train_seconds=saved.train_seconds,
            training=saved.training,
            wall_seconds=saved.wall_seconds,
            prefix_seconds=saved.prefix_seconds,
            attack_suite=saved.attack_suite,
        )

    def attack(self, loaded: DeepLoaded, *, on_progress: ProgressCallback | None) -> AttackOutcome:
        return attack_deep(loaded, on_progress)

    def summary(self, metrics: RunMetrics) -> list[Table]:
        return deep_summary(_deep(metrics))

    def closing_lines(self, metrics: RunMetrics, run_dir: Path) -> list[str]:
        attack = _deep(metrics).attack
        gd, whitened = attack.gd, attack.gd_whitened
        return [
            f"The paper's attacker (gradient descent, step 1/L, on a linear head over the "
            f"features) needs {gd.steps_original:,} steps on θ0 and {gd.steps_immunized:,} on "
            f"the immunized model ({format_number(gd.slowdown)}× slower); after whitening the "
            f"features it is {format_number(whitened.slowdown)}× slower, and a softmax probe "
            f"{format_number(attack.linear_probe.slowdown)}×.",
            "These are the paper's attackers only: fine-tuning, probes on other layers and "
            "tuned optimizers can undo a defence that slows them.",
            f"The worst case over every attacker: condimmune attack {run_dir}",
        ]

    def sweep_values(self, metrics: RunMetrics) -> dict[str, Cell]:
        m = _deep(metrics)
        r, paper = m.rir_theta0, m.rir_theta0_paper_protocol
        probe, gd = m.attack.linear_probe, m.attack.gd
        return {
            "rir": r.honest.rir_mean,
            "rir_paper_compatible": r.paper_compatible.rir_mean,
            "harmful_ratio": r.honest.harmful_ratio_mean,
            "benign_ratio": r.honest.benign_ratio_mean,
            "paper_rir": paper.honest.rir_mean if paper else None,
            "paper_rir_paper_compatible": paper.paper_compatible.rir_mean if paper else None,
            "paper_harmful_ratio": paper.honest.harmful_ratio_mean if paper else None,
            "paper_benign_ratio": paper.honest.benign_ratio_mean if paper else None,
            "benign_head_original": m.benign_accuracy.original,
            "benign_head_immunized": m.benign_accuracy.immunized,
            "benign_probe_original": m.benign_probe.original if m.benign_probe else None,
            "benign_probe_immunized": m.benign_probe.immunized if m.benign_probe else None,
            "harmful_probe_original": probe.final_accuracy_original,
            "harmful_probe_immunized": probe.final_accuracy_immunized,
            "probe_steps_original": probe.steps_original,
            "probe_steps_immunized": probe.steps_immunized,
            "probe_slowdown": probe.slowdown,
            "gd_steps_original": gd.steps_original,
            "gd_steps_immunized": gd.steps_immunized,
            "gd_slowdown": gd.slowdown,
            "whitened_gd_slowdown": m.attack.gd_whitened.slowdown,
            "prefix_seconds": m.prefix_seconds,
            "train_seconds": m.train_seconds,
            "wall_seconds": m.wall_seconds,
        }

    def sweep_summary(self) -> tuple[Sequence[SummaryColumn], Sequence[SummaryColumn]]:
        columns = [
            mean_std("RIR_θ0 honest", "rir"),
            mean_std("RIR_θ0 paper-compat.", "rir_paper_compatible"),
            mean_std("(i) harmful κ ratio", "harmful_ratio"),
            mean_std("(ii) benign κ ratio", "benign_ratio"),
            mean_std("20×100: RIR_θ0 honest", "paper_rir"),
            mean_std("20×100: paper-compat.", "paper_rir_paper_compatible"),
            arrow("benign probe top-1 θ0 → θ_I", "benign_probe_original", "benign_probe_immunized"),
            arrow("benign head top-1 θ0 → θ_I", "benign_head_original", "benign_head_immunized"),
            arrow(
                "harmful probe top-1 θ0 → θ_I",
                "harmful_probe_original",
                "harmful_probe_immunized",
            ),
            arrow("softmax probe steps θ0 → θ_I", "probe_steps_original", "probe_steps_immunized"),
            arrow("GD 1/L steps θ0 → θ_I", "gd_steps_original", "gd_steps_immunized"),
            mean_std("whitened GD slowdown", "whitened_gd_slowdown"),
            mean_std("s/run", "wall_seconds"),
        ]
        return columns, columns

    def sweep_figures(self, rows: Sequence[SweepRow], methods: list[str]) -> list[FigureSpec]:
        return [FigureSpec("sweep.png", partial(_sweep_figure, summarize(rows, methods)))]


def _sweep_figure(stats: list[MethodStats], path: Path) -> None:
    """Honest RIR_θ0 per method (log scale, error bar = std over seeds), and the benign
    probe accuracy it keeps against it."""

    def mean_and_std(values: list[float]) -> tuple[float, float]:
        return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0

    shown = [s for s in stats if s.numbers("rir")]
    fig = Figure(figsize=(11, 4), layout="constrained")
    ax = fig.add_subplot(1, 2, 1)
    rir = [mean_and_std(s.numbers("rir")) for s in shown]
    # bars grow from RIR = 1 (no immunization): up for a larger RIR, down for a smaller one
    heights = [m - 1 for m, _ in rir]
    ax.bar(range(len(shown)), heights, bottom=1, yerr=[e for _, e in rir], capsize=4)
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_title("RIR_θ0 per method (1: no immunization)")
    ax.set_xticks(range(len(shown)), [s.method for s in shown], rotation=30)
    ax.set_yscale("log")
    ax.set_ylabel("RIR_θ0 (honest κ), mean ± std over seeds, log scale")
    ax2 = fig.add_subplot(1, 2, 2)
    for s, (rir_mean, _) in zip(shown, rir, strict=True):
        acc = s.numbers("benign_probe_immunized") or s.numbers("benign_head_immunized")
        if acc and math.isfinite(rir_mean):
            acc_mean, acc_std = mean_and_std(acc)
            ax2.errorbar(rir_mean, acc_mean, yerr=acc_std, fmt="o", capsize=3)
            ax2.annotate(s.method, (rir_mean, acc_mean), fontsize=8)
    ax2.set_xscale("log")
    ax2.set_xlabel("RIR_θ0 (honest κ), log scale")
    ax2.set_ylabel("benign top-1 of θ_I")
    ax2.set_title("benign accuracy kept against RIR_θ0")
    save_figure(fig, path)


DEEP_PIPELINE = DeepPipeline()
