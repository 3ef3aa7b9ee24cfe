"""Run a deep experiment over methods × seeds and write the Table-3-style summary.

Each job writes its own run directory ``OUT/runs/<method>/seed<k>``; the sweep then writes
``sweep.csv``, ``sweep.md`` and ``sweep.png`` (:mod:`condimmune.experiments.deep_sweep_tables`).
With ``workers > 1`` the jobs run in that many processes, each with
``max(1, cores // workers)`` torch threads; with one worker they run in this process. The
frozen prefix cache (``model.cache_prefix``) is shared through the cache directory, so the
methods of one seed compute each image's prefix once (with several workers it is filled
before the jobs start, so that they do not all compute it at once).

With ``resume``, a job whose run directory already holds a ``metrics.json`` is read back
instead of re-run, after checking that its ``config.yaml`` (read through the current
schema, so a key added since then counts at its default) is the job's config.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from tqdm.auto import tqdm

from condimmune.experiments.config import DeepExperimentConfig, config_from_dict, config_to_dict
from condimmune.experiments.deep_setup import warm_prefix_cache
from condimmune.experiments.deep_sweep_tables import DeepSweepRow, write_deep_tables
from condimmune.experiments.records import DeepRunMetrics, read_metrics
from condimmune.experiments.rundir import claim_output_dir, read_yaml_mapping
from condimmune.experiments.sweep import SweepJob, _config_mismatch
from condimmune.methods.registry import method_spec

__all__ = ["make_deep_jobs", "run_deep_sweep"]


def _deep_config(data: dict[str, object]) -> DeepExperimentConfig:
    config = config_from_dict(data)
    if not isinstance(config, DeepExperimentConfig):
        raise ValueError(f"{config.experiment} is a linear experiment; use the linear sweep")
    return config


def make_deep_jobs(
    base: DeepExperimentConfig, methods: list[str], seeds: list[int], out_dir: Path
) -> list[SweepJob]:
    """One validated job per (method, seed); unknown, linear-only or repeated methods and
    repeated seeds raise ``ValueError`` before anything runs."""
    if not methods or not seeds:
        raise ValueError("a sweep needs at least one method and one seed")
    for what, items in (("methods", methods), ("seeds", seeds)):
        repeated = sorted({str(x) for x in items if items.count(x) > 1})  # type: ignore[arg-type]
        if repeated:
            raise ValueError(f"{what} lists {repeated[0]} twice; each run must be listed once")
    for method in methods:
        if not method_spec(method).supports_deep:
            raise ValueError(f"method {method!r} has no deep version")
    jobs = []
    for method in methods:
        for seed in seeds:
            cfg = config_to_dict(base)
            cfg["seed"] = seed
            cfg["train"]["method"] = method
            resolved = config_to_dict(_deep_config(cfg))
            jobs.append(SweepJob(resolved, str(out_dir / "runs" / method / f"seed{seed}")))
    return jobs


def _worker_init(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _run_job(job: SweepJob) -> DeepSweepRow:
    """Run one job; a failure becomes a row with ``error`` set instead of stopping the sweep."""
    from condimmune.experiments.deep_runner import run_deep_experiment

    config = _deep_config(job.config)
    try:
        art = run_deep_experiment(config, job.out_dir, progress=False)
    except Exception as exc:  # one failed run must not lose the others
        return DeepSweepRow.from_error(config, job.out_dir, exc)
    if art.metrics is None:  # pragma: no cover - only non-zero ranks, never in a sweep
        raise RuntimeError("a sweep job ran as a non-zero rank")
    return DeepSweepRow.from_metrics(art.metrics, job.out_dir)


def _finished(job: SweepJob) -> DeepRunMetrics | None:
    run_dir = Path(job.out_dir)
    path = run_dir / "metrics.json"
    if not path.is_file():
        return None
    saved = read_yaml_mapping(run_dir / "config.yaml", "use a new --out or delete it")
    saved.pop("versions", None)
    # read through the current schema: a key added since the run holds its default
    saved = config_to_dict(_deep_config(saved))
    mismatch = _config_mismatch(run_dir, saved, job.config)
    if mismatch is not None:
        raise ValueError(mismatch)
    metrics = read_metrics(json.loads(path.read_text()), source=str(path))
    if not isinstance(metrics, DeepRunMetrics):
        raise ValueError(f"{path} holds the metrics of a linear run")
    return metrics


def run_deep_sweep(
    base: DeepExperimentConfig,
    *,
    methods: list[str],
    seeds: list[int],
    out_dir: str | Path,
    workers: int,
    progress: bool = True,
    resume: bool = False,
) -> list[DeepSweepRow]:
    """Run every (method, seed), write the tables, return the rows (failed runs included, in
    ``methods`` × ``seeds`` order)."""
    if workers < 1:
        raise ValueError(f"--workers must be ≥ 1, got {workers}")
    with claim_output_dir(out_dir, hint="choose a new directory or --resume", resume=resume) as out:
        jobs = make_deep_jobs(base, methods, seeds, out)
        done = {job.out_dir: _finished(job) for job in jobs}  # check every reuse up front
        rows = {d: DeepSweepRow.from_metrics(m, d) for d, m in done.items() if m is not None}
        todo = [job for job in jobs if done[job.out_dir] is None]
        if workers > 1:  # each seed's prefixes once, not by every worker at the same time
            for seed in sorted({job.config["seed"] for job in todo}):
                config = next(_deep_config(j.config) for j in todo if j.config["seed"] == seed)
                warm_prefix_cache(config, progress)
        bar = tqdm(total=len(jobs), initial=len(rows), desc="deep sweep", disable=not progress)
        if workers == 1:
            for job in todo:
                rows[job.out_dir] = _run_job(job)
                bar.update()
        else:
            threads = max(1, (os.cpu_count() or 1) // workers)
            with ProcessPoolExecutor(
                workers, initializer=_worker_init, initargs=(threads,)
            ) as pool:
                futures = {pool.submit(_run_job, job): job for job in todo}
                for fut in as_completed(futures):
                    rows[futures[fut].out_dir] = fut.result()
                    bar.update()
        bar.close()
        ordered = [rows[job.out_dir] for job in jobs]
        write_deep_tables(out, ordered, methods)
    return ordered
