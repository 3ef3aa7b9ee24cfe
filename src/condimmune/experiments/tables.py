"""A sweep's tables, for both families: one :class:`SweepRow` per run (``sweep.csv``), and
per method the summary of its runs (:class:`MethodStats`, rendered by the family's
:class:`SummaryColumn` list into the printed table and ``sweep.md``).

``sweep.csv`` has the columns ``experiment, method, seed``, the family's columns (for the
linear family the digit pair first; :attr:`~condimmune.experiments.pipeline.Pipeline.
sweep_columns`), then ``settings, method_settings`` (fingerprints of the config a run's
numbers depend on, :func:`row_settings`: what ``condimmune sweep-table`` compares before it
combines sweeps), ``run_dir, error``. A failed run has ``error`` set (the first line of
the exception) and empty result cells. Every summary cell is computed from the rows alone,
so a table combined from sweeps run apart (``condimmune sweep-table``) is the table one
sweep would have written. Means are arithmetic means over a method's successful runs (the
paper's Table 2), standard deviations the sample std over them (n − 1; 0 for one run, as
the paper's Table 3 over its seeds), medians beside them.
"""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import MappingProxyType
from typing import TypeAlias

from condimmune._files import replace_atomically
from condimmune.experiments.config import Config
from condimmune.experiments.config.results import result_settings
from condimmune.experiments.plan import fingerprint
from condimmune.experiments.report import FigureSpec, Table, format_number

__all__ = [
    "Cell",
    "Column",
    "MethodStats",
    "SummaryColumn",
    "SweepRow",
    "arrow",
    "count",
    "csv_columns",
    "mean",
    "mean_std",
    "median",
    "row_settings",
    "summarize",
    "summary_table",
    "write_csv",
    "write_markdown",
    "write_tables",
]


@dataclass(frozen=True)
class Column:
    """A result column of a sweep's ``sweep.csv``: its name and the type of its cells."""

    name: str
    kind: type[int] | type[float] | type[bool] | type[str]


Cell: TypeAlias = int | float | bool | str | None
HEAD: tuple[Column, ...] = (Column("experiment", str), Column("method", str), Column("seed", int))
TAIL: tuple[Column, ...] = (
    Column("settings", str),
    Column("method_settings", str),
    Column("run_dir", str),
    Column("error", str),
)


def csv_columns(family_columns: Sequence[Column]) -> tuple[Column, ...]:
    """Every column of a ``sweep.csv`` whose family has ``family_columns``."""
    return (*HEAD, *family_columns, *TAIL)


@dataclass(frozen=True)
class SweepRow:
    """One run of a sweep, one line of ``sweep.csv``: ``values`` holds the family's columns
    (``None`` where a run has no value: every result of a failed run). ``row["rir"]`` reads
    one."""

    experiment: str
    method: str
    seed: int
    values: Mapping[str, Cell]
    run_dir: str
    error: str = ""
    settings: str = ""
    """The fingerprint of the config keys its numbers depend on, apart from the job's own
    (method, seed, digit pair): the same for every row that may share a table."""
    method_settings: str = ""
    """The fingerprint of its ``method`` section: the same for every row of one method."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", MappingProxyType(dict(self.values)))

    def __reduce__(self) -> tuple[type[SweepRow], tuple[object, ...]]:
        # rows cross process boundaries (a sweep's workers); a mapping proxy does not pickle
        values = dict(self.values)
        fields = (self.run_dir, self.error, self.settings, self.method_settings)
        return (SweepRow, (self.experiment, self.method, self.seed, values, *fields))

    @property
    def failed(self) -> bool:
        return bool(self.error)

    def __getitem__(self, name: str) -> Cell:
        return self.values[name]

    def cells(self, columns: Sequence[Column]) -> dict[str, object]:
        """The row for :class:`csv.DictWriter` (``None`` → empty cell)."""
        every = {"experiment": self.experiment, "method": self.method, "seed": self.seed}
        every |= {"run_dir": self.run_dir, "error": self.error, **self.values}
        every |= {"settings": self.settings, "method_settings": self.method_settings}
        return {c.name: "" if (v := every.get(c.name)) is None else v for c in columns}

    @staticmethod
    def error_text(error: BaseException) -> str:
        """The ``error`` cell of a run that raised ``error``: its first line."""
        return f"{type(error).__name__}: {error}".splitlines()[0]


_JOB_KEYS = ("seed", "train.method", "method", "data.benign_digit", "data.harmful_digit")
"""The config keys that tell a sweep's jobs apart (the method's own section included)."""


def row_settings(config: Config) -> dict[str, str]:
    """The ``settings`` and ``method_settings`` of a run made with ``config``."""
    return {
        "settings": fingerprint(result_settings(config, leave_out=_JOB_KEYS)),
        "method_settings": fingerprint(config.method.model_dump(mode="json")),
    }


def row_order(methods: Sequence[str]) -> Callable[[SweepRow], tuple[object, ...]]:
    """Rows in ``methods`` order, then by their key cells (the digit pair), then seed."""
    rank = {m: i for i, m in enumerate(methods)}

    def key(row: SweepRow) -> tuple[object, ...]:
        pair = tuple("" if v is None else str(v) for k, v in row.values.items() if k in _KEYS)
        return (rank.get(row.method, len(rank)), row.method, pair, row.seed)

    return key


_KEYS = frozenset({"benign", "harmful"})
"""Columns that identify a job within (method, seed), not a result."""


def write_csv(path: Path, rows: Sequence[SweepRow], family_columns: Sequence[Column]) -> None:
    columns = csv_columns(family_columns)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=[c.name for c in columns])
        writer.writeheader()
        writer.writerows(r.cells(columns) for r in rows)


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


def summarize(rows: Sequence[SweepRow], methods: Sequence[str]) -> list[MethodStats]:
    """Per method of ``methods`` (in that order) the :class:`MethodStats` of its rows."""
    out = []
    for method in methods:
        ok = [r for r in rows if r.method == method and not r.failed]
        failed = sum(1 for r in rows if r.method == method and r.failed)
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
    runs = [c for c in (*HEAD[1:], *family_columns) if c.name != "experiment"]
    lines = [f"# {title}", "", notes, "", *summary_table(stats, columns).markdown(), ""]
    lines += ["## Runs", "", *Table([*(c.name for c in runs), "run directory"], []).markdown()]
    for r in rows:
        every = {"method": r.method, "seed": r.seed, **r.values}
        if r.failed:
            keys = [str(every[c.name]) for c in runs if c.name in ("method", "seed", *_KEYS)]
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
