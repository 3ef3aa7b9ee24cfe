"""A sweep's tables: one :class:`SweepRow` per run (``sweep.csv``), one :class:`MethodSummary`
per method and the per-pair table (``sweep.md``), and a 10 × 10 heat map of log RIR per
method for digit experiments (rows benign digit, columns harmful digit, like Fig. 2)."""

from __future__ import annotations

import csv
import dataclasses
import math
import statistics
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from condimmune._files import replace_atomically
from condimmune.experiments.config import ExperimentConfig
from condimmune.experiments.records import LinearRunMetrics
from condimmune.experiments.registry import Experiment

__all__ = [
    "CSV_FIELDS",
    "MethodSummary",
    "SweepRow",
    "row_order",
    "summarize",
    "summary_table",
    "write_tables",
]

_T = TypeVar("_T")


@dataclass(frozen=True, kw_only=True)
class SweepRow:
    """One run of a sweep, one line of ``sweep.csv`` (the columns are the fields, in order).

    ``benign``/``harmful`` are ``None`` for house price. A failed run has ``error`` set (the
    first line of the exception) and ``None`` for every result field; ``None`` is an empty
    cell in the CSV. ``bound`` is ``math.inf`` when the RIR bound is unbounded.
    """

    experiment: str
    method: str
    seed: int
    benign: int | None
    harmful: int | None
    rir: float | None = None
    rir_paper_compatible: float | None = None
    harmful_ratio: float | None = None
    benign_ratio: float | None = None
    bound: float | None = None
    rir_fraction_of_bound: float | None = None
    benign_metric: str | None = None
    benign_raw: float | None = None
    benign_immunized: float | None = None
    steps_raw: int | None = None
    steps_immunized: int | None = None
    immunized: bool | None = None
    wall_seconds: float | None = None
    run_dir: str
    error: str = ""

    @property
    def failed(self) -> bool:
        return bool(self.error)

    @classmethod
    def from_metrics(
        cls, config: ExperimentConfig, metrics: LinearRunMetrics, run_dir: str
    ) -> SweepRow:
        """The row of a finished run."""
        benign, harmful = _pair_of(config)
        bound = metrics.rir_bound
        return cls(
            experiment=metrics.experiment,
            method=metrics.method,
            seed=metrics.seed,
            benign=benign,
            harmful=harmful,
            rir=metrics.rir,
            rir_paper_compatible=metrics.rir_paper_compatible,
            harmful_ratio=metrics.harmful_ratio,
            benign_ratio=metrics.benign_ratio,
            bound=math.inf if bound.unbounded else bound.value,
            rir_fraction_of_bound=metrics.rir_fraction_of_bound,
            benign_metric=metrics.benign_task.metric,
            benign_raw=metrics.benign_task.raw,
            benign_immunized=metrics.benign_task.immunized,
            steps_raw=metrics.attack.steps_raw,
            steps_immunized=metrics.attack.steps_immunized,
            immunized=metrics.immunization_check.immunized,
            wall_seconds=metrics.wall_seconds,
            run_dir=run_dir,
        )

    @classmethod
    def from_error(cls, config: ExperimentConfig, run_dir: str, error: BaseException) -> SweepRow:
        """The row of a run that raised ``error``."""
        benign, harmful = _pair_of(config)
        return cls(
            experiment=config.experiment,
            method=config.train.method,
            seed=config.seed,
            benign=benign,
            harmful=harmful,
            run_dir=run_dir,
            error=f"{type(error).__name__}: {error}".splitlines()[0],
        )

    def csv_row(self) -> dict[str, object]:
        """The row for :class:`csv.DictWriter` (``None`` → empty cell)."""
        return {
            f.name: "" if (v := getattr(self, f.name)) is None else v
            for f in dataclasses.fields(self)
        }


CSV_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(SweepRow))
"""The columns of ``sweep.csv``."""


@dataclass(frozen=True)
class MethodSummary:
    """Per-method means over the successful runs (arithmetic mean of per-run RIR, as the
    paper's Table 2), with the medians beside them (one pair can carry the mean on an
    unbounded protocol). With ``runs == 0`` (every run failed) the means are ``None``.
    ``mean_bound`` is ``math.inf`` when every run's bound is unbounded;
    ``mean_fraction_of_bound`` is ``None`` when no run has one. ``immunized`` counts the runs
    that meet Def. 3.1; ``mean_benign_raw``/``mean_benign_immunized`` are the held-out benign
    metric (accuracy or MSE) of the raw and the immunized model."""

    method: str
    runs: int
    failed: int
    mean_rir: float | None = None
    mean_rir_paper_compatible: float | None = None
    mean_harmful_ratio: float | None = None
    mean_benign_ratio: float | None = None
    mean_bound: float | None = None
    mean_fraction_of_bound: float | None = None
    benign_kept: int = 0
    rir_above_1: int = 0
    mean_wall_seconds: float | None = None
    median_rir: float | None = None
    median_rir_paper_compatible: float | None = None
    immunized: int = 0
    mean_benign_raw: float | None = None
    mean_benign_immunized: float | None = None


def row_order(row: SweepRow) -> tuple[str, str, str, int]:
    """The order of a sweep's rows: by method, pair, seed."""

    def text(v: int | None) -> str:
        return "" if v is None else str(v)

    return (row.method, text(row.benign), text(row.harmful), row.seed)


def _pair_of(config: ExperimentConfig) -> tuple[int | None, int | None]:
    if config.experiment == Experiment.HOUSE_PRICE:
        return None, None
    return config.data.benign_digit, config.data.harmful_digit


def _write_csv(path: Path, rows: list[SweepRow]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(r.csv_row() for r in rows)


def _value(value: _T | None, row: SweepRow, name: str) -> _T:
    """A result field of a successful row (never ``None`` there)."""
    if value is None:
        raise ValueError(f"sweep row {row.run_dir} has no {name}")
    return value


def summarize(rows: list[SweepRow]) -> list[MethodSummary]:
    """Per-method means (arithmetic mean of per-run RIR, as the paper's Table 2), sorted by
    method name."""
    out = []
    for method in sorted({r.method for r in rows}):
        rs = [r for r in rows if r.method == method and not r.failed]
        failed = sum(1 for r in rows if r.method == method and r.failed)
        if not rs:
            out.append(MethodSummary(method=method, runs=0, failed=failed))
            continue
        bounds = [_value(r.bound, r, "bound") for r in rs]
        finite = [b for b in bounds if math.isfinite(b)]
        fractions = [r.rir_fraction_of_bound for r in rs if r.rir_fraction_of_bound is not None]
        rir = [_value(r.rir, r, "rir") for r in rs]
        paper = [_value(r.rir_paper_compatible, r, "rir_paper_compatible") for r in rs]
        benign_ratio = [_value(r.benign_ratio, r, "benign_ratio") for r in rs]
        out.append(
            MethodSummary(
                method=method,
                runs=len(rs),
                failed=failed,
                mean_rir=statistics.fmean(rir),
                mean_rir_paper_compatible=statistics.fmean(paper),
                mean_harmful_ratio=statistics.fmean(
                    _value(r.harmful_ratio, r, "harmful_ratio") for r in rs
                ),
                mean_benign_ratio=statistics.fmean(benign_ratio),
                mean_bound=statistics.fmean(finite) if finite else math.inf,
                mean_fraction_of_bound=statistics.fmean(fractions) if fractions else None,
                benign_kept=sum(b <= 1 + 1e-6 for b in benign_ratio),
                rir_above_1=sum(v > 1 for v in rir),
                mean_wall_seconds=statistics.fmean(
                    _value(r.wall_seconds, r, "wall_seconds") for r in rs
                ),
                median_rir=statistics.median(rir),
                median_rir_paper_compatible=statistics.median(paper),
                immunized=sum(bool(r.immunized) for r in rs),
                mean_benign_raw=statistics.fmean(_value(r.benign_raw, r, "benign_raw") for r in rs),
                mean_benign_immunized=statistics.fmean(
                    _value(r.benign_immunized, r, "benign_immunized") for r in rs
                ),
            )
        )
    return out


def summary_table(rows: list[SweepRow]) -> tuple[list[str], list[list[str]]]:
    """The columns and rows of the per-method summary the command line prints."""
    from condimmune.experiments.report import format_number as f

    columns = ["method", "runs", "mean RIR", "median RIR", "mean RIR (paper-compat.)"]
    table = []
    for s in summarize(rows):
        if not s.runs:
            table.append([s.method, "0", *["—"] * 7])
            continue
        table.append(
            [
                s.method,
                str(s.runs),
                f(s.mean_rir),
                f(s.median_rir),
                f(s.mean_rir_paper_compatible),
                f(s.mean_bound),
                f"{s.benign_kept}/{s.runs}",
                f"{s.immunized}/{s.runs}",
                f(s.mean_wall_seconds),
            ]
        )
    return [*columns, "mean bound", "κ_P kept", "Def. 3.1", "s/run"], table


def _write_markdown(path: Path, rows: list[SweepRow]) -> None:
    from condimmune.experiments.report import format_number as f

    def text(v: int | None) -> str:
        return "" if v is None else str(v)

    lines = [
        "# Sweep",
        "",
        "| method | runs | mean RIR | median RIR | mean RIR (paper-compatible) | "
        "median RIR (paper-compatible) | mean (i) | mean (ii) | mean bound | mean RIR/bound | "
        "κ_P kept | RIR > 1 | Def. 3.1 | benign metric raw → imm. (mean) | s/run | failed |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summarize(rows):
        if not s.runs:
            lines.append(f"| {s.method} | 0 |" + " — |" * 13 + f" {s.failed} |")
            continue
        lines.append(
            f"| {s.method} | {s.runs} | {f(s.mean_rir)} | {f(s.median_rir)} | "
            f"{f(s.mean_rir_paper_compatible)} | {f(s.median_rir_paper_compatible)} | "
            f"{f(s.mean_harmful_ratio)} | {f(s.mean_benign_ratio)} | {f(s.mean_bound)} | "
            f"{f(s.mean_fraction_of_bound)} | {s.benign_kept}/{s.runs} | "
            f"{s.rir_above_1}/{s.runs} | {s.immunized}/{s.runs} | "
            f"{f(s.mean_benign_raw)} → {f(s.mean_benign_immunized)} | "
            f"{s.mean_wall_seconds:.2f} | {s.failed} |"
        )
    lines += [
        "",
        "| method | benign | harmful | seed | RIR | RIR (paper-compat.) | bound | "
        "RIR/bound | (ii) | benign metric raw → imm. | steps raw → imm. | s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        pair = f"| {r.method} | {text(r.benign)} | {text(r.harmful)} | {r.seed} |"
        if r.failed:
            lines.append(f"{pair} failed: {r.error} |" + " |" * 7)
            continue
        lines.append(
            f"{pair} {f(r.rir)} | "
            f"{f(r.rir_paper_compatible)} | {f(r.bound)} | "
            f"{f(r.rir_fraction_of_bound)} | {f(r.benign_ratio)} | "
            f"{f(r.benign_raw)} → {f(r.benign_immunized)} | "
            f"{f(r.steps_raw)} → {f(r.steps_immunized)} | "
            f"{_value(r.wall_seconds, r, 'wall_seconds'):.2f} |"
        )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _heatmap(path: Path, rows: list[SweepRow], method: str) -> None:
    import numpy as np

    cells: dict[tuple[int, int], list[float]] = {}
    for r in (r for r in rows if not r.failed):
        key = (_value(r.benign, r, "benign"), _value(r.harmful, r, "harmful"))
        cells.setdefault(key, []).append(math.log(_value(r.rir, r, "rir")))
    grid = np.full((10, 10), np.nan)
    for (a, b), values in cells.items():
        grid[a, b] = statistics.fmean(values)  # mean over seeds
    fig = Figure(figsize=(5, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(grid, cmap="viridis")
    fig.colorbar(im, ax=ax, label="log RIR")
    ax.set_xticks(range(10))
    ax.set_yticks(range(10))
    ax.set_xlabel("harmful digit")
    ax.set_ylabel("benign digit")
    ax.set_title(f"{method}: log RIR per pair")
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110, bbox_inches="tight")


def write_tables(out_dir: Path, rows: list[SweepRow], *, methods: list[str]) -> None:
    """``sweep.csv`` and ``sweep.md`` in ``out_dir``, and one heat map per name in
    ``methods`` (digit experiments); each file is written to a temporary name and renamed."""
    replace_atomically(out_dir / "sweep.csv", partial(_write_csv, rows=rows))
    replace_atomically(out_dir / "sweep.md", partial(_write_markdown, rows=rows))
    for method in methods:
        chosen = [r for r in rows if r.method == method]
        replace_atomically(
            out_dir / f"heatmap_{method}.png", partial(_heatmap, rows=chosen, method=method)
        )
