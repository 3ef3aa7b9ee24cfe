"""One sweep for both families: methods × seeds (× digit pairs, for the experiments that have
them), each job a run directory, run in parallel processes, with resume.

Each job writes its own run directory ``OUT/runs/<method>/[<pair>/]seed<k>``; the sweep then
writes ``sweep.csv`` (one :class:`~condimmune.experiments.tables.SweepRow` per run),
``sweep.md`` (the per-method summary and one line per run) and the family's figures (heat
maps of log RIR per digit pair; a deep sweep's ``sweep.png``). With ``workers > 1`` the
jobs run in that many processes (never more than there are jobs), each with a fixed
number of torch threads (1 for linear runs; ``cores // workers`` for deep runs), which the
job's ``config.yaml`` records, so that re-running it gives the same numbers.

With ``resume``, a job whose run directory already holds a ``metrics.json`` is read back
instead of re-run, after checking that its ``config.yaml`` is the job's config, key by key
(a mismatch is an error naming the first differing key).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tqdm.auto import tqdm

from condimmune.core.errors import UserError
from condimmune.experiments.config import (
    Config,
    ConfigError,
    apply_overrides,
    config_from_dict,
    config_to_dict,
)
from condimmune.experiments.pipeline import Pipeline, pipeline_for, resolve_plan
from condimmune.experiments.plan import recipe_mismatch
from condimmune.experiments.records import read_metrics
from condimmune.experiments.registry import experiment_spec
from condimmune.experiments.report import Table
from condimmune.experiments.rundir import claim_output_dir, read_json, read_yaml_mapping
from condimmune.experiments.tables import SweepRow, row_order
from condimmune.methods.base import ModelFamily
from condimmune.methods.registry import method_spec

__all__ = [
    "SweepJob",
    "SweepResult",
    "all_ordered_pairs",
    "make_jobs",
    "parse_pairs",
    "run_sweep",
    "sweep_command",
]

_H = TypeVar("_H", bound=Hashable)


@dataclass(frozen=True)
class SweepJob:
    """One run: its resolved config (:func:`config_to_dict` form) and run directory."""

    config: dict[str, Any]
    out_dir: str


@dataclass(frozen=True)
class SweepResult:
    """A finished sweep: its rows (failed runs included, with ``error`` set) in job order,
    the per-method summary the command prints, and the sweep directory."""

    rows: list[SweepRow]
    summary: Table
    out: Path

    @property
    def failed(self) -> list[SweepRow]:
        return [r for r in self.rows if r.failed]


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


def worker_threads(pipeline: Pipeline[Any, Any, Any], workers: int) -> int:
    """Torch threads per worker process: 1 for linear runs (thousands of small operations,
    README "Speed"), the machine's cores shared out for deep runs."""
    if pipeline.family is ModelFamily.LINEAR:
        return 1
    return max(1, (os.cpu_count() or 1) // workers)


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


def _finished_row(job: SweepJob, pipeline: Pipeline[Any, Any, Any]) -> SweepRow | None:
    """The row of the job's finished run directory (``None`` if it has not run), after
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
    mismatch = recipe_mismatch(run_dir, saved, job.config)
    if mismatch is not None:
        raise ConfigError(mismatch)
    metrics = read_metrics(read_json(metrics_path, fix), source=str(metrics_path))
    if not isinstance(metrics, pipeline.metrics_type):
        kind = "linear" if pipeline.family is ModelFamily.DEEP else "deep"
        raise UserError(f"holds the metrics of a {kind} run", metrics_path, fix)
    return _row(job, pipeline, values=pipeline.sweep_values(metrics))


def _row(
    job: SweepJob,
    pipeline: Pipeline[Any, Any, Any],
    *,
    values: dict[str, Any] | None = None,
    error: BaseException | None = None,
) -> SweepRow:
    config = config_from_dict(job.config)
    keys = pipeline.sweep_keys(resolve_plan(config))
    return SweepRow(
        experiment=config.experiment,
        method=config.train.method,
        seed=config.seed,
        values={**keys, **(values or {})},
        run_dir=job.out_dir,
        error="" if error is None else SweepRow.error_text(error),
    )


def _worker_init(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _run_job(job: SweepJob) -> SweepRow:
    """Run one job; a failure becomes a row with ``error`` set instead of stopping the sweep."""
    from condimmune.experiments.runner import run_plan

    plan = resolve_plan(config_from_dict(job.config))
    pipeline = pipeline_for(plan.family)
    try:
        result = run_plan(plan, job.out_dir, progress=False)
    except Exception as exc:  # one bad run must not lose the others
        return _row(job, pipeline, error=exc)
    if result is None:  # pragma: no cover - only non-primary processes, never in a sweep
        raise RuntimeError("a sweep job ran as a non-primary process")
    return _row(job, pipeline, values=pipeline.sweep_values(result.metrics))


def run_sweep(
    base: Config,
    *,
    methods: Sequence[str],
    seeds: Sequence[int],
    pairs: Sequence[tuple[int, int]] | None = None,
    out_dir: str | Path,
    workers: int,
    progress: bool = True,
    resume: bool = False,
) -> SweepResult:
    """Run every job (see :func:`make_jobs` and the module docstring), write the tables and
    figures, and return them. A run that fails is a row with its error, not an exception;
    with ``resume`` a run that was made with another config raises before anything runs."""
    if workers < 1:
        raise ConfigError(f"--workers must be ≥ 1, got {workers}")
    pipeline = pipeline_for(resolve_plan(base).family)
    threads = None if workers == 1 else worker_threads(pipeline, workers)
    with claim_output_dir(out_dir, hint="choose a new directory or --resume", resume=resume) as out:
        jobs = make_jobs(base, methods, seeds, pairs, out, threads=threads)
        done = {job.out_dir: _finished_row(job, pipeline) for job in jobs}  # check up front
        rows = {d: row for d, row in done.items() if row is not None}
        todo = [job for job in jobs if rows.get(job.out_dir) is None]
        if len(todo) > 1 and workers > 1:  # each seed's prefixes once, not by every worker
            pipeline.before_sweep(
                [resolve_plan(config_from_dict(j.config)) for j in todo], progress
            )
        bar = tqdm(total=len(jobs), initial=len(rows), desc="sweep", disable=not progress)
        pool_size = min(workers, len(todo))
        if pool_size <= 1:
            for job in todo:
                rows[job.out_dir] = _run_job(job)
                bar.update()
        else:
            with ProcessPoolExecutor(
                pool_size, initializer=_worker_init, initargs=(threads or 1,)
            ) as pool:
                futures = {pool.submit(_run_job, job): job for job in todo}
                for fut in as_completed(futures):
                    rows[futures[fut].out_dir] = fut.result()
                    bar.update()
        bar.close()
        ordered = sorted((rows[job.out_dir] for job in jobs), key=row_order(methods))
        summary = pipeline.write_sweep(out, ordered, list(methods))
    return SweepResult(ordered, summary, out)


def _names(text: str, option: str) -> list[str]:
    names = [n.strip() for n in text.split(",")]
    if not all(names):
        raise ConfigError(f"{option} must list names separated by commas, got {text!r}")
    return names


def _integer(text: str, option: str) -> int:
    try:
        return int(text, 10)
    except ValueError:
        raise ConfigError(f"{option} must be comma-separated integers, got {text!r}") from None


def sweep_command(
    base: Config,
    *,
    methods: str,
    seeds: str,
    pairs: str | None,
    out: Path | None,
    workers: int,
    progress: bool,
    resume: bool,
) -> SweepResult:
    """``condimmune sweep``: the options as typed (comma lists; ``pairs`` ``None``: all 90
    for a digit-pair experiment, none otherwise; ``out`` ``None``: ``runs/sweep-<exp>-<time>``)."""
    import datetime as _dt

    if pairs is None and experiment_spec(base.experiment).digit_pairs:
        pairs = "all"
    if out is None:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path("runs") / f"sweep-{base.experiment}-{stamp}"
    return run_sweep(
        base,
        methods=_names(methods, "--methods"),
        seeds=[_integer(s, "--seeds") for s in _names(seeds, "--seeds")],
        pairs=None if pairs is None else parse_pairs(pairs),
        out_dir=out,
        workers=workers,
        progress=progress,
        resume=resume,
    )
