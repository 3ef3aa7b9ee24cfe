"""Run an experiment over methods × seeds × (benign, harmful) digit pairs in parallel processes.

Each job writes its own run directory under ``OUT/runs/<method>/<pair>/seed<k>``; the sweep
writes ``sweep.csv`` (one row per run), ``sweep.md`` (per-method summary and per-pair
table, with the per-run wall time) and, for digit experiments, one 10 × 10 heat map of
log RIR per method (rows benign digit, columns harmful digit, like the paper's Fig. 2).
Worker processes run torch with one thread each, so ``workers`` processes use
``workers`` cores.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from condimmune.experiments.rundir import new_output_dir
from condimmune.experiments.config import Experiment, ExperimentConfig, Method, config_from_dict, config_to_dict

__all__ = ["SweepJob", "all_ordered_pairs", "parse_pairs", "run_sweep"]

CSV_FIELDS = [
    "experiment",
    "method",
    "seed",
    "benign",
    "harmful",
    "rir",
    "rir_paper_compatible",
    "harmful_ratio",
    "benign_ratio",
    "bound",
    "rir_fraction_of_bound",
    "benign_metric",
    "benign_raw",
    "benign_immunized",
    "steps_raw",
    "steps_immunized",
    "immunized",
    "wall_seconds",
    "run_dir",
    "error",
]


@dataclass(frozen=True)
class SweepJob:
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


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)


def _row(config: ExperimentConfig, m: dict[str, Any], run_dir: str) -> dict[str, Any]:
    digits = config.experiment != Experiment.HOUSE_PRICE.value
    return {
        "experiment": m["experiment"],
        "method": m["method"],
        "seed": m["seed"],
        "benign": config.data.benign_digit if digits else "",
        "harmful": config.data.harmful_digit if digits else "",
        "rir": m["rir"],
        "rir_paper_compatible": m["rir_paper_compatible"],
        "harmful_ratio": m["harmful_ratio"],
        "benign_ratio": m["benign_ratio"],
        "bound": m["rir_bound"]["value"] if not m["rir_bound"]["unbounded"] else math.inf,
        "rir_fraction_of_bound": m["rir_fraction_of_bound"],
        "benign_metric": m["benign_task"]["metric"],
        "benign_raw": m["benign_task"]["raw"],
        "benign_immunized": m["benign_task"]["immunized"],
        "steps_raw": m["attack"]["steps_raw"],
        "steps_immunized": m["attack"]["steps_immunized"],
        "immunized": m["immunization_check"]["immunized"],
        "wall_seconds": m["wall_seconds"],
        "run_dir": run_dir,
        "error": "",
    }


def _run_job(job: SweepJob) -> dict[str, Any]:
    """Run one job, or reuse its finished run directory; a failure becomes a row with
    ``error`` set instead of stopping the sweep."""
    from condimmune.experiments.linear_runner import run_experiment

    config = config_from_dict(job.config)
    saved = Path(job.out_dir) / "metrics.json"
    if saved.is_file():
        return _row(config, json.loads(saved.read_text()), job.out_dir)
    try:
        art = run_experiment(config, job.out_dir, progress=False)
    except Exception as exc:  # one bad pair must not lose the other runs
        row = dict.fromkeys(CSV_FIELDS, "")
        row.update(
            experiment=config.experiment,
            method=config.train.method,
            seed=config.seed,
            run_dir=job.out_dir,
            error=f"{type(exc).__name__}: {exc}".splitlines()[0],
        )
        if config.experiment != Experiment.HOUSE_PRICE.value:
            row.update(benign=config.data.benign_digit, harmful=config.data.harmful_digit)
        return row
    return _row(config, art.metrics, job.out_dir)


def make_jobs(
    base: ExperimentConfig,
    methods: list[str],
    seeds: list[int],
    pairs: list[tuple[int, int]] | None,
    out_dir: Path,
) -> list[SweepJob]:
    jobs = []
    for method in methods:
        Method(method)
        for seed in seeds:
            for pair in pairs or [None]:
                cfg = config_to_dict(base)
                cfg["seed"] = seed
                cfg["train"]["method"] = method
                name = "all"
                if pair is not None:
                    cfg["data"]["benign_digit"], cfg["data"]["harmful_digit"] = pair
                    name = f"{pair[0]}-{pair[1]}"
                config_from_dict(cfg)  # validate before any process starts
                jobs.append(SweepJob(cfg, str(out_dir / "runs" / method / name / f"seed{seed}")))
    return jobs


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
) -> list[dict[str, Any]]:
    """Run all jobs, write the sweep table and heat maps, return the rows (failed jobs
    included, with ``error`` set). With ``resume``, runs whose directory already holds a
    ``metrics.json`` are read back instead of re-run."""
    out_dir = (
        Path(out_dir).expanduser().resolve()
        if resume
        else new_output_dir(out_dir, hint="choose a new directory or --resume")
    )
    if Experiment(base.experiment) is Experiment.HOUSE_PRICE:
        pairs = None
    jobs = make_jobs(base, methods, seeds, pairs, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=len(jobs), desc="sweep", disable=not progress)
    if workers <= 1:
        for job in jobs:
            rows.append(_run_job(job))
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers, initializer=_worker_init) as pool:
            futures = [pool.submit(_run_job, job) for job in jobs]
            for fut in as_completed(futures):
                rows.append(fut.result())
                bar.update()
    bar.close()
    rows.sort(key=lambda r: (r["method"], str(r["benign"]), str(r["harmful"]), r["seed"]))
    _write_csv(out_dir / "sweep.csv", rows)
    _write_markdown(out_dir / "sweep.md", rows)
    if pairs is not None:
        for method in methods:
            _heatmap(
                out_dir / f"heatmap_{method}.png",
                [r for r in rows if r["method"] == method],
                method,
            )
    return rows


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-method means (arithmetic mean of per-run RIR, as the paper's Table 2)."""
    out = []
    for method in sorted({r["method"] for r in rows}):
        rs = [r for r in rows if r["method"] == method and not r["error"]]
        failed = sum(1 for r in rows if r["method"] == method and r["error"])
        if not rs:
            out.append({"method": method, "runs": 0, "failed": failed})
            continue
        finite = [r["bound"] for r in rs if math.isfinite(r["bound"])]
        fractions = [
            r["rir_fraction_of_bound"] for r in rs if r["rir_fraction_of_bound"] is not None
        ]
        out.append(
            {
                "method": method,
                "runs": len(rs),
                "failed": failed,
                "mean_rir": statistics.fmean(r["rir"] for r in rs),
                "mean_rir_paper_compatible": statistics.fmean(
                    r["rir_paper_compatible"] for r in rs
                ),
                "mean_harmful_ratio": statistics.fmean(r["harmful_ratio"] for r in rs),
                "mean_benign_ratio": statistics.fmean(r["benign_ratio"] for r in rs),
                "mean_bound": statistics.fmean(finite) if finite else math.inf,
                "mean_fraction_of_bound": statistics.fmean(fractions) if fractions else None,
                "benign_kept": sum(r["benign_ratio"] <= 1 + 1e-6 for r in rs),
                "rir_above_1": sum(r["rir"] > 1 for r in rs),
                "mean_wall_seconds": statistics.fmean(r["wall_seconds"] for r in rs),
            }
        )
    return out


def _write_markdown(path: Path, rows: list[dict[str, Any]]) -> None:
    from condimmune.experiments.report import format_number as f

    lines = [
        "# Sweep",
        "",
        "| method | runs | mean RIR | mean RIR (paper-compatible) | "
        "mean (i) | mean (ii) | mean bound | mean RIR/bound | κ_P kept | RIR > 1 | "
        "s/run | failed |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summarize(rows):
        if not s["runs"]:
            lines.append(f"| {s['method']} | 0 |" + " — |" * 9 + f" {s['failed']} |")
            continue
        lines.append(
            f"| {s['method']} | {s['runs']} | {f(s['mean_rir'])} | "
            f"{f(s['mean_rir_paper_compatible'])} | {f(s['mean_harmful_ratio'])} | "
            f"{f(s['mean_benign_ratio'])} | {f(s['mean_bound'])} | "
            f"{f(s['mean_fraction_of_bound'])} | {s['benign_kept']}/{s['runs']} | "
            f"{s['rir_above_1']}/{s['runs']} | {s['mean_wall_seconds']:.2f} | {s['failed']} |"
        )
    lines += [
        "",
        "| method | benign | harmful | seed | RIR | RIR (paper-compat.) | bound | "
        "RIR/bound | (ii) | benign metric raw → imm. | steps raw → imm. | s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["error"]:
            lines.append(
                f"| {r['method']} | {r['benign']} | {r['harmful']} | {r['seed']} | "
                f"failed: {r['error']} |" + " |" * 7
            )
            continue
        lines.append(
            f"| {r['method']} | {r['benign']} | {r['harmful']} | {r['seed']} | {f(r['rir'])} | "
            f"{f(r['rir_paper_compatible'])} | {f(r['bound'])} | "
            f"{f(r['rir_fraction_of_bound'])} | {f(r['benign_ratio'])} | "
            f"{f(r['benign_raw'])} → {f(r['benign_immunized'])} | "
            f"{f(r['steps_raw'])} → {f(r['steps_immunized'])} | {r['wall_seconds']:.2f} |"
        )
    path.write_text("\n".join(lines) + "\n")


def _heatmap(path: Path, rows: list[dict[str, Any]], method: str) -> None:
    import numpy as np

    cells: dict[tuple[int, int], list[float]] = {}
    for r in (r for r in rows if not r["error"]):
        cells.setdefault((int(r["benign"]), int(r["harmful"])), []).append(math.log(r["rir"]))
    grid = np.full((10, 10), np.nan)
    for (a, b), values in cells.items():
        grid[a, b] = statistics.fmean(values)  # mean over seeds
    fig = Figure(figsize=(5, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(grid, cmap="viridis")
    fig.colorbar(im, ax=ax, label="log RIR")
    ax.set_xticks(range(10))
    ax.set_yticks(range(10))
    ax.set_xlabel("harmful digit")
    ax.set_ylabel("benign digit")
    ax.set_title(f"{method}: log RIR per pair")
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110, bbox_inches="tight")
