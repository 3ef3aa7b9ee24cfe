"""Run an experiment over methods × seeds × (benign, harmful) digit pairs in parallel processes.

Each job writes its own run directory under ``OUT/runs/<method>/<pair>/seed<k>``; the sweep
writes ``sweep.csv`` (one :class:`SweepRow` per run), ``sweep.md`` (per-method
:class:`MethodSummary` and per-pair table, with the per-run wall time) and, for digit
experiments, one 10 × 10 heat map of log RIR per method (rows benign digit, columns harmful
digit, like the paper's Fig. 2). Worker processes run torch with one thread each, so
``workers`` processes use ``workers`` cores.

With ``resume``, a job whose run directory already holds a ``metrics.json`` is read back
instead of re-run, after checking that its ``config.yaml`` is the job's config (a mismatch
is an error naming the first differing key).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tqdm.auto import tqdm

from condimmune.core.errors import UserError
from condimmune.experiments.config import ExperimentConfig, config_from_dict, config_to_dict
from condimmune.experiments.records import LinearRunMetrics, read_metrics
from condimmune.experiments.registry import Experiment
from condimmune.experiments.rundir import claim_output_dir, read_json, read_yaml_mapping
from condimmune.experiments.sweep_tables import SweepRow, row_order, write_tables
from condimmune.methods.registry import method_spec

__all__ = ["SweepJob", "all_ordered_pairs", "make_jobs", "parse_pairs", "run_sweep"]

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
            raise ValueError(f"--pairs item {item!r} is not of the form a-b (e.g. 1-7)") from None
        if not (0 <= a <= 9 and 0 <= b <= 9) or a == b:
            raise ValueError(f"--pairs item {item!r} must name two different digits 0–9")
        pairs.append((a, b))
    return pairs


def _linear_config(data: dict[str, Any]) -> ExperimentConfig:
    config = config_from_dict(data)
    if not isinstance(config, ExperimentConfig):
        raise ValueError(f"{config.experiment} is a deep experiment; the sweep runs linear ones")
    return config


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)


def _run_job(job: SweepJob) -> SweepRow:
    """Run one job; a failure becomes a row with ``error`` set instead of stopping the sweep."""
    from condimmune.experiments.linear_runner import run_experiment

    config = _linear_config(job.config)
    try:
        art = run_experiment(config, job.out_dir, progress=False)
    except Exception as exc:  # one bad pair must not lose the other runs
        return SweepRow.from_error(config, job.out_dir, exc)
    return SweepRow.from_metrics(config, art.metrics, job.out_dir)


def _refuse_duplicates(what: str, items: Iterable[_H], show: Callable[[_H], str]) -> None:
    seen: set[_H] = set()
    for item in items:
        if item in seen:
            raise ValueError(f"{what} lists {show(item)} twice; each run must be listed once")
        seen.add(item)


def _check_method(name: str) -> None:
    spec = method_spec(name)
    if not spec.supports_linear:
        raise ValueError(
            f"method {name!r} has no linear-extractor version; the sweep runs linear experiments"
        )


def make_jobs(
    base: ExperimentConfig,
    methods: list[str],
    seeds: list[int],
    pairs: list[tuple[int, int]] | None,
    out_dir: Path,
) -> list[SweepJob]:
    """One validated job per (method, seed, pair); unknown or non-linear methods and
    duplicate methods, seeds or pairs raise ``ValueError``."""
    if not isinstance(base, ExperimentConfig):
        raise ValueError(f"{base.experiment} is a deep experiment; the sweep runs linear ones")
    for method in methods:
        _check_method(method)
    _refuse_duplicates("methods", methods, repr)
    _refuse_duplicates("seeds", seeds, str)
    if pairs is not None:
        _refuse_duplicates("pairs", pairs, lambda p: f"{p[0]}-{p[1]}")
    targets: list[tuple[int, int] | None] = [*pairs] if pairs else [None]
    jobs = []
    for method in methods:
        for seed in seeds:
            for pair in targets:
                cfg = config_to_dict(base)
                cfg["seed"] = seed
                cfg["train"]["method"] = method
                name = "all"
                if pair is not None:
                    cfg["data"]["benign_digit"], cfg["data"]["harmful_digit"] = pair
                    name = f"{pair[0]}-{pair[1]}"
                resolved = config_to_dict(_linear_config(cfg))  # validate before any run starts
                jobs.append(
                    SweepJob(resolved, str(out_dir / "runs" / method / name / f"seed{seed}"))
                )
    return jobs


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    return a == b


def _show(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _config_mismatch(run_dir: Path, saved: dict[str, Any], wanted: dict[str, Any]) -> str | None:
    """The error for the first key (in config order) where ``saved`` differs from ``wanted``."""
    have, want = _flatten(saved), _flatten(wanted)
    hint = "use a new --out or delete it"
    for key in [*want, *sorted(set(have) - set(want))]:
        if key not in have:
            return (
                f"{run_dir} was run without {key}, this sweep asks for {_show(want[key])}; {hint}"
            )
        if key not in want:
            return (
                f"{run_dir} was run with {key}={_show(have[key])}, this sweep does not set it; "
                f"{hint}"
            )
        if not _same(have[key], want[key]):
            return (
                f"{run_dir} was run with {key}={_show(have[key])}, this sweep asks for "
                f"{_show(want[key])}; {hint}"
            )
    return None


def _finished_run(job: SweepJob) -> LinearRunMetrics | None:
    """The metrics of the job's finished run directory (``None`` if it has not run), after
    checking that it was run with the job's config."""
    run_dir = Path(job.out_dir)
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.is_file():
        return None
    fix = "use a new --out or delete that run directory"
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise UserError(
            "the run has a metrics.json but no config.yaml, so it cannot be checked against "
            "this sweep",
            run_dir,
            fix,
        )
    saved = read_yaml_mapping(config_path, fix)
    saved.pop("versions", None)
    mismatch = _config_mismatch(run_dir, saved, job.config)
    if mismatch is not None:
        raise ValueError(mismatch)
    metrics = read_metrics(read_json(metrics_path, fix), source=str(metrics_path))
    if not isinstance(metrics, LinearRunMetrics):
        raise ValueError(f"{metrics_path} holds the metrics of a deep run")
    return metrics


def run_sweep(
    base: ExperimentConfig,
    *,
    methods: list[str],
    seeds: list[int],
    pairs: list[tuple[int, int]] | None,
    out_dir: str | Path,
    workers: int,
    progress: bool = True,
    resume: bool = False,
) -> list[SweepRow]:
    """Run all jobs, write the sweep table and heat maps, return the rows sorted by method,
    pair and seed (failed jobs included, with ``error`` set). With ``resume``, runs whose
    directory already holds a ``metrics.json`` are read back instead of re-run; one that was
    run with a different config raises ``ValueError`` before anything runs."""
    with claim_output_dir(
        out_dir, hint="choose a new directory or --resume", resume=resume
    ) as claimed:
        return _run_sweep(base, methods, seeds, pairs, claimed, workers, progress=progress)


def _run_sweep(
    base: ExperimentConfig,
    methods: list[str],
    seeds: list[int],
    pairs: list[tuple[int, int]] | None,
    out_dir: Path,
    workers: int,
    *,
    progress: bool,
) -> list[SweepRow]:
    if Experiment(base.experiment) is Experiment.HOUSE_PRICE:
        pairs = None
    jobs = make_jobs(base, methods, seeds, pairs, out_dir)
    finished = [(job, _finished_run(job)) for job in jobs]  # check every reuse up front
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[SweepRow] = []
    todo: list[SweepJob] = []
    for job, metrics in finished:
        if metrics is None:
            todo.append(job)
        else:
            rows.append(SweepRow.from_metrics(_linear_config(job.config), metrics, job.out_dir))
    bar = tqdm(total=len(jobs), initial=len(rows), desc="sweep", disable=not progress)
    if workers <= 1:
        for job in todo:
            rows.append(_run_job(job))
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers, initializer=_worker_init) as pool:
            futures = [pool.submit(_run_job, job) for job in todo]
            for fut in as_completed(futures):
                rows.append(fut.result())
                bar.update()
    bar.close()
    rows.sort(key=row_order)
    write_tables(out_dir, rows, methods=methods if pairs is not None else [])
    return rows
