"""One run of a sweep, one line of ``sweep.csv``: :class:`SweepRow`, for both families.

``sweep.csv`` has the columns ``experiment, method, variant, seed``, the family's columns
(for the linear family the digit pair first; :attr:`~condimmune.experiments.pipeline.
Pipeline.sweep_columns`), then ``settings, method_settings`` (fingerprints of the config a
run's numbers depend on, :func:`row_settings`: what ``condimmune sweep-table`` compares
before it combines sweeps), ``run_dir, error``. ``variant`` is empty, or the values of the
keys a sweep ran over (``--set train.epochs=1,3`` gives ``train.epochs=1`` and
``train.epochs=3``). A failed run has ``error`` set (the first line of the exception) and
empty result cells.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TypeAlias

from condimmune.experiments.config import Config
from condimmune.experiments.config.results import result_settings
from condimmune.experiments.plan import fingerprint

__all__ = [
    "HEAD",
    "JOB_KEYS",
    "KEYS",
    "TAIL",
    "Cell",
    "Column",
    "SweepRow",
    "csv_columns",
    "row_order",
    "row_settings",
    "write_csv",
]


@dataclass(frozen=True)
class Column:
    """A result column of a sweep's ``sweep.csv``: its name and the type of its cells."""

    name: str
    kind: type[int] | type[float] | type[bool] | type[str]


Cell: TypeAlias = int | float | bool | str | None
HEAD: tuple[Column, ...] = (
    Column("experiment", str),
    Column("method", str),
    Column("variant", str),
    Column("seed", int),
)
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
    """The fingerprint of its ``method`` section: the same for every row of one arm."""
    variant: str = ""
    """The values of the keys the sweep ran over (``train.epochs=3,method.weight=0.1``), or
    ``""``: with ``method``, the arm its row is summarized in."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", MappingProxyType(dict(self.values)))

    def __reduce__(self) -> tuple[type[SweepRow], tuple[object, ...]]:
        # rows cross process boundaries (a sweep's workers); a mapping proxy does not pickle
        values = dict(self.values)
        fields = (self.run_dir, self.error, self.settings, self.method_settings, self.variant)
        return (SweepRow, (self.experiment, self.method, self.seed, values, *fields))

    @property
    def arm(self) -> str:
        """What its row is summarized under: the method, with the variant if there is one."""
        return f"{self.method} [{self.variant}]" if self.variant else self.method

    @property
    def failed(self) -> bool:
        return bool(self.error)

    def __getitem__(self, name: str) -> Cell:
        return self.values[name]

    def cells(self, columns: Sequence[Column]) -> dict[str, object]:
        """The row for :class:`csv.DictWriter` (``None`` → empty cell)."""
        every = {"experiment": self.experiment, "method": self.method, "seed": self.seed}
        every |= {"variant": self.variant}
        every |= {"run_dir": self.run_dir, "error": self.error, **self.values}
        every |= {"settings": self.settings, "method_settings": self.method_settings}
        return {c.name: "" if (v := every.get(c.name)) is None else v for c in columns}

    @staticmethod
    def error_text(error: BaseException) -> str:
        """The ``error`` cell of a run that raised ``error``: its first line."""
        return f"{type(error).__name__}: {error}".splitlines()[0]


JOB_KEYS = ("seed", "train.method", "method", "data.benign_digit", "data.harmful_digit")
"""The config keys that tell a sweep's jobs apart (the method's own section included)."""


def row_settings(config: Config, varied: Collection[str] = ()) -> dict[str, str]:
    """The ``settings`` and ``method_settings`` of a run made with ``config`` in a sweep
    over the keys ``varied`` (besides method, seed and digit pair)."""
    return {
        "settings": fingerprint(result_settings(config, leave_out=(*JOB_KEYS, *varied))),
        "method_settings": fingerprint(config.method.model_dump(mode="json")),
    }


def row_order(arms: Sequence[str]) -> Callable[[SweepRow], tuple[object, ...]]:
    """Rows in ``arms`` order (:attr:`SweepRow.arm`), then by their key cells (the digit
    pair), then seed."""
    rank = {m: i for i, m in enumerate(arms)}

    def key(row: SweepRow) -> tuple[object, ...]:
        pair = tuple("" if v is None else str(v) for k, v in row.values.items() if k in KEYS)
        return (rank.get(row.arm, len(rank)), row.arm, pair, row.seed)

    return key


KEYS = frozenset({"benign", "harmful"})
"""Columns that identify a job within (method, seed), not a result."""


def write_csv(path: Path, rows: Sequence[SweepRow], family_columns: Sequence[Column]) -> None:
    columns = csv_columns(family_columns)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=[c.name for c in columns])
        writer.writeheader()
        writer.writerows(r.cells(columns) for r in rows)
