"""The named experiments from Python: what the command line does, as functions that return
typed results (docs/api.md). Nothing is written unless an output directory is given; torch's
thread count is left as it is (the command line sets it from the config's ``threads``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from condimmune.experiments.attack import attack_run_dir
from condimmune.experiments.config import resolve_config
from condimmune.experiments.pipeline import (
    AttackOutcome,
    LoadedRun,
    RunResult,
    pipeline_for,
    resolve_plan,
)
from condimmune.experiments.records import RunMetrics
from condimmune.experiments.runner import read_run, run_plan

__all__ = ["attack_run", "evaluate_run", "load_run", "run"]


def run(
    experiment: str = "mnist-pair",
    *,
    set: Sequence[str] = (),
    config: str | Path | None = None,
    seed: int | None = None,
    out: str | Path | None = None,
    progress: bool = False,
) -> RunResult:
    """Run a registered experiment (``condimmune list``) with ``--set``-style overrides
    (``["train.epochs=5", "method.weight=0.1"]``) or a YAML ``config`` file; with
    ``out``, its run directory is written there as ``condimmune run`` writes it."""
    plan = resolve_plan(resolve_config(experiment, config, list(set), seed=seed))
    result = run_plan(plan, out, progress=progress)
    if result is None:  # pragma: no cover - only the non-primary processes of a DDP run
        raise RuntimeError("this process does not hold the run (a non-primary DDP process)")
    return result


def load_run(run_dir: str | Path) -> LoadedRun:
    """A run directory read back strictly: its plan, metrics, models and data."""
    return read_run(run_dir)


def evaluate_run(run_dir: str | Path) -> tuple[RunMetrics, RunMetrics]:
    """``(recomputed, saved)`` metrics of a run directory (``condimmune evaluate``)."""
    loaded = read_run(run_dir)
    pipeline = pipeline_for(loaded.plan.family)
    with pipeline.named_by_config():
        recomputed = pipeline.evaluate(loaded, progress=False)
    return recomputed, loaded.metrics


def attack_run(
    run_dir: str | Path, *, set: Sequence[str] = (), attackers: Sequence[str] = ()
) -> AttackOutcome:
    """``condimmune attack RUN_DIR``: the attack suite recorded in the run directory;
    ``set``: ``attack.*`` overrides, ``attackers``: their names (default: the run's)."""
    chosen = [f"attack.attackers={','.join(attackers)}"] if attackers else []
    return attack_run_dir(run_dir, [*set, *chosen])
