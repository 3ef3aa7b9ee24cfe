"""``condimmune sweep-table SWEEP... --out DIR``: the tables of sweeps run apart, combined.

A 90-pair raw-pixel sweep of one method takes about an hour on two cores, so the methods of
one table are often swept in separate sessions or on separate machines. Each sweep's
``sweep.csv`` holds every number of its rows (:class:`~condimmune.experiments.sweep_tables.
SweepRow`); this module reads them back (each row checked: its cells, its digit pair, the
results a finished run must have), refuses a job that appears twice and sweeps of different
experiments, and writes the same ``sweep.csv``, ``sweep.md`` and heat maps as one sweep
would, into a new directory, atomically. ``sweep.csv`` does not record the rest of the
config (``data.pca_components``, the weights): combine sweeps run with the same ``--set``.
"""

from __future__ import annotations

import csv
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from condimmune.core.errors import UserError
from condimmune.experiments.registry import Experiment
from condimmune.experiments.rundir import claim_output_dir, write_directory_atomically
from condimmune.experiments.sweep_tables import CSV_FIELDS, SweepRow, row_order, write_tables

__all__ = ["combine_sweeps", "read_sweep_csv"]

_FIX = "pass the sweep.csv (or the directory) that `condimmune sweep` wrote"

_RESULT_FIELDS = (
    "rir",
    "rir_paper_compatible",
    "harmful_ratio",
    "benign_ratio",
    "bound",
    "benign_raw",
    "benign_immunized",
    "immunized",
    "wall_seconds",
)
"""The cells a finished row (``error`` empty) must have: the tables are computed from them."""


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


_PARSERS = {name: _parser(hint) for name, hint in typing.get_type_hints(SweepRow).items()}


def _inconsistency(row: SweepRow) -> str:
    """What makes ``row`` unusable in a table ("" if nothing)."""
    try:
        experiment = Experiment(row.experiment)
    except ValueError:
        return f"unknown experiment {row.experiment!r}"
    if experiment is Experiment.HOUSE_PRICE:
        if row.benign is not None or row.harmful is not None:
            return "a house-price run has no digit pair"
    elif not all(d is not None and 0 <= d <= 9 for d in (row.benign, row.harmful)):
        return f"the digit pair {row.benign}-{row.harmful} is not two digits 0-9"
    missing = [name for name in _RESULT_FIELDS if getattr(row, name) is None]
    if not row.failed and missing:
        return f"a finished run (no error) without {', '.join(missing)}"
    return ""


def _parse(cells: dict[str | None, Any], path: Path, line: int) -> SweepRow:
    """One data line of ``path`` (``csv.DictReader``: extra cells under ``None``, missing
    ones ``None``) as a checked :class:`SweepRow`."""
    if None in cells or None in cells.values():
        extra, missing = len(cells.get(None) or []), sum(v is None for v in cells.values())
        given = len(CSV_FIELDS) + extra - missing
        raise UserError(
            f"line {line} has {given} cells, a sweep.csv row has {len(CSV_FIELDS)}", path, _FIX
        )
    values: dict[str, Any] = {}
    for name in CSV_FIELDS:
        parse, optional = _PARSERS[name]
        if cells[name] == "" and optional:
            values[name] = None
            continue
        try:
            values[name] = parse(cells[name])
        except ValueError as exc:
            raise UserError(f"line {line}, column {name}: {exc}", path, _FIX) from None
    row = SweepRow(**values)
    if problem := _inconsistency(row):
        raise UserError(f"line {line}: {problem}", path, _FIX)
    return row


def read_sweep_csv(path: Path) -> list[SweepRow]:
    """The rows of a ``sweep.csv`` (or of the ``sweep.csv`` in directory ``path``), typed as
    :class:`SweepRow` (empty cells of optional fields are ``None``, ``inf`` bounds stay
    ``math.inf``). A missing, foreign or damaged file is a :class:`UserError` naming it."""
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
            return [_parse(cells, path, i) for i, cells in enumerate(reader, start=2)]
    except UnicodeDecodeError:
        raise UserError("not UTF-8 text", path, _FIX) from None
    except OSError as exc:
        raise UserError(f"cannot be read ({exc.strerror or exc})", path, _FIX) from None


def combine_sweeps(paths: Sequence[Path], out: Path) -> list[SweepRow]:
    """Read every sweep in ``paths``, write their combined tables into the new directory
    ``out`` and return the rows (sorted by method, pair and seed). A job (method, seed, pair)
    found in two sweeps is refused (the table would count it twice), and so are sweeps of
    different experiments (their means would be mixed)."""
    if not paths:
        raise UserError("no sweep given", ".", _FIX)
    rows: list[SweepRow] = []
    seen: dict[tuple[str, int, int | None, int | None], Path] = {}
    experiments: dict[str, Path] = {}
    for path in paths:
        for row in read_sweep_csv(path):
            job = (row.method, row.seed, row.benign, row.harmful)
            if job in seen:
                raise UserError(
                    f"the run {row.method}, seed {row.seed}, pair {row.benign}-{row.harmful} "
                    f"is also in {seen[job]}",
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
            seen[job] = path
            rows.append(row)
    rows.sort(key=row_order)
    digits = rows[0].benign is not None if rows else False  # one heat map per method
    methods = sorted({r.method for r in rows}) if digits else []
    with claim_output_dir(out) as claimed:
        write_directory_atomically(claimed, lambda tmp: write_tables(tmp, rows, methods=methods))
    return rows
