"""One runner for both families: a plan → a run directory, and a run directory → its run.

Run directory (a contract other tools read; each family adds its files, see its pipeline):

===================  ==========================================================================
``config.yaml``      the resolved config (the plan's recipe) + ``versions``: what ran
                     (:mod:`~condimmune.experiments.provenance`; not part of the recipe)
``metrics.json``     the run's metrics record (:mod:`condimmune.experiments.records`)
``report.md``, PNG   the report and its figures
``manifest.json``    the sha256 of every file above, written last
                     (:mod:`~condimmune.experiments.manifest`)
===================  ==========================================================================

Everything is written into a temporary sibling directory that is renamed into place at the
end, so an interrupted or failed run never leaves a half-written ``metrics.json``; the
output path is checked and locked before any compute
(:func:`~condimmune.experiments.rundir.claim_output_dir`). Reading a run back verifies its
manifest first: files changed or swapped in from another run are refused, naming the file.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from condimmune.core.errors import UserError
from condimmune.core.progress import ProgressCallback
from condimmune.experiments.config import ConfigError, apply_overrides, config_from_dict
from condimmune.experiments.manifest import (
    finish_interrupted_update,
    require_listed,
    seal_run_dir,
    verify_manifest,
)
from condimmune.experiments.pipeline import (
    LoadedRun,
    Pipeline,
    RunResult,
    pipeline_for,
    read_metrics,
    resolve_plan,
)
from condimmune.experiments.plan import RunPlan, fingerprint
from condimmune.experiments.provenance import run_record
from condimmune.experiments.records import RunMetrics
from condimmune.experiments.report import write_page
from condimmune.experiments.rundir import (
    claim_output_dir,
    read_json,
    read_yaml_mapping,
    write_directory_atomically,
)
from condimmune.methods.base import ModelFamily

__all__ = ["metrics_json", "read_run", "run_plan"]

_FIX = "pass a run directory written by `condimmune run`"


def run_plan(
    plan: RunPlan[Any],
    out: str | Path | None,
    *,
    progress: bool = True,
    on_progress: ProgressCallback | None = None,
) -> RunResult | None:
    """Run ``plan`` and, with ``out``, write its run directory (module docstring). Returns the
    run, or ``None`` on a process of a multi-process run that does not write it. The
    family's long phases report to ``on_progress`` (``progress`` draws the bars of those
    that draw their own)."""
    pipeline = pipeline_for(plan.family)
    target = None if out is None else Path(out)
    if target is None or not pipeline.primary(plan):
        with pipeline.named_by_config():
            unwritten: RunResult | None = pipeline.run(
                plan, target, progress=progress, on_progress=on_progress
            )
        return unwritten
    with claim_output_dir(target) as final, pipeline.named_by_config():
        result: RunResult | None = pipeline.run(
            plan, final, progress=progress, on_progress=on_progress
        )
        if result is None:  # pragma: no cover - a primary process always has the run
            raise RuntimeError("the primary process of a run returned no result")
        finished = result

        def write(tmp: Path) -> None:
            _write_run(tmp, pipeline, finished)
            # before the rename, not after: a kill between the two must not leave resume
            # state beside a finished run (it then costs a rerun, never a leftover)
            pipeline.finish(plan, final)

        write_directory_atomically(final, write)
    return result


def _write_run(directory: Path, pipeline: Pipeline[Any, Any, Any], result: RunResult) -> None:
    resolved = result.plan.recipe_dict()
    torch_run = pipeline.family is not ModelFamily.LINEAR  # a linear run is numpy alone
    resolved["versions"] = run_record(resolved, *pipeline.packages, torch_run=torch_run)
    (directory / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
    pipeline.write_files(directory, result)
    (directory / "metrics.json").write_text(metrics_json(result.metrics))
    write_page(directory, pipeline.report(result))
    seal_run_dir(directory, result.plan.fingerprint(), unsealed=pipeline.unsealed_files)


def metrics_json(metrics: RunMetrics) -> str:
    """The text of a run's ``metrics.json``."""
    return json.dumps(metrics.to_json(), indent=2, allow_nan=True) + "\n"


def read_run(run_dir: str | Path, overrides: Sequence[str] = ()) -> LoadedRun:
    """A run directory read back strictly: its config (with ``attack.*`` ``overrides``) as a
    plan, its metrics as the family's record, and the family's files. A missing, damaged or
    inconsistent file is a :class:`UserError` naming it (a ``metrics.json`` that does not
    hold its record, a :class:`~condimmune.core.records.RecordError`)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(
            "no such run directory" if not run_dir.exists() else "not a directory", run_dir, _FIX
        )
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise UserError("not a complete run directory (missing config.yaml)", run_dir, _FIX)
    finish_interrupted_update(run_dir)
    raw = read_yaml_mapping(config_path, _FIX)
    raw.pop("versions", None)
    listed = verify_manifest(run_dir, fingerprint(raw))
    try:
        config = config_from_dict(raw)
    except ValueError as exc:
        raise UserError(f"not a valid run config ({exc})", config_path, _FIX) from None
    bad = [o for o in overrides if not o.split("=", 1)[0].strip().startswith("attack.")]
    if bad:
        raise ConfigError(f"--set {bad[0]!r}: only attack.* keys can change after a run")
    plan = resolve_plan(apply_overrides(config, list(overrides)))
    pipeline = pipeline_for(plan.family)
    missing = [n for n in ("metrics.json", *pipeline.run_files) if not (run_dir / n).is_file()]
    if missing:
        raise UserError(
            f"not a complete run directory (missing {', '.join(missing)})",
            run_dir,
            "run the experiment again into a new --out",
        )
    require_listed(run_dir, listed, ("config.yaml", "metrics.json", *pipeline.run_files))
    path = run_dir / "metrics.json"
    metrics = read_metrics(read_json(path, _FIX), source=str(path))
    if not isinstance(metrics, pipeline.metrics_type):
        raise UserError(
            f"holds the metrics of another kind of run than its config.yaml "
            f"({plan.name}, a {plan.family.value} experiment)",
            path,
            "run the experiment again into a new --out",
        )
    with pipeline.named_by_config():
        loaded: LoadedRun = pipeline.load(run_dir, plan, metrics)
    return loaded
