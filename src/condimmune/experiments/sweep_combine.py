"""``condimmune sweep-table SWEEP... --out DIR``: the tables of sweeps run apart, combined.

A 90-pair raw-pixel sweep of one method takes about an hour on two cores, so the methods of
one table are often swept in separate sessions or on separate machines. Each sweep's
``sweep.csv`` holds every number of its rows (:class:`~condimmune.experiments.tables.
SweepRow`; its columns are its family's, :mod:`condimmune.experiments.tables`); this module
reads them back (each row checked: its cells, its digit pair, the results a finished run
must have, finite numbers), and refuses to mix: a job that appears twice, sweeps of
different experiments, rows whose ``settings`` differ (the fingerprint of every config key
the numbers depend on apart from method, seed and digit pair: epochs, data, weights, ...;
:func:`~condimmune.experiments.tables.row_settings`) and rows of one method whose
``method_settings`` differ (its λ's). It writes the same ``sweep.csv``, ``sweep.md`` and
figures as one sweep would, into a new directory, atomically.
"""

from __future__ import annotations

import csv
import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from condimmune.core.errors import UncheckedInputWarning, UserError
from condimmune.experiments.pipeline import Pipeline, pipeline_for
from condimmune.experiments.registry import experiment_spec
from condimmune.experiments.report import Table
from condimmune.experiments.rundir import claim_output_dir, write_directory_atomically
from condimmune.experiments.sweep_rows import (
    HEAD,
    TAIL,
    Column,
    SweepRow,
    csv_columns,
    row_order,
)
from condimmune.methods.base import ModelFamily

__all__ = ["combine_sweeps", "read_sweep_csv"]

_FIX = "pass the sweep.csv (or the directory) that `condimmune sweep` wrote"

_OPTIONAL_IN_A_FINISHED_RUN = frozenset(
    {
        "rir_fraction_of_bound",  # unbounded problems have no fraction
        "paper_rir",  # the paper's 20 × 100 protocol needs 100 samples per task
        "paper_rir_paper_compatible",
        "paper_harmful_ratio",
        "paper_benign_ratio",
        "benign_probe_original",  # the benign probe is optional
        "benign_probe_immunized",
        "probe_steps_original",  # a probe that never reached its level has no step count
        "probe_steps_immunized",
        "prefix_seconds",  # only with a prefix cache
    }
)
"""Result columns a finished run (no error) may leave empty; every other one it must fill."""
_KEYS = ("benign", "harmful")
_SETTINGS = ("variant", "settings", "method_settings")
"""Columns a sweep.csv written before them lacks (read as empty: not checked)."""
_MAY_BE_INFINITE = frozenset({"bound"})
"""Result columns where ``inf`` is a value (an unbounded problem), not a broken run."""


def _bool(text: str) -> bool:
    if text not in ("True", "False"):
        raise ValueError(f"expected True or False, got {text!r}")
    return text == "True"


_PARSE: dict[type, Callable[[str], Any]] = {int: int, float: float, bool: _bool, str: str}


def _inconsistency(row: SweepRow, pipeline: Pipeline[Any, Any, Any]) -> str:
    """What makes ``row`` unusable in a table ("" if nothing)."""
    keys = [row.values.get(k) for k in _KEYS if k in row.values]
    if keys:
        if experiment_spec(row.experiment).digit_pairs:
            if not all(isinstance(d, int) and 0 <= d <= 9 for d in keys):
                return f"the digit pair {'-'.join(map(str, keys))} is not two digits 0-9"
        elif any(d is not None for d in keys):
            return f"a {row.experiment} run has no digit pair"
    results = [c.name for c in pipeline.sweep_columns if c.name not in _KEYS]
    missing = [
        n for n in results if row.values.get(n) is None and n not in _OPTIONAL_IN_A_FINISHED_RUN
    ]
    if not row.failed and missing:
        return f"a finished run (no error) without {', '.join(missing)}"
    for name in results:
        value = row.values.get(name)
        allowed = name in _MAY_BE_INFINITE and value == math.inf
        if isinstance(value, float) and not math.isfinite(value) and not allowed:
            return f"{name} is {value}, not a finite number"
    return ""


def _parse(
    cells: dict[str | None, Any],
    columns: Sequence[Column],
    pipeline: Pipeline[Any, Any, Any],
    path: Path,
    line: int,
) -> SweepRow:
    """One data line of ``path`` (``csv.DictReader``: extra cells under ``None``, missing
    ones ``None``) as a checked :class:`SweepRow`."""
    if None in cells or None in cells.values():
        extra, missing = len(cells.get(None) or []), sum(v is None for v in cells.values())
        given = len(columns) + extra - missing
        raise UserError(
            f"line {line} has {given} cells, a sweep.csv row has {len(columns)}", path, _FIX
        )
    values: dict[str, Any] = {}
    for column in columns:
        text = cells[column.name]
        if column in TAIL:
            values[column.name] = text
        elif text == "" and column not in HEAD:
            values[column.name] = None  # an empty result cell
        else:
            try:
                values[column.name] = _PARSE[column.kind](text)
            except ValueError as exc:
                raise UserError(f"line {line}, column {column.name}: {exc}", path, _FIX) from None
    fixed = {c.name: values.pop(c.name) for c in (*HEAD, *TAIL) if c.name in values}
    row = SweepRow(values=values, **fixed)
    if problem := _inconsistency(row, pipeline):
        raise UserError(f"line {line}: {problem}", path, _FIX)
    return row


def _pipeline(path: Path, first: dict[str, Any] | None) -> Pipeline[Any, Any, Any]:
    """The pipeline of the sweep whose first data line is ``first``."""
    experiment = (first or {}).get("experiment") or ""
    try:
        return pipeline_for(experiment_spec(experiment).family)
    except ValueError:
        raise UserError(f"line 2: unknown experiment {experiment!r}", path, _FIX) from None


def read_sweep_csv(path: Path) -> list[SweepRow]:
    """The rows of a ``sweep.csv`` (or of the ``sweep.csv`` in directory ``path``), typed by
    its family's columns (empty cells are ``None``; ``inf`` bounds stay ``math.inf``). A
    missing, foreign or damaged file is a :class:`UserError` naming it."""
    path = path / "sweep.csv" if path.is_dir() else path
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            lines = list(reader)
            header = tuple(reader.fieldnames or ())
    except UnicodeDecodeError:
        raise UserError("not UTF-8 text", path, _FIX) from None
    except OSError as exc:
        raise UserError(f"cannot be read ({exc.strerror or exc})", path, _FIX) from None
    known = {tuple(c.name for c in csv_columns(pipeline_for(f).sweep_columns)) for f in ModelFamily}
    known |= {tuple(n for n in names if n not in _SETTINGS) for names in known}  # before them
    if header not in known:
        raise UserError(
            f"not a sweep.csv (its columns are {list(header)}, not those of a linear or a deep "
            "sweep)",
            path,
            _FIX,
        )
    pipeline = _pipeline(path, lines[0] if lines else None)
    columns = csv_columns(pipeline.sweep_columns)
    if _SETTINGS[1] not in header:
        warnings.warn(
            f"{path}: written before sweep.csv recorded the settings of its runs, so they "
            "cannot be checked against the other sweeps: combine it only with sweeps of the "
            "same command",
            UncheckedInputWarning,
            stacklevel=2,
        )
        columns = tuple(c for c in columns if c.name not in _SETTINGS)
    if tuple(c.name for c in columns) != header:
        raise UserError(
            f"holds {pipeline.family.value} runs under the columns of another family",
            path,
            _FIX,
        )
    return [_parse(cells, columns, pipeline, path, i) for i, cells in enumerate(lines, start=2)]


class _SameSettings:
    """The settings of the rows read so far: the first row's, and each method's first."""

    _FIX = "combine sweeps run with the same config and --set (each method with one options)"

    def __init__(self) -> None:
        self.settings: tuple[str, Path] | None = None
        self.method_settings: dict[str, tuple[str, Path]] = {}

    def check(self, row: SweepRow, path: Path) -> None:
        """Refuse ``row`` (read from ``path``) if its settings differ from those seen."""
        settings, where = self.settings = self.settings or (row.settings, path)
        if row.settings != settings and not (row.settings and settings):
            raise UserError(
                f"only one of it and {where} records the settings of its runs (the other was "
                "written before sweep.csv did), so they cannot be compared",
                path,
                self._FIX,
            )
        if row.settings != settings:
            raise UserError(
                f"its runs were made with other settings than those of {where} (config "
                f"fingerprint {row.settings} vs {settings}: epochs, data, weights or another "
                "key the numbers depend on)",
                path,
                self._FIX,
            )
        method, where = self.method_settings.setdefault(row.arm, (row.method_settings, path))
        if row.method_settings != method:
            raise UserError(
                f"its {row.arm} runs were made with other options than those of {where} "
                f"(method fingerprint {row.method_settings} vs {method})",
                path,
                self._FIX,
            )


def combine_sweeps(paths: Sequence[Path], out: Path) -> tuple[list[SweepRow], Table]:
    """Read every sweep in ``paths``, write their combined tables into the new directory
    ``out`` and return the rows (by method, pair and seed) and the printed summary. A job
    (method, seed, pair) found in two sweeps is refused (the table would count it twice),
    and so are sweeps of different experiments (their means would be mixed)."""
    if not paths:
        raise UserError("no sweep given", ".", _FIX)
    rows: list[SweepRow] = []
    seen: dict[tuple[object, ...], Path] = {}
    experiments: dict[str, Path] = {}
    same = _SameSettings()
    for path in paths:
        for row in read_sweep_csv(path):
            pair = tuple(row.values.get(k) for k in _KEYS)
            job = (row.arm, row.seed, *pair)
            if job in seen:
                shown = "-".join(map(str, pair))
                raise UserError(
                    f"the run {row.arm}, seed {row.seed}, pair {shown} is also in {seen[job]}",
                    path,
                    "combine each run once (remove one of the two sweeps)",
                )
            experiments.setdefault(row.experiment, path)
            if len(experiments) > 1:
                (first, where), *_ = experiments.items()
                raise UserError(
                    f"a sweep of {row.experiment}, and one of {first} in {where}",
                    path,
                    "combine the sweeps of one experiment (and one config) only",
                )
            same.check(row, path)
            seen[job] = path
            rows.append(row)
    methods = sorted({r.arm for r in rows})
    rows.sort(key=row_order(methods))
    pipeline = pipeline_for(experiment_spec(rows[0].experiment).family) if rows else None
    summary = Table([], [])
    with claim_output_dir(out) as claimed:

        def write(tmp: Path) -> None:
            nonlocal summary
            if pipeline is not None:
                summary = pipeline.write_sweep(tmp, rows, methods)

        write_directory_atomically(claimed, write)
    return rows, summary
