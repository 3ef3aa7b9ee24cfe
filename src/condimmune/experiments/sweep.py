"""One sweep for both families: methods × listed ``--set`` values × seeds (× digit pairs, for
the experiments that have them), each job a run directory, run in parallel processes, with
resume.

Each job writes its own run directory ``OUT/runs/<method>/[<variant>/][<pair>/]seed<k>``; the
sweep then writes ``sweep.csv`` (one :class:`~condimmune.experiments.sweep_rows.SweepRow` per
run), ``sweep.md`` (the summary per arm and one line per run) and the family's figures (heat
maps of RIR over the digit pairs run; a deep sweep's ``sweep.png``). With ``workers > 1`` the
jobs run in that many processes (never more than there are jobs: ``workers`` beyond the
job count changes nothing, not even the recorded threads), each with a fixed number of
threads (numpy's BLAS threads, 1, for linear runs; torch's, ``cores // workers``, for deep
runs), which the job's ``config.yaml`` records, so that re-running it gives the same
numbers.

A sweep marks its directory with ``sweep.json`` (the experiment) before any job runs. With
``resume``, a non-empty directory must carry that mark for the same experiment, and a job
whose run directory already holds a ``metrics.json`` is read back instead of re-run, after
checking that its ``config.yaml`` is the job's config, key by key (a mismatch is an error
naming the first differing key), and that its files are those its manifest lists.

Stopping a sweep (:mod:`~condimmune.experiments.workers` has the details): its worker
processes never outlive it. On SIGTERM or SIGINT (``sweep_command``, i.e. the command line,
turns them into :class:`~condimmune.experiments.interrupt.Interrupted` for the sweep's
duration; from Python, ``KeyboardInterrupt`` does the same), the sweep terminates its
workers, cancels the jobs not started, removes what the stopped jobs left (temporary
directories and files, lock files), releases the sweep's lock and raises; the command line
says ``interrupted: stopped by SIGTERM after k of n runs: <dir>; ...`` and exits with 143
(130 for SIGINT). Finished runs are kept: ``--resume`` runs the rest. On SIGKILL the workers
get SIGTERM from the kernel as their parent dies (Linux; elsewhere they notice within half a
second), the lock is free at once, and the next ``--resume`` removes the leftovers.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Generator, Iterable, Sequence
from concurrent.futures.process import BrokenProcessPool
from contextlib import closing, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from condimmune.core.errors import StaleFilesWarning, UserError
from condimmune.experiments.config import Config, ConfigError, config_from_dict
from condimmune.experiments.interrupt import Interrupted, signals_raise
from condimmune.experiments.manifest import require_listed, verify_manifest
from condimmune.experiments.pipeline import Pipeline, pipeline_for, read_metrics, resolve_plan
from condimmune.experiments.plan import fingerprint, recipe_mismatch
from condimmune.experiments.registry import experiment_spec
from condimmune.experiments.report import Table
from condimmune.experiments.rundir import (
    claim_output_dir,
    read_json,
    read_yaml_mapping,
    run_dir_lock,
)
from condimmune.experiments.sweep_jobs import (
    GridAxis,
    SweepJob,
    all_ordered_pairs,
    make_jobs,
    parse_pairs,
    read_sweep_marker,
    write_sweep_marker,
)
from condimmune.experiments.sweep_rows import SweepRow, row_order, row_settings
from condimmune.experiments.threads import use_threads
from condimmune.experiments.workers import results_in_workers
from condimmune.methods.base import ModelFamily

__all__ = [
    "SweepJob",
    "SweepResult",
    "all_ordered_pairs",
    "make_jobs",
    "parse_pairs",
    "run_sweep",
    "sweep_command",
]


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


def worker_threads(pipeline: Pipeline[Any, Any, Any], workers: int) -> int:
    """Threads per worker process (:func:`~condimmune.experiments.threads.use_threads`): the
    pipeline's ``sweep_threads`` (1 for linear runs), else the machine's cores shared out
    among the workers."""
    return pipeline.sweep_threads or max(1, (os.cpu_count() or 1) // workers)


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
    listed = verify_manifest(run_dir, fingerprint(saved))  # its files belong to that config
    metrics = read_metrics(read_json(metrics_path, fix), source=str(metrics_path))
    if not isinstance(metrics, pipeline.metrics_type):
        family = experiment_spec(metrics.experiment).family.value
        raise UserError(f"holds the metrics of a {family} run", metrics_path, fix)
    require_listed(run_dir, listed, ("config.yaml", "metrics.json", *pipeline.run_files))
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
        variant=job.variant_text,
        **row_settings(config, varied=[key for key, _ in job.variant]),
    )


def _worker_init(threads: int, family: ModelFamily) -> None:
    use_threads(threads, family)


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


def _results(
    todo: list[SweepJob], processes: int, threads: int | None, family: ModelFamily
) -> Generator[SweepRow, None, None]:
    """The rows of ``todo`` as the jobs finish: in this process (``threads`` ``None``: jobs
    made to run on its threads), or in worker processes on ``threads`` each, which the jobs
    record (also when one job is left to run: it must run on the threads it records)."""
    if threads is None or not todo:
        yield from map(_run_job, todo)
    else:
        with closing(
            results_in_workers(_run_job, todo, processes, _worker_init, (threads, family))
        ) as rows:
            yield from rows


def _remove_leftovers(jobs: Iterable[SweepJob]) -> None:
    """Remove what stopped jobs left (temporary directories and files, lock files) by taking
    and releasing each job's lock (:func:`run_dir_lock` removes them)."""
    for job in jobs:
        run_dir = Path(job.out_dir)
        if run_dir.parent.is_dir():
            with suppress(UserError, OSError), run_dir_lock(run_dir):
                pass


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
    grid: Sequence[GridAxis] = (),
) -> SweepResult:
    """Run every job (see :func:`make_jobs` and the module docstring), write the tables and
    figures, and return them. A run that fails is a row with its error, not an exception;
    with ``resume`` a run that was made with another config raises before anything runs.
    Stopped (:class:`Interrupted`, ``KeyboardInterrupt``), it stops its workers and removes
    their leftovers before the exception goes on."""
    if workers < 1:
        raise ConfigError(f"--workers must be ≥ 1, got {workers}")
    pipeline = pipeline_for(resolve_plan(base).family)
    combinations = math.prod(len(values) for _, values in grid)
    workers = min(workers, len(methods) * len(seeds) * len(pairs or [None]) * combinations)
    threads = None if workers <= 1 else worker_threads(pipeline, workers)
    with claim_output_dir(out_dir, hint="choose a new directory or --resume", resume=resume) as out:
        jobs = make_jobs(base, methods, seeds, pairs, out, threads=threads, grid=grid)
        if resume and out.is_dir() and any(out.iterdir()):
            read_sweep_marker(out, base.experiment)  # only a sweep of this experiment
        else:
            write_sweep_marker(out, base.experiment)
        if resume:  # a killed worker's leftovers, beside runs that are read back too
            _remove_leftovers(jobs)
        done = {job.out_dir: _finished_row(job, pipeline) for job in jobs}  # check up front
        rows = {d: row for d, row in done.items() if row is not None}
        todo = [job for job in jobs if rows.get(job.out_dir) is None]
        processes = min(workers, len(todo))
        try:
            if processes > 1:  # each seed's prefixes once, not by every worker
                plans = [resolve_plan(config_from_dict(j.config)) for j in todo]
                pipeline.before_sweep(plans, progress)
            bar = tqdm(total=len(jobs), initial=len(rows), desc="sweep", disable=not progress)
            with closing(_results(todo, processes, threads, pipeline.family)) as results:
                for row in results:
                    rows[row.run_dir] = row
                    bar.update()
            bar.close()
        except BaseException as exc:
            with warnings.catch_warnings():  # the sweep's own cleanup: no warning about it
                warnings.simplefilter("ignore", StaleFilesWarning)
                _remove_leftovers(job for job in todo if job.out_dir not in rows)
            left = len(jobs) - len(rows)
            resume_hint = f"repeat the command with --resume --out {out}"
            if isinstance(exc, BrokenProcessPool):  # its job cannot be told from the others'
                raise UserError(
                    "a worker process ended abruptly (killed from outside, or by the system "
                    f"when memory ran out) after {len(rows)} of {len(jobs)} runs",
                    out,
                    f"{resume_hint} to run the other {left} (with fewer --workers if memory "
                    "ran out)",
                ) from None
            if not isinstance(exc, Interrupted):
                raise
            raise Interrupted(
                exc.signum,
                f"after {len(rows)} of {len(jobs)} runs: {out}; to run the other {left}, "
                f"{resume_hint} (finished runs are kept)",
            ) from None
        arms = list(dict.fromkeys(rows[job.out_dir].arm for job in jobs))  # in job order
        ordered = sorted((rows[job.out_dir] for job in jobs), key=row_order(arms))
        summary = pipeline.write_sweep(out, ordered, arms)
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
    grid: Sequence[GridAxis] = (),
) -> SweepResult:
    """``condimmune sweep``: the options as typed (comma lists; ``pairs`` ``None``: all 90
    for a digit-pair experiment, none otherwise; ``out`` ``None``: ``runs/sweep-<exp>-<time>``)."""
    import datetime as _dt

    if pairs is None and experiment_spec(base.experiment).digit_pairs:
        pairs = "all"
    if out is None:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path("runs") / f"sweep-{base.experiment}-{stamp}"
    with signals_raise():  # SIGINT, SIGTERM: stop the workers, clean up (module docstring)
        return run_sweep(
            base,
            methods=_names(methods, "--methods"),
            seeds=[_integer(s, "--seeds") for s in _names(seeds, "--seeds")],
            pairs=None if pairs is None else parse_pairs(pairs),
            out_dir=out,
            workers=workers,
            progress=progress,
            resume=resume,
            grid=grid,
        )
