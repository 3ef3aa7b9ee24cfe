"""``condimmune sweep-table SWEEP... --out DIR``: the tables of sweeps run apart, combined.

A 90-pair raw-pixel sweep of one method takes about an hour on two cores, so the methods of
one table are often swept in separate sessions or on separate machines. Each sweep's
``sweep.csv`` holds every number of its rows (:class:`~condimmune.experiments.sweep_tables.
SweepRow`); this module reads them back, refuses a job that appears twice, and writes the
same ``sweep.csv``, ``sweep.md`` and heat maps as one sweep would, into a new directory,
atomically.
"""

from __future__ import annotations

import csv
import typing
from collections.abc import Callable, Sequence
from pathlib import Path

from condimmune.core.errors import UserError
from condimmune.experiments.registry import Experiment
from condimmune.experiments.rundir import claim_output_dir, write_directory_atomically
from condimmune.experiments.sweep_tables import CSV_FIELDS, SweepRow, row_order, write_tables

__all__ = ["combine_sweeps", "read_sweep_csv"]

_FIX = "pass the sweep.csv (or the directory) that `condimmune sweep` wrote"


def _bool(text: str) -> bool:
    if text not in ("True", "False"):
        raise ValueError(f"expected True or False, got {text!r}")
    return text == "True"


def _parser(annotation: object) -> tuple[Callable[[str], object], bool]:
    """``(parse one non-empty cell, empty cell means None)`` for a :class:`SweepRow` field."""
    args = typing.get_args(annotation)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), annotation) if args else annotation
    parsers: dict[object, Callable[[str], object]] = {int: int, float: float, bool: _bool, str: str}
    return parsers[base], optional


_PARSERS = {
    name: _parser(annotation)
    for name, annotation in typing.get_type_hints(SweepRow).items()
    if name in CSV_FIELDS
}


def _row(cells: dict[str, str], path: Path, line: int) -> SweepRow:
    values: dict[str, object] = {}
    for name in CSV_FIELDS:
        text = cells[name]
        parse, optional = _PARSERS[name]
        if text == "" and optional:
            values[name] = None
            continue
        try:
            values[name] = parse(text)
        except ValueError as exc:
            raise UserError(f"line {line}, column {name}: {exc}", path, _FIX) from None
    return SweepRow(**values)  # type: ignore[arg-type]


def read_sweep_csv(path: Path) -> list[SweepRow]:
    """The rows of a ``sweep.csv`` (or of the ``sweep.csv`` in directory ``path``), typed as
    :class:`SweepRow` (empty cells of optional fields are ``None``, ``inf`` bounds stay
    ``math.inf``). A missing or foreign file is a :class:`UserError` naming it."""
    path = path / "sweep.csv" if path.is_dir() else path
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if tuple(reader.fieldnames or ()) != CSV_FIELDS:
                raise UserError(
                    f"not a sweep.csv (its columns are {reader.fieldnames}, a sweep.csv's are "
                    f"{list(CSV_FIELDS)})",
                    path,
                    _FIX,
                )
            return [_row(cells, path, i) for i, cells in enumerate(reader, start=2)]
    except UnicodeDecodeError:
        raise UserError("not UTF-8 text", path, _FIX) from None
    except OSError as exc:
        raise UserError(f"cannot be read ({exc.strerror or exc})", path, _FIX) from None


def _job(row: SweepRow) -> tuple[str, str, int, int | None, int | None]:
    return row.experiment, row.method, row.seed, row.benign, row.harmful


def combine_sweeps(paths: Sequence[Path], out: Path) -> list[SweepRow]:
    """Read every sweep in ``paths``, write their combined tables into the new directory
    ``out`` and return the rows (sorted by method, pair and seed). A job (experiment,
    method, seed, pair) found in two sweeps is refused: the table would count it twice."""
    if not paths:
        raise UserError("no sweep given", ".", _FIX)
    rows: list[SweepRow] = []
    seen: dict[tuple[str, str, int, int | None, int | None], Path] = {}
    for path in paths:
        for row in read_sweep_csv(path):
            job = _job(row)
            if job in seen:
                raise UserError(
                    f"the run {row.method}, seed {row.seed}, pair {row.benign}-{row.harmful} "
                    f"is also in {seen[job]}",
                    path,
                    "combine each run once (remove one of the two sweeps)",
                )
            seen[job] = path
            rows.append(row)
    rows.sort(key=row_order)
    digits = all(r.experiment != Experiment.HOUSE_PRICE for r in rows)
    methods = sorted({r.method for r in rows}) if digits else []
    with claim_output_dir(out) as claimed:
        write_directory_atomically(claimed, lambda tmp: write_tables(tmp, rows, methods=methods))
    return rows
