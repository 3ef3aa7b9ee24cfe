"""One pipeline interface for both families, and the one place a family is chosen.

A run goes ``plan → data → θ0 → immunize → evaluate → files and report``; ``evaluate``
recomputes a saved run's metrics from its files, ``attack`` runs the worst-case suite on
them, and a sweep turns each run's metrics into a row. The generic layers
(:mod:`~condimmune.experiments.runner`, :mod:`~condimmune.experiments.attack`,
:mod:`~condimmune.experiments.sweep`, :mod:`~condimmune.experiments.tables`) do everything
the families share (claiming, locking and writing run directories, config.yaml, reading a
run back, report skeletons, sweeps, tables) and call a :class:`Pipeline` for the rest.
:func:`pipeline_for` maps a :class:`~condimmune.methods.base.ModelFamily` to its pipeline;
nothing else branches on the family.
"""

from __future__ import annotations

import importlib
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from condimmune.core.progress import ProgressCallback
from condimmune.core.records import RecordError
from condimmune.experiments.config import Config, config_to_dict
from condimmune.experiments.config.families import FAMILIES
from condimmune.experiments.errors import config_keys
from condimmune.experiments.plan import RunPlan
from condimmune.experiments.records import RunMetrics
from condimmune.experiments.registry import experiment_spec
from condimmune.experiments.report import FigureSpec, ReportPage, Table
from condimmune.experiments.sweep_rows import Column, SweepRow
from condimmune.experiments.tables import SummaryColumn, write_tables
from condimmune.methods.base import ConfiguredMethod, ModelFamily
from condimmune.methods.registry import configure_method

__all__ = [
    "AttackOutcome",
    "LoadedRun",
    "Pipeline",
    "RunResult",
    "pipeline_for",
    "read_metrics",
    "resolve_plan",
]

OptionsT = TypeVar("OptionsT")
RunT = TypeVar("RunT", bound="RunResult")
LoadedT = TypeVar("LoadedT", bound="LoadedRun")


@dataclass(frozen=True)
class RunResult:
    """What a run produced, in memory: its plan and metrics (each family adds what its
    files and figures need). The run directory is its serialisation."""

    plan: RunPlan[Any]
    metrics: RunMetrics


@dataclass(frozen=True)
class LoadedRun:
    """A run directory read back: its directory, plan (from ``config.yaml``, with any
    attack-time overrides) and metrics (each family adds its models and data)."""

    run_dir: Path
    plan: RunPlan[Any]
    metrics: RunMetrics


@dataclass(frozen=True)
class AttackOutcome:
    """An attack suite's result on a loaded run: the run's metrics with the suite added, its
    report page (``attack_report.md``; its body is also the attack section of
    ``report.md``) and the table and lines the command prints."""

    metrics: RunMetrics
    page: ReportPage
    summary: Table
    lines: list[str]


class Pipeline(ABC, Generic[OptionsT, RunT, LoadedT]):
    """What a family implements (module docstring). Every method takes typed options and
    records, never a config, except :meth:`options`, which builds the family's part of the
    run plan from the validated config."""

    family: ClassVar[ModelFamily]
    metrics_type: ClassVar[type[RunMetrics]]
    packages: ClassVar[tuple[str, ...]] = ()
    """Packages whose versions ``config.yaml`` records besides the core ones."""
    sweep_columns: ClassVar[tuple[Column, ...]]
    """The result columns of a sweep row, in ``sweep.csv`` order."""
    attack_section: ClassVar[str]
    """The heading of the attack section ``condimmune attack`` adds to ``report.md``."""
    run_files: ClassVar[tuple[str, ...]]
    """The family's files a complete run directory holds (besides config and metrics)."""
    sweep_threads: ClassVar[int] = 0
    """Torch threads of one sweep worker; 0 = the machine's cores shared out among the
    workers."""
    unsealed_files: ClassVar[tuple[str, ...]] = ()
    """Patterns of files in a run directory that its manifest does not cover (they change
    after the run by design: an attack search's storage)."""
    config_keys: ClassVar[Mapping[str, str]]
    """The config key of each library argument the family's code may name in an
    :class:`~condimmune.core.errors.ArgumentError` (see :meth:`named_by_config`)."""

    def named_by_config(self) -> AbstractContextManager[None]:
        """Inside, errors about library arguments name the config keys that set them."""
        return config_keys(self.config_keys)

    @abstractmethod
    def options(self, config: Config, method: ConfiguredMethod) -> OptionsT:
        """The family's typed options (the run plan's ``options``) from the config."""

    def primary(self, plan: RunPlan[OptionsT]) -> bool:
        """Whether this process writes the run directory (one of a multi-process run's
        processes does; the others only train)."""
        return True

    @abstractmethod
    def run(
        self,
        plan: RunPlan[OptionsT],
        out: Path | None,
        *,
        progress: bool,
        on_progress: ProgressCallback | None = None,
    ) -> RunT | None:
        """Data → θ0 → immunize → evaluate. ``out`` is the run directory-to-be (claimed by
        the caller when :meth:`primary`; families keep resumable state beside it). ``None``
        on a process that is not :meth:`primary`. Long phases report to ``on_progress``."""

    @abstractmethod
    def write_files(self, directory: Path, run: RunT) -> None:
        """The family's files of a run directory (models, data, logs) into ``directory``."""

    @abstractmethod
    def report(self, run: RunT) -> ReportPage:
        """``report.md`` and its figures."""

    def finish(self, plan: RunPlan[OptionsT], out: Path) -> None:
        """When the run directory is written, just before it is renamed into place: remove
        what only a resume needed (each of its files is complete on its own, so a kill
        midway leaves a state a rerun resumes from or starts over with)."""

    def before_sweep(self, plans: list[RunPlan[OptionsT]], progress: bool) -> None:
        """Before a sweep's jobs run in parallel: fill caches they would otherwise all
        compute at once."""

    @abstractmethod
    def load(self, run_dir: Path, plan: RunPlan[OptionsT], metrics: RunMetrics) -> LoadedT:
        """A run directory's files read back strictly (a damaged or foreign file is a
        :class:`~condimmune.core.errors.UserError` naming it)."""

    @abstractmethod
    def evaluate(self, loaded: LoadedT, *, progress: bool) -> RunMetrics:
        """The run's metrics recomputed from its files (the timings, training records and
        attack results the files cannot reproduce are the saved ones)."""

    @abstractmethod
    def attack(self, loaded: LoadedT, *, on_progress: ProgressCallback | None) -> AttackOutcome:
        """The attack suite of ``loaded.plan``'s attack options on the run."""

    @abstractmethod
    def summary(self, metrics: RunMetrics) -> list[Table]:
        """What ``condimmune run`` and ``evaluate`` print."""

    @abstractmethod
    def closing_lines(self, metrics: RunMetrics, run_dir: Path) -> list[str]:
        """What ``condimmune run`` says after its tables, in plain words: what the headline
        slowdown means, what an attacker who rescales the features gets, and that
        ``condimmune attack`` gives the worst case."""

    def sweep_keys(self, plan: RunPlan[OptionsT]) -> dict[str, int | None]:
        """The cells of :attr:`sweep_columns` that name a run's job besides its method and
        seed (the digit pair), also for a run that failed."""
        return {}

    @abstractmethod
    def sweep_values(self, metrics: RunMetrics) -> dict[str, int | float | bool | str | None]:
        """A finished run's result cells of :attr:`sweep_columns`."""

    @abstractmethod
    def sweep_summary(self) -> tuple[Sequence[SummaryColumn], Sequence[SummaryColumn]]:
        """The per-method summary columns of a sweep: what the command prints, and what
        ``sweep.md`` shows."""

    @abstractmethod
    def sweep_figures(self, rows: Sequence[SweepRow], methods: list[str]) -> list[FigureSpec]:
        """The figures a sweep writes beside its tables."""

    def write_sweep(self, out: Path, rows: Sequence[SweepRow], methods: list[str]) -> Table:
        """A sweep's tables and figures in ``out``; returns the summary the command prints."""
        return write_tables(
            out,
            rows,
            methods,
            family_columns=self.sweep_columns,
            summary=self.sweep_summary(),
            figures=self.sweep_figures(rows, methods),
        )


def pipeline_for(family: ModelFamily) -> Pipeline[Any, Any, Any]:
    """The pipeline of ``family`` (:data:`~condimmune.experiments.config.families.FAMILIES`),
    imported on first use: a linear run never imports the deep stack."""
    module, name = FAMILIES[ModelFamily(family)].pipeline.split(":")
    pipeline: Pipeline[Any, Any, Any] = getattr(importlib.import_module(module), name)
    return pipeline


def read_metrics(data: object, *, source: str) -> RunMetrics:
    """Read a ``metrics.json`` document as the record of its experiment's family (that
    pipeline's ``metrics_type``); an unknown experiment or a mismatch raises
    :class:`~condimmune.core.records.RecordError` naming ``source`` and the field."""
    name = data.get("experiment") if isinstance(data, dict) else None
    try:
        kind = pipeline_for(experiment_spec(str(name)).family).metrics_type
    except ValueError as exc:
        raise RecordError(f"{source}: {exc}") from None
    try:
        metrics: RunMetrics = kind.from_json(data)
    except RecordError as exc:
        raise RecordError(f"{source}: {exc}") from None
    return metrics


def resolve_plan(config: Config) -> RunPlan[Any]:
    """The plan of a validated ``config`` (its method's options are checked against the
    method again: a config changed by assignment after validation cannot slip through)."""
    spec = experiment_spec(config.experiment)
    method = configure_method(config.train.method, spec.family, config.method)
    options = pipeline_for(spec.family).options(config, method)
    return RunPlan(
        experiment=spec,
        seed=config.seed,
        threads=config.threads,
        method=method,
        options=options,
        recipe=json.dumps(config_to_dict(config)),
    )
