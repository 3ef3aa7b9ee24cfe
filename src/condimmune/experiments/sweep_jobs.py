"""The jobs of a sweep: one validated config and run directory per method × seed (× digit
pair, for the experiments that have them), and the ``--pairs`` syntax."""

from __future__ import annotations

import itertools
import json
import types
import typing
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from condimmune._files import replace_atomically
from condimmune.core.errors import UserError
from condimmune.experiments.config import Config, ConfigError, apply_overrides, config_to_dict
from condimmune.experiments.pipeline import resolve_plan
from condimmune.experiments.registry import experiment_spec
from condimmune.experiments.rundir import read_json
from condimmune.methods.registry import method_spec

__all__ = [
    "SWEEP_MARKER",
    "GridAxis",
    "SweepJob",
    "all_ordered_pairs",
    "make_jobs",
    "parse_pairs",
    "read_sweep_marker",
    "split_grid",
    "write_sweep_marker",
]

SWEEP_MARKER = "sweep.json"
"""Written when a sweep starts: what ``--resume`` checks before it reads anything else."""

_H = TypeVar("_H", bound=Hashable)


GridAxis = tuple[str, tuple[str, ...]]
"""A key a sweep runs over and its values as typed (``("train.epochs", ("1", "3"))``)."""


@dataclass(frozen=True)
class SweepJob:
    """One run: its resolved config (:func:`config_to_dict` form), run directory and the
    values of the swept keys (``(("train.epochs", "3"),)``; empty without ``--set`` lists)."""

    config: dict[str, Any]
    out_dir: str
    variant: tuple[tuple[str, str], ...] = ()

    @property
    def variant_text(self) -> str:
        """The variant as ``sweep.csv`` and the run folder name it: ``key=value,...``."""
        return ",".join(f"{key}={value}" for key, value in self.variant)


def all_ordered_pairs() -> list[tuple[int, int]]:
    """The 90 ordered (benign, harmful) digit pairs of the paper's Table 2."""
    return [(a, b) for a in range(10) for b in range(10) if a != b]


def parse_pairs(text: str) -> list[tuple[int, int]]:
    """``"all"`` or comma-separated ``a-b`` items, e.g. ``"1-7,3-8"``."""
    if text.strip() == "all":
        return all_ordered_pairs()
    pairs = []
    for item in text.split(","):
        try:
            a, b = (int(v) for v in item.strip().split("-"))
        except ValueError:
            raise ConfigError(f"--pairs item {item!r} is not of the form a-b (e.g. 1-7)") from None
        if not (0 <= a <= 9 and 0 <= b <= 9) or a == b:
            raise ConfigError(f"--pairs item {item!r} must name two different digits 0–9")
        pairs.append((a, b))
    return pairs


def _refuse_duplicates(what: str, items: Iterable[_H], show: Callable[[_H], str]) -> None:
    seen: set[_H] = set()
    for item in items:
        if item in seen:
            raise ConfigError(f"{what} lists {show(item)} twice; each run must be listed once")
        seen.add(item)


def make_jobs(
    base: Config,
    methods: Sequence[str],
    seeds: Sequence[int],
    pairs: Sequence[tuple[int, int]] | None,
    out_dir: Path,
    *,
    threads: int | None = None,
    grid: Sequence[GridAxis] = (),
) -> list[SweepJob]:
    """One validated job per (method, seed[, pair][, combination of the ``grid`` values]):
    each is ``base`` with the method, the seed (the digit pair, the grid values) set as
    ``--set`` would (a new method starts from its own options; ``method.*`` grid keys are
    that method's options), and ``threads`` if given. Unknown methods, methods without a
    version for this family, empty or repeated lists, pairs for an experiment without digit
    pairs and bad grid values raise ``ValueError`` before anything runs."""
    if not methods or not seeds:
        raise ConfigError("a sweep needs at least one method and one seed")
    family = resolve_plan(base).family
    for method in methods:
        try:
            spec = method_spec(method)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if not spec.supports(family):
            raise ConfigError(f"method {method!r} has no {family.value} version")
    _refuse_duplicates("methods", methods, repr)
    _refuse_duplicates("seeds", seeds, str)
    if pairs is not None:
        if not experiment_spec(base.experiment).digit_pairs:
            raise ConfigError(
                f"--pairs: experiment {base.experiment} has no digit pairs; drop --pairs"
            )
        _refuse_duplicates("pairs", pairs, lambda p: f"{p[0]}-{p[1]}")
    _check_grid(grid)
    targets: list[tuple[int, int] | None] = [*pairs] if pairs else [None]
    variants = list(itertools.product(*([(k, v) for v in values] for k, values in grid)))
    jobs = []
    for method, variant, seed, pair in itertools.product(methods, variants, seeds, targets):
        sets = [f"train.method={method}", f"seed={seed}"]
        sets += [] if threads is None else [f"threads={threads}"]
        sets += [f"{key}={value}" for key, value in variant]
        job = SweepJob({}, "", tuple(variant))
        folder = out_dir / "runs" / method / job.variant_text
        if pair is not None:
            sets += [f"data.benign_digit={pair[0]}", f"data.harmful_digit={pair[1]}"]
            folder = folder / f"{pair[0]}-{pair[1]}"
        config = apply_overrides(base, sets)  # validated before any run starts
        jobs.append(SweepJob(config_to_dict(config), str(folder / f"seed{seed}"), job.variant))
    return jobs


_GRID_REFUSED = {
    "seed": "--seeds",
    "train.method": "--methods",
    "data.benign_digit": "--pairs",
    "data.harmful_digit": "--pairs",
}
"""Keys a sweep runs over through its own options."""


def _check_grid(grid: Sequence[GridAxis]) -> None:
    for key, values in grid:
        if key in _GRID_REFUSED:
            raise ConfigError(f"--set {key}=… lists values; give them with {_GRID_REFUSED[key]}")
        if not all(v.strip() for v in values):
            raise ConfigError(f"--set {key}= lists an empty value; separate values with commas")
        _refuse_duplicates(f"--set {key}", values, repr)
    _refuse_duplicates("--set", (key for key, _ in grid), repr)


def split_grid(config: Config, sets: Sequence[str]) -> tuple[list[str], list[GridAxis]]:
    """``--set`` items as ``(plain items, grid)``: an item whose value has commas lists
    values to sweep over when its key holds a number, a boolean or a choice (a comma cannot
    be part of such a value); a text key (``attack.attackers=a,b``) takes the text as it
    is. The key's type is that of ``config`` (the sweep's base config)."""
    plain: list[str] = []
    grid: list[GridAxis] = []
    for item in sets:
        key, _, raw = item.partition("=")
        if "," in raw and not _is_text(_annotation(config, key.strip())):
            grid.append((key.strip(), tuple(v.strip() for v in raw.split(","))))
        else:
            plain.append(item)
    return plain, grid


def _annotation(config: Config, key: str) -> Any:
    """The declared type of the dotted ``key`` of ``config`` (``str`` for an unknown key,
    which is then left for ``--set``'s own error)."""
    *sections, name = key.split(".")
    node: object = config
    for section in sections:
        node = getattr(node, section, None)
    fields = type(node).model_fields if isinstance(node, BaseModel) else {}
    return fields[name].annotation if name in fields else str


def _is_text(annotation: Any) -> bool:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _is_text(args[0])
    if origin in (typing.Union, types.UnionType):
        return any(_is_text(a) for a in args if a is not type(None))
    return annotation is str


def write_sweep_marker(out: Path, experiment: str) -> None:
    """Mark ``out`` as a sweep of ``experiment`` (``sweep.json``, before any job runs)."""
    out.mkdir(exist_ok=True)
    text = json.dumps({"format": 1, "sweep_of": experiment}) + "\n"
    replace_atomically(out / SWEEP_MARKER, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def read_sweep_marker(out: Path, experiment: str) -> None:
    """Check that ``out`` is a sweep directory of ``experiment`` (one a sweep started, even
    if it stopped before its first run finished); a :class:`UserError` naming the file if
    not."""
    path = out / SWEEP_MARKER
    fix = "--resume continues a sweep in the directory it wrote; use a new --out otherwise"
    if not path.is_file():
        raise UserError(f"is not a sweep directory (it has no {SWEEP_MARKER})", out, fix)
    document = read_json(path, fix)
    if not isinstance(document, dict) or document.get("format") != 1:
        raise UserError("not a condimmune sweep marker (format 1)", path, fix)
    if document.get("sweep_of") != experiment:
        raise UserError(
            f"marks a sweep of {document.get('sweep_of')!r}, not of {experiment!r}", path, fix
        )
