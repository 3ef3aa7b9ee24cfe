"""The runs an attack matrix combines: found, verified, and refused when they do not mix.

A matrix averages each (experiment, method) over its runs, so its inputs must differ in the
seed and nothing else the numbers depend on. :func:`load_matrix_runs` refuses, naming the
run and the setting:

* a run directory whose files do not belong together (its manifest,
  :mod:`condimmune.experiments.manifest`; a ``metrics.json`` kept alone, as in
  ``docs/data/attack-matrix/``, has nothing to verify and is counted as such);
* a seed that appears twice for one (experiment, method);
* runs of one experiment whose configs differ in a key the numbers depend on
  (:func:`~condimmune.experiments.config.results.result_settings`, without the seed, the
  method and its options, and the ``attack`` section), or whose backbone differs;
* runs attacked with different suite settings (every ``attack`` setting except the storage,
  the study name and the seed, which follows the run's) or different sets of attackers;
* a non-finite number in any value the matrix averages.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

from condimmune.attacks.deep_headline import DeepAttackSuite, rescored
from condimmune.attacks.deep_records import STORAGE_FIELDS, DeepAttackOptions
from condimmune.core.errors import UserError
from condimmune.experiments.config import config_from_dict
from condimmune.experiments.config.results import first_difference, result_settings
from condimmune.experiments.manifest import MANIFEST, verify_manifest
from condimmune.experiments.pipeline import read_metrics
from condimmune.experiments.plan import fingerprint
from condimmune.experiments.records import DeepRunMetrics
from condimmune.experiments.rundir import read_json, read_yaml_mapping

__all__ = ["MatrixRun", "find_runs", "load_matrix_runs"]

_FIX = "run `condimmune attack RUN_DIR` on each deep run first"
_PER_RUN = ("seed", "train.method", "method", "attack")
"""What may differ between the runs of a matrix (the attack settings are compared as used)."""
_ATTACK_SETTINGS = tuple(
    f.name
    for f in fields(DeepAttackOptions)
    # the prefix ceilings are measured beside the rest and change none of its numbers
    if f.name not in (*STORAGE_FIELDS, "seed", "prefix_curve")
)


@dataclass(frozen=True)
class MatrixRun:
    """An attacked deep run; ``settings``: its config's :func:`result_settings` (``None``
    for a ``metrics.json`` kept without its run directory)."""

    path: Path
    metrics: DeepRunMetrics
    suite: DeepAttackSuite
    settings: dict[str, object] | None

    @property
    def verified(self) -> bool:
        return self.settings is not None


def find_runs(paths: Sequence[Path]) -> list[Path]:
    """Run directories among ``paths``: each a run (it has ``metrics.json``) or a folder
    whose sub-directories with ``metrics.json`` are runs."""
    found: list[Path] = []
    for path in paths:
        if (path / "metrics.json").is_file():
            found.append(path)
        elif path.is_dir():
            found += sorted(p for p in path.iterdir() if (p / "metrics.json").is_file())
        else:
            raise UserError("not a run directory or a folder of runs", path, _FIX)
    if not found:
        raise UserError("no run directory (with metrics.json) found", ", ".join(map(str, paths)))
    return list(dict.fromkeys(p.resolve() for p in found))


def _settings(path: Path) -> dict[str, object] | None:
    config_path = path / "config.yaml"
    if not config_path.is_file() and not (path / MANIFEST).is_file():
        return None  # a metrics.json kept alone
    raw = read_yaml_mapping(config_path, _FIX) if config_path.is_file() else None
    if raw is not None:
        raw.pop("versions", None)
    verify_manifest(path, None if raw is None else fingerprint(raw))
    if raw is None:
        raise UserError("not a complete run directory (missing config.yaml)", path, _FIX)
    try:
        config = config_from_dict(raw)
    except ValueError as exc:
        raise UserError(f"not a valid run config ({exc})", config_path, _FIX) from None
    return result_settings(config, leave_out=_PER_RUN)


def _load(path: Path) -> MatrixRun:
    settings = _settings(path)
    metrics = read_metrics(read_json(path / "metrics.json", _FIX), source=str(path))
    if not isinstance(metrics, DeepRunMetrics):
        raise UserError("a linear run; attack-matrix combines deep runs", path, _FIX)
    if metrics.attack_suite is None:
        raise UserError("has no attack_suite in metrics.json", path, _FIX)
    # the worst case under the rule in force, whenever the run was attacked
    return MatrixRun(path, metrics, rescored(metrics.attack_suite), settings)


def _averaged(run: MatrixRun) -> Iterator[tuple[str, float]]:
    """Every number of ``run`` that the matrix averages, with its field."""
    suite = run.suite
    yield "attack_suite.worst_case.slowdown", suite.worst_case.slowdown
    yield "attack_suite.worst_case.rfd", suite.worst_case.rfd
    yield "attack_suite.wall_seconds", suite.wall_seconds
    yield "rir_theta0.honest.rir_mean", run.metrics.rir_theta0.honest.rir_mean
    for name, attacker in suite.attackers.items():
        yield f"attack_suite.attackers.{name}.harmful.slowdown", attacker.harmful.slowdown
    if suite.utility is not None:
        yield "attack_suite.utility.drop_points", suite.utility.drop_points


def _show(value: object) -> str:
    return "not set" if value is None else repr(value)


def _refuse_mixing(runs: list[MatrixRun]) -> None:
    first = runs[0]
    seeds: dict[tuple[str, str, int], Path] = {}
    reference: dict[str, MatrixRun] = {}
    for run in runs:
        where = run.path / "metrics.json"
        for field, value in _averaged(run):
            if not math.isfinite(value):
                raise UserError(f"{field} is {value}, not a finite number", where, _FIX)
        m = run.metrics
        key = (m.experiment, m.method_label, m.seed)
        if key in seeds:
            raise UserError(
                f"{m.method_label} seed {m.seed} is also the run {seeds[key]}",
                run.path,
                "combine each seed of a method once (leave one of the two out)",
            )
        seeds[key] = run.path
        for name in _ATTACK_SETTINGS:
            mine, theirs = getattr(run.suite.settings, name), getattr(first.suite.settings, name)
            if mine != theirs:
                raise UserError(
                    f"was attacked with attack.{name}={_show(mine)}, {first.path} with "
                    f"{_show(theirs)}",
                    where,
                    "attack every run with the same attack.* settings, or combine them apart",
                )
        if set(run.suite.attackers) != set(first.suite.attackers):
            odd = sorted(set(run.suite.attackers) ^ set(first.suite.attackers))
            raise UserError(
                f"was attacked by other attackers than {first.path} ({', '.join(odd)})",
                where,
                "attack every run with the same attack.attackers, or combine them apart",
            )
        same = reference.setdefault(m.experiment, run)
        if m.backbone != same.metrics.backbone:
            raise UserError(
                f"has backbone {m.backbone}, {same.path} {same.metrics.backbone}", where, _FIX
            )
        if run.settings is not None and same.settings is None:
            reference[m.experiment] = same = run
        both = run.settings is not None and same.settings is not None
        if both and (difference := first_difference(run.settings or {}, same.settings or {})):
            key_name, mine_value, theirs_value = difference
            raise UserError(
                f"was run with {key_name}={_show(mine_value)}, {same.path} with "
                f"{_show(theirs_value)}",
                run.path / "config.yaml",
                "combine runs of one config (they may differ in seed and method only)",
            )


def load_matrix_runs(paths: Sequence[Path]) -> list[MatrixRun]:
    """The attacked deep runs found in ``paths``, verified and checked to mix (module
    docstring)."""
    runs = [_load(p) for p in find_runs(paths)]
    _refuse_mixing(runs)
    return runs
