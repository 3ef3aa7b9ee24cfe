"""What ``condimmune sweep`` does: resolve the config, run the linear sweep (methods × seeds ×
digit pairs) or the deep one (methods × seeds), and return the table the command prints and
the failed runs (this module prints nothing)."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from condimmune.experiments.config import DeepExperimentConfig, resolve_config
from condimmune.experiments.deep_sweep import run_deep_sweep
from condimmune.experiments.deep_sweep_tables import DeepSweepRow, summarize_deep
from condimmune.experiments.deep_sweep_tables import summary_table as deep_summary_table
from condimmune.experiments.sweep import parse_pairs, run_sweep
from condimmune.experiments.sweep_tables import SweepRow, summary_table

__all__ = ["SweepOptions", "SweepOutput", "run_sweep_command"]


@dataclass(frozen=True)
class SweepOptions:
    """The command's options, as typed on the command line."""

    experiment: str | None
    config: Path | None
    sets: list[str]
    methods: str
    seeds: str
    pairs: str
    out: Path | None
    workers: int
    progress: bool
    resume: bool


@dataclass(frozen=True)
class SweepOutput:
    """The printed summary: a table (title, columns, cells), the sweep directory, and the
    runs that failed (``(run directory, error)``)."""

    title: str
    columns: list[str]
    cells: list[list[str]]
    out: Path
    failed: list[tuple[str, str]]
    total: int


def run_sweep_command(options: SweepOptions) -> SweepOutput:
    """Run the sweep ``options`` describe; a run that fails is reported, not raised."""
    cfg = resolve_config(options.experiment, options.config, options.sets)
    try:
        seed_list = [int(s) for s in options.seeds.split(",")]
    except ValueError:
        raise ValueError(
            f"--seeds must be comma-separated integers, got {options.seeds!r}"
        ) from None
    if options.workers < 1:
        raise ValueError(f"--workers must be ≥ 1, got {options.workers}")
    out = options.out
    if out is None:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path("runs") / f"sweep-{cfg.experiment}-{stamp}"
    method_list = [m.strip() for m in options.methods.split(",")]
    rows: Sequence[SweepRow | DeepSweepRow]
    if isinstance(cfg, DeepExperimentConfig):  # methods × seeds; --pairs does not apply
        deep_rows = run_deep_sweep(
            cfg,
            methods=method_list,
            seeds=seed_list,
            out_dir=out,
            workers=options.workers,
            progress=options.progress,
            resume=options.resume,
        )
        columns, cells = deep_summary_table(summarize_deep(deep_rows, method_list))
        rows = deep_rows
    else:
        linear_rows = run_sweep(
            cfg,
            methods=method_list,
            seeds=seed_list,
            pairs=parse_pairs(options.pairs),
            out_dir=out,
            workers=options.workers,
            progress=options.progress,
            resume=options.resume,
        )
        columns, cells = summary_table(linear_rows)
        rows = linear_rows
    failed = [(str(r.run_dir), str(r.error)) for r in rows if r.failed]
    title = f"sweep: {cfg.experiment} ({len(rows)} runs)"
    return SweepOutput(title, columns, cells, out, failed, len(rows))
