"""A sweep's tables, for both families: per arm (a method, or a method with one
combination of the swept ``--set`` values) the summary of its runs (:class:`MethodStats`,
rendered by the family's :class:`SummaryColumn` list into the printed table and
``sweep.md``), from the rows of ``sweep.csv`` (:mod:`condimmune.experiments.sweep_rows`).

Every summary cell is computed from the rows alone,
so a table combined from sweeps run apart (``condimmune sweep-table``) is the table one
sweep would have written. Means are arithmetic means over a method's successful runs (the
paper's Table 2), standard deviations the sample std over them (n − 1; 0 for one run, as
the paper's Table 3 over its seeds), medians beside them.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from condimmune._files import replace_atomically
from condimmune.experiments.report import FigureSpec, Table, format_number
from condimmune.experiments.sweep_rows import HEAD, KEYS, Cell, Column, SweepRow, write_csv

__all__ = [
    "MethodStats",
    "SummaryColumn",
    "arrow",
    "count",
    "mean",
    "mean_std",
    "median",
    "summarize",
    "summary_table",
    "write_markdown",
    "write_tables",
]


# ------------------------------------------------------------------------------ summaries
@dataclass(frozen=True)
class MethodStats:
    """One method's runs: how many succeeded and failed, and per column the values of the
    successful runs that have one (in row order)."""

    method: str
    runs: int
    failed: int
    values: Mapping[str, list[Cell]] = field(default_factory=dict)

    def numbers(self, name: str) -> list[float]:
        return [float(v) for v in self.values.get(name, []) if isinstance(v, int | float)]


def summarize(rows: Sequence[SweepRow], arms: Sequence[str]) -> list[MethodStats]:
    """Per arm of ``arms`` (:attr:`SweepRow.arm`: a method, or a method and a variant; in
    that order) the :class:`MethodStats` of its rows."""
    out = []
    for method in arms:
        ok = [r for r in rows if r.arm == method and not r.failed]
        failed = sum(1 for r in rows if r.arm == method and r.failed)
        names = dict.fromkeys(name for r in ok for name in r.values)
        values = {n: [r.values[n] for r in ok if r.values.get(n) is not None] for n in names}
        out.append(MethodStats(method, len(ok), failed, values))
    return out


@dataclass(frozen=True)
class SummaryColumn:
    """A column of a sweep's per-method summary: its header and its cell."""

    header: str
    cell: Callable[[MethodStats], str]


def _finite_or_inf(values: list[float]) -> list[float]:
    """The finite values, or ``[inf]`` when every value is infinite (an unbounded bound)."""
    finite = [v for v in values if math.isfinite(v)]
    return finite if finite or not values else [math.inf]


def mean(header: str, name: str, *, skip_infinite: bool = False) -> SummaryColumn:
    """The mean of ``name`` (``—`` without values); ``skip_infinite``: over its finite
    values (``inf`` when all are infinite)."""

    def cell(s: MethodStats) -> str:
        values = s.numbers(name)
        values = _finite_or_inf(values) if skip_infinite else values
        return format_number(statistics.fmean(values)) if values else "—"

    return SummaryColumn(header, cell)


def median(header: str, name: str) -> SummaryColumn:
    def cell(s: MethodStats) -> str:
        values = s.numbers(name)
        return format_number(statistics.median(values)) if values else "—"

    return SummaryColumn(header, cell)


def _mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{format_number(statistics.fmean(values))} ± {format_number(std)}"


def mean_std(header: str, name: str) -> SummaryColumn:
    """``mean ± sample std`` of ``name``."""

    def cell(s: MethodStats) -> str:
        values = s.numbers(name)
        return _mean_std(values) if values else "—"

    return SummaryColumn(header, cell)


def count(header: str, name: str, test: Callable[[Cell], bool] = bool) -> SummaryColumn:
    """``k/n``: the runs whose ``name`` passes ``test`` (default: is true), of ``n`` runs."""

    def cell(s: MethodStats) -> str:
        return f"{sum(test(v) for v in s.values.get(name, []))}/{s.runs}" if s.runs else "—"

    return SummaryColumn(header, cell)


def arrow(header: str, before: str, after: str, *, spread: bool = True) -> SummaryColumn:
    """``mean before → mean after`` (with ``spread``: ``(± std after)``); a value some runs
    lack (a probe that never reached its level) says in how many."""

    def cell(s: MethodStats) -> str:
        if not s.runs:
            return "—"
        a, b = s.numbers(before), s.numbers(after)
        missing = f" ({s.runs - len(b)}/{s.runs} not reached)" if len(b) < s.runs else ""
        shown_a = format_number(statistics.fmean(a)) if a else "—"
        if not b:
            return f"{shown_a} → —{missing}"
        shown_b = format_number(statistics.fmean(b))
        if spread:
            std = statistics.stdev(b) if len(b) > 1 else 0.0
            shown_b += f" (± {format_number(std)})"
        return f"{shown_a} → {shown_b}{missing}"

    return SummaryColumn(header, cell)


def summary_table(
    stats: Sequence[MethodStats], columns: Sequence[SummaryColumn], *, title: str | None = None
) -> Table:
    """The summary: a row per method, ``method`` and ``runs`` (and failures) first."""
    rows = [
        [
            s.method,
            f"{s.runs}" + (f" ({s.failed} failed)" if s.failed else ""),
            *(c.cell(s) for c in columns),
        ]
        for s in stats
    ]
    return Table(["method", "runs", *(c.header for c in columns)], rows, title)


def write_markdown(
    path: Path,
    rows: Sequence[SweepRow],
    stats: Sequence[MethodStats],
    columns: Sequence[SummaryColumn],
    family_columns: Sequence[Column],
    *,
    title: str,
    notes: str,
) -> None:
    """``sweep.md``: the summary, then one line per run (every column, failed runs with
    their error)."""
    varied = any(r.variant for r in rows)  # a variant column only for a sweep over keys
    runs = [c for c in (*HEAD[1:], *family_columns) if c.name != "variant" or varied]
    lines = [f"# {title}", "", notes, "", *summary_table(stats, columns).markdown(), ""]
    lines += ["## Runs", "", *Table([*(c.name for c in runs), "run directory"], []).markdown()]
    for r in rows:
        every = {"method": r.method, "variant": r.variant, "seed": r.seed, **r.values}
        if r.failed:
            keys = [str(every[c.name]) for c in runs if c.name in (*(h.name for h in HEAD), *KEYS)]
            lines.append("| " + " | ".join([*keys, f"failed: {r.error}"]) + " |")
            continue
        cells = [format_number(every.get(c.name)) for c in runs]
        lines.append("| " + " | ".join([*cells, r.run_dir]) + " |")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_tables(
    out: Path,
    rows: Sequence[SweepRow],
    methods: list[str],
    *,
    family_columns: Sequence[Column],
    summary: tuple[Sequence[SummaryColumn], Sequence[SummaryColumn]],
    figures: Sequence[FigureSpec],
) -> Table:
    """``sweep.csv``, ``sweep.md`` and ``figures`` in ``out`` (each file written to a
    temporary name and renamed); ``summary``: the summary columns the command prints and
    those ``sweep.md`` shows. Returns the printed summary."""
    printed, markdown = summary
    stats = summarize(rows, methods)
    experiment = rows[0].experiment if rows else "?"
    replace_atomically(
        out / "sweep.csv", partial(write_csv, rows=rows, family_columns=family_columns)
    )
    replace_atomically(
        out / "sweep.md",
        partial(
            write_markdown,
            rows=rows,
            stats=stats,
            columns=markdown,
            family_columns=family_columns,
            title=f"Sweep: {experiment}",
            notes=_NOTES,
        ),
    )
    for figure in figures:
        replace_atomically(out / figure.name, figure.draw)
    return summary_table(stats, printed, title=f"sweep: {experiment} ({len(rows)} runs)")


_NOTES = (
    "Per method: means (and medians) over its successful runs, ± the sample standard "
    "deviation over them; `k/n` counts runs. RIR and the κ ratios use the honest κ unless "
    "marked paper-compatible. `→` gives the original model's and the immunized model's means."
)
