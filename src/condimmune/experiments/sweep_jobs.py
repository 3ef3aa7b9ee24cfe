"""The jobs of a sweep: one validated config and run directory per method × seed (× digit
pair, for the experiments that have them), and the ``--pairs`` syntax."""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from condimmune._files import replace_atomically
from condimmune.core.errors import UserError
from condimmune.experiments.config import Config, ConfigError, apply_overrides, config_to_dict
from condimmune.experiments.pipeline import resolve_plan
from condimmune.experiments.registry import experiment_spec
from condimmune.experiments.rundir import read_json
from condimmune.methods.registry import method_spec

__all__ = [
    "SWEEP_MARKER",
    "SweepJob",
    "all_ordered_pairs",
    "make_jobs",
    "parse_pairs",
    "read_sweep_marker",
    "write_sweep_marker",
]

SWEEP_MARKER = "sweep.json"
"""Written when a sweep starts: what ``--resume`` checks before it reads anything else."""

_H = TypeVar("_H", bound=Hashable)


@dataclass(frozen=True)
class SweepJob:
    """One run: its resolved config (:func:`config_to_dict` form) and run directory."""

    config: dict[str, Any]
    out_dir: str


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
) -> list[SweepJob]:
    """One validated job per (method, seed[, pair]): each is ``base`` with the method, the
    seed (and the digit pair) set as ``--set`` would (a new method starts from its own
    options), and ``threads`` if given. Unknown methods, methods without a version for this
    family, empty or repeated lists, and pairs for an experiment without digit pairs raise
    ``ValueError`` before anything runs."""
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
    targets: list[tuple[int, int] | None] = [*pairs] if pairs else [None]
    jobs = []
    for method in methods:
        for seed in seeds:
            for pair in targets:
                sets = [f"train.method={method}", f"seed={seed}"]
                sets += [] if threads is None else [f"threads={threads}"]
                folder = out_dir / "runs" / method
                if pair is not None:
                    sets += [f"data.benign_digit={pair[0]}", f"data.harmful_digit={pair[1]}"]
                    folder = folder / f"{pair[0]}-{pair[1]}"
                config = apply_overrides(base, sets)  # validated before any run starts
                jobs.append(SweepJob(config_to_dict(config), str(folder / f"seed{seed}")))
    return jobs


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
