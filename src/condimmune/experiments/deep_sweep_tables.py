"""A deep sweep's tables: one :class:`DeepSweepRow` per run (``sweep.csv``), the Table-3-style
per-method summary, mean ± std over seeds (``sweep.md``), and ``sweep.png``.

The std is the sample standard deviation over the seeds (n − 1), as the paper's Table 3
reports over its 3 seeds; with one seed it is 0. Every summary cell is computed from the
rows of ``sweep.csv`` alone (a test recomputes them).
"""

from __future__ import annotations

import csv
import dataclasses
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

from condimmune.experiments.config import DeepExperimentConfig
from condimmune.experiments.records import DeepRunMetrics
from condimmune.experiments.report import format_number, save_figure

__all__ = [
    "DEEP_CSV_FIELDS",
    "DeepMethodSummary",
    "DeepSweepRow",
    "MeanStd",
    "summarize_deep",
    "summary_lines",
    "summary_table",
    "write_deep_tables",
]


@dataclass(frozen=True, kw_only=True)
class DeepSweepRow:
    """One deep run of a sweep, one line of ``sweep.csv``; a failed run has ``error`` set and
    ``None`` (an empty cell) in every result field. ``rir``/``harmful_ratio``/``benign_ratio``
    are the means over the run's ``eval.groups`` groups (honest κ); ``paper_*`` the same on
    the paper's 20 groups × 100. Accuracies are top-1 on the held-out sets."""

    experiment: str
    method: str
    seed: int
    rir: float | None = None
    rir_paper_compatible: float | None = None
    harmful_ratio: float | None = None
    benign_ratio: float | None = None
    paper_rir: float | None = None
    paper_rir_paper_compatible: float | None = None
    paper_harmful_ratio: float | None = None
    paper_benign_ratio: float | None = None
    benign_head_original: float | None = None
    benign_head_immunized: float | None = None
    benign_probe_original: float | None = None
    benign_probe_immunized: float | None = None
    harmful_probe_original: float | None = None
    harmful_probe_immunized: float | None = None
    probe_steps_original: int | None = None
    probe_steps_immunized: int | None = None
    probe_slowdown: float | None = None
    gd_steps_original: int | None = None
    gd_steps_immunized: int | None = None
    gd_slowdown: float | None = None
    whitened_gd_slowdown: float | None = None
    prefix_seconds: float | None = None
    train_seconds: float | None = None
    wall_seconds: float | None = None
    run_dir: str
    error: str = ""

    @property
    def failed(self) -> bool:
        return bool(self.error)

    @classmethod
    def from_metrics(cls, m: DeepRunMetrics, run_dir: str) -> DeepSweepRow:
        r, paper = m.rir_theta0, m.rir_theta0_paper_protocol
        probe, gd = m.attack.linear_probe, m.attack.gd
        return cls(
            experiment=m.experiment,
            method=m.method,
            seed=m.seed,
            rir=r.honest.rir_mean,
            rir_paper_compatible=r.paper_compatible.rir_mean,
            harmful_ratio=r.honest.harmful_ratio_mean,
            benign_ratio=r.honest.benign_ratio_mean,
            paper_rir=paper.honest.rir_mean if paper else None,
            paper_rir_paper_compatible=paper.paper_compatible.rir_mean if paper else None,
            paper_harmful_ratio=paper.honest.harmful_ratio_mean if paper else None,
            paper_benign_ratio=paper.honest.benign_ratio_mean if paper else None,
            benign_head_original=m.benign_accuracy.original,
            benign_head_immunized=m.benign_accuracy.immunized,
            benign_probe_original=m.benign_probe.original if m.benign_probe else None,
            benign_probe_immunized=m.benign_probe.immunized if m.benign_probe else None,
            harmful_probe_original=probe.final_accuracy_original,
            harmful_probe_immunized=probe.final_accuracy_immunized,
            probe_steps_original=probe.steps_original,
            probe_steps_immunized=probe.steps_immunized,
            probe_slowdown=probe.slowdown,
            gd_steps_original=gd.steps_original,
            gd_steps_immunized=gd.steps_immunized,
            gd_slowdown=gd.slowdown,
            whitened_gd_slowdown=m.attack.gd_whitened.slowdown,
            prefix_seconds=m.prefix_seconds,
            train_seconds=m.train_seconds,
            wall_seconds=m.wall_seconds,
            run_dir=run_dir,
        )

    @classmethod
    def from_error(
        cls, config: DeepExperimentConfig, run_dir: str, error: BaseException
    ) -> DeepSweepRow:
        return cls(
            experiment=config.experiment,
            method=config.train.method,
            seed=config.seed,
            run_dir=run_dir,
            error=f"{type(error).__name__}: {error}".splitlines()[0],
        )

    def csv_row(self) -> dict[str, object]:
        return {
            f.name: "" if (v := getattr(self, f.name)) is None else v
            for f in dataclasses.fields(self)
        }


DEEP_CSV_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(DeepSweepRow))
"""The columns of a deep sweep's ``sweep.csv``."""

SUMMARIZED: tuple[str, ...] = tuple(
    name
    for name in DEEP_CSV_FIELDS
    if name not in ("experiment", "method", "seed", "run_dir", "error")
)
"""The result columns averaged over seeds."""


@dataclass(frozen=True)
class MeanStd:
    """Mean and sample standard deviation over the seeds that have the value (``n`` of them;
    a probe that never reached its level has no step count)."""

    mean: float
    std: float
    n: int


@dataclass(frozen=True)
class DeepMethodSummary:
    """Per method: successful and failed runs, and :class:`MeanStd` per result column."""

    method: str
    runs: int
    failed: int
    values: dict[str, MeanStd]

    def get(self, name: str) -> MeanStd | None:
        return self.values.get(name)


def _mean_std(values: list[float]) -> MeanStd:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return MeanStd(statistics.fmean(values), std, len(values))


def summarize_deep(rows: list[DeepSweepRow], methods: list[str]) -> list[DeepMethodSummary]:
    """Mean ± std over seeds of every result column, per method, in ``methods`` order."""
    out = []
    for method in methods:
        ok = [r for r in rows if r.method == method and not r.failed]
        values = {}
        for name in SUMMARIZED:
            present = [float(v) for r in ok if (v := getattr(r, name)) is not None]
            if present:
                values[name] = _mean_std(present)
        failed = sum(1 for r in rows if r.method == method and r.failed)
        out.append(DeepMethodSummary(method, len(ok), failed, values))
    return out


def _pm(s: DeepMethodSummary, name: str) -> str:
    v = s.get(name)
    return "—" if v is None else f"{format_number(v.mean)} ± {format_number(v.std)}"


def _arrow(s: DeepMethodSummary, before: str, after: str) -> str:
    """``θ0 mean → θ_I mean (± θ_I std)``; a value some runs lack (a probe that never
    reached its level) says in how many runs."""
    a, b = s.get(before), s.get(after)

    def missing(v: MeanStd | None) -> str:
        n = 0 if v is None else v.n
        return f" ({s.runs - n}/{s.runs} not reached)" if n < s.runs else ""

    if a is None or b is None:
        shown = "—" if a is None else format_number(a.mean)
        return f"{shown} → —{missing(b)}" if s.runs else "—"
    return (
        f"{format_number(a.mean)} → {format_number(b.mean)} (± {format_number(b.std)})" + missing(b)
    )


TABLE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("RIR_θ0 honest", "rir"),
    ("RIR_θ0 paper-compat.", "rir_paper_compatible"),
    ("(i) harmful κ ratio", "harmful_ratio"),
    ("(ii) benign κ ratio", "benign_ratio"),
    ("20×100: RIR_θ0 honest", "paper_rir"),
    ("20×100: paper-compat.", "paper_rir_paper_compatible"),
)
"""The mean ± std columns of the Table-3-style summary: (header, row field)."""

ARROW_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("benign probe top-1 θ0 → θ_I", "benign_probe_original", "benign_probe_immunized"),
    ("benign head top-1 θ0 → θ_I", "benign_head_original", "benign_head_immunized"),
    ("harmful probe top-1 θ0 → θ_I", "harmful_probe_original", "harmful_probe_immunized"),
    ("softmax probe steps θ0 → θ_I", "probe_steps_original", "probe_steps_immunized"),
    ("GD 1/L steps θ0 → θ_I", "gd_steps_original", "gd_steps_immunized"),
)
"""The before → after columns: (header, θ0 field, θ_I field)."""


def summary_table(summaries: list[DeepMethodSummary]) -> tuple[list[str], list[list[str]]]:
    """The Table-3-style summary: its columns and one row of cells per method."""
    headers = [
        "method",
        "runs",
        *(h for h, _ in TABLE_COLUMNS),
        *(h for h, _, _ in ARROW_COLUMNS),
        "whitened GD slowdown",
        "s/run",
    ]
    rows = [
        [
            s.method,
            f"{s.runs}" + (f" ({s.failed} failed)" if s.failed else ""),
            *(_pm(s, name) for _, name in TABLE_COLUMNS),
            *(_arrow(s, a, b) for _, a, b in ARROW_COLUMNS),
            _pm(s, "whitened_gd_slowdown"),
            _pm(s, "wall_seconds"),
        ]
        for s in summaries
    ]
    return headers, rows


def summary_lines(summaries: list[DeepMethodSummary]) -> list[str]:
    """The Table-3-style markdown table (one line per method)."""
    headers, rows = summary_table(summaries)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return lines + ["| " + " | ".join(cells) + " |" for cells in rows]


def _write_markdown(path: Path, rows: list[DeepSweepRow], methods: list[str]) -> None:
    lines = [
        "# Deep sweep",
        "",
        "Mean ± sample std over seeds. RIR_θ0 and the κ ratios: mean over each run's groups "
        "(honest κ unless marked); `20×100`: the paper's protocol. Probe accuracies: top-1 on "
        "the held-out sets; `→` gives θ0's and θ_I's means (± θ_I's std).",
        "",
        *summary_lines(summarize_deep(rows, methods)),
        "",
        "## Runs",
        "",
        "| method | seed | RIR_θ0 honest | (i) | (ii) | benign probe θ0 → θ_I | "
        "harmful probe θ0 → θ_I | GD steps θ0 → θ_I | s | run directory |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    f = format_number
    for r in rows:
        if r.failed:
            lines.append(f"| {r.method} | {r.seed} | failed: {r.error} |" + " |" * 7)
            continue
        lines.append(
            f"| {r.method} | {r.seed} | {f(r.rir)} | {f(r.harmful_ratio)} | "
            f"{f(r.benign_ratio)} | {f(r.benign_probe_original)} → "
            f"{f(r.benign_probe_immunized)} | {f(r.harmful_probe_original)} → "
            f"{f(r.harmful_probe_immunized)} | {f(r.gd_steps_original)} → "
            f"{f(r.gd_steps_immunized)} | {f(r.wall_seconds)} | {r.run_dir} |"
        )
    path.write_text("\n".join(lines) + "\n")


def _figure(path: Path, summaries: list[DeepMethodSummary]) -> None:
    """Honest RIR_θ0 per method (log scale, error bar = std over seeds), and the benign
    probe accuracy it keeps against it."""
    shown = [s for s in summaries if s.get("rir") is not None]
    fig = Figure(figsize=(11, 4))
    ax = fig.add_subplot(1, 2, 1)
    rir = [s.values["rir"] for s in shown]
    ax.bar(range(len(shown)), [v.mean for v in rir], yerr=[v.std for v in rir], capsize=4)
    ax.axhline(1.0, color="grey", lw=0.8, ls=":")
    ax.set_xticks(range(len(shown)), [s.method for s in shown], rotation=30)
    ax.set_yscale("log")
    ax.set_ylabel("RIR_θ0 (honest κ), mean ± std over seeds")
    ax2 = fig.add_subplot(1, 2, 2)
    for s in shown:
        acc = s.get("benign_probe_immunized") or s.get("benign_head_immunized")
        if acc is not None and math.isfinite(s.values["rir"].mean):
            ax2.errorbar(s.values["rir"].mean, acc.mean, yerr=acc.std, fmt="o", capsize=3)
            ax2.annotate(s.method, (s.values["rir"].mean, acc.mean), fontsize=8)
    ax2.set_xscale("log")
    ax2.set_xlabel("RIR_θ0 (honest κ)")
    ax2.set_ylabel("benign top-1 of θ_I")
    fig.tight_layout()
    save_figure(fig, path)


def write_deep_tables(out_dir: Path, rows: list[DeepSweepRow], methods: list[str]) -> None:
    """``sweep.csv``, ``sweep.md`` and ``sweep.png`` (each written atomically)."""
    from condimmune.experiments.rundir import replace_atomically

    def write_csv(p: Path) -> None:
        with p.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=DEEP_CSV_FIELDS)
            writer.writeheader()
            writer.writerows(r.csv_row() for r in rows)

    replace_atomically(out_dir / "sweep.csv", write_csv)
    replace_atomically(out_dir / "sweep.md", lambda p: _write_markdown(p, rows, methods))
    summaries = summarize_deep(rows, methods)
    replace_atomically(out_dir / "sweep.png", lambda p: _figure(p, summaries))
