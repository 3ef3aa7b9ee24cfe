"""The deep sweep: one command over methods × seeds, whose table is the mean ± std of its runs."""

from __future__ import annotations

import csv
import json
import statistics

import pytest
from typer.testing import CliRunner

from condimmune.cli import app
from condimmune.experiments.config import apply_overrides, default_config
from condimmune.experiments.pipeline import pipeline_for
from condimmune.experiments.report import format_number
from condimmune.experiments.sweep import make_jobs, run_sweep
from condimmune.experiments.sweep_rows import SweepRow
from condimmune.experiments.tables import summarize, summary_table
from condimmune.methods.base import ModelFamily

cli = CliRunner()

QUICK = [
    "train.pretrain_epochs=1",
    "train.epochs=1",
    "train.batch_size=64",
    "data.train_per_class=30",
    "data.test_per_class=20",
    "eval.groups=3",
    "eval.group_size=64",
    "eval.probe_steps=10",
    "eval.attack_budget=30",
]


def _sets(pairs):
    return [x for p in pairs for x in ("--set", p)]


@pytest.mark.slow
def test_deep_sweep_table_is_the_mean_and_std_of_its_runs(tmp_path) -> None:
    out = tmp_path / "sweep"
    args = ["sweep", "mnist-cnn", "--methods", "none,condnum", "--seeds", "0,1"]
    args += ["--workers", "1", "--out", str(out), "--no-progress", *_sets(QUICK)]
    result = cli.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (out / "sweep.png").is_file()
    with (out / "sweep.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["method"], r["seed"]) for r in rows] == [
        ("none", "0"),
        ("none", "1"),
        ("condnum", "0"),
        ("condnum", "1"),
    ]
    md = (out / "sweep.md").read_text()
    for method in ("none", "condnum"):
        runs = [
            json.loads((out / "runs" / method / f"seed{seed}" / "metrics.json").read_text())
            for seed in (0, 1)
        ]
        # the CSV holds each run's own numbers …
        for row, m in zip([r for r in rows if r["method"] == method], runs, strict=True):
            assert float(row["rir"]) == m["rir_theta0"]["honest"]["rir_mean"]
            assert float(row["benign_ratio"]) == m["rir_theta0"]["honest"]["benign_ratio_mean"]
        # … and the table's cells are the mean ± sample std over the seeds
        line = next(x for x in md.splitlines() if x.startswith(f"| {method} | 2 |"))
        for values in (
            [m["rir_theta0"]["honest"]["rir_mean"] for m in runs],
            [m["rir_theta0"]["paper_compatible"]["rir_mean"] for m in runs],
            [m["rir_theta0"]["honest"]["harmful_ratio_mean"] for m in runs],
            [m["rir_theta0_paper_protocol"]["honest"]["rir_mean"] for m in runs],
        ):
            cell = (
                f"{format_number(statistics.fmean(values))} ± "
                f"{format_number(statistics.stdev(values))}"
            )
            assert f" {cell} |" in line, (cell, line)
        accuracy = [m["benign_accuracy"]["immunized"] for m in runs]
        assert f"→ {format_number(statistics.fmean(accuracy))} (±" in line
    # --resume reuses every finished run (nothing is re-run: the files stay as they were)
    stamp = (out / "runs" / "none" / "seed0" / "metrics.json").stat().st_mtime_ns
    again = cli.invoke(app, [*args, "--resume"])
    assert again.exit_code == 0, again.output
    assert (out / "runs" / "none" / "seed0" / "metrics.json").stat().st_mtime_ns == stamp
    assert (out / "sweep.md").read_text() == md


def test_deep_jobs_refuse_repeats_and_linear_only_methods(tmp_path) -> None:
    base = apply_overrides(default_config("mnist-cnn"), QUICK)
    jobs = make_jobs(base, ["none", "closed-form"], [0, 1], None, tmp_path)
    assert jobs[0].out_dir == str(tmp_path / "runs" / "none" / "seed0")
    assert {j.config["train"]["method"] for j in jobs} == {"none", "closed-form"}
    with pytest.raises(ValueError, match="twice"):
        make_jobs(base, ["none", "none"], [0], None, tmp_path)
    with pytest.raises(ValueError, match="twice"):
        make_jobs(base, ["none"], [3, 3], None, tmp_path)
    with pytest.raises(ValueError, match="at least one"):
        make_jobs(base, [], [0], None, tmp_path)
    with pytest.raises(ValueError, match="unknown"):
        make_jobs(base, ["nope"], [0], None, tmp_path)
    with pytest.raises(ValueError, match="has no digit pairs"):
        make_jobs(base, ["none"], [0], [(1, 7)], tmp_path)


def _summary_lines(rows: list[SweepRow], methods: list[str]) -> list[str]:
    printed, _ = pipeline_for(ModelFamily.DEEP).sweep_summary()
    return summary_table(summarize(rows, methods), printed).markdown()


def test_a_summary_without_runs_shows_dashes() -> None:
    failed = SweepRow("mnist-cnn", "none", 0, {}, run_dir="x", error="E")
    (line,) = _summary_lines([failed], ["none"])[2:]
    assert line.startswith("| none | 0 (1 failed) | — |")


def test_deep_sweep_refuses_bad_workers_and_foreign_run_directories(tmp_path) -> None:
    import shutil
    from pathlib import Path

    import yaml
    from _cli_support import reseal

    from condimmune.experiments.sweep_jobs import write_sweep_marker

    base = apply_overrides(default_config("mnist-cnn"), QUICK)
    with pytest.raises(ValueError, match="--workers must be ≥ 1"):
        run_sweep(base, methods=["none"], seeds=[0], out_dir=tmp_path / "a", workers=0)
    # a finished run directory with the job's config but a linear metrics.json
    (job,) = make_jobs(base, ["none"], [0], None, tmp_path / "b")
    run = Path(job.out_dir)
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(job.config))
    golden = Path(__file__).parent / "golden" / "digits-none.json"
    shutil.copy(golden, run / "metrics.json")
    reseal(run)  # files that belong together, of the wrong kind
    write_sweep_marker(tmp_path / "b", "mnist-cnn")
    with pytest.raises(ValueError, match="metrics of a linear run"):
        run_sweep(base, methods=["none"], seeds=[0], out_dir=tmp_path / "b", workers=1, resume=True)


def test_a_probe_that_never_reached_its_level_is_counted() -> None:
    rows = [
        SweepRow(
            "x",
            "m",
            seed,
            {"probe_steps_original": 10, "probe_steps_immunized": steps},
            run_dir=str(seed),
        )
        for seed, steps in ((0, None), (1, 30), (2, None))
    ]
    (line,) = _summary_lines(rows, ["m"])[2:]
    assert "| 10 → 30 (± 0) (2/3 not reached) |" in line
    rows = [r for r in rows if r["probe_steps_immunized"] is None]
    (line,) = _summary_lines(rows, ["m"])[2:]
    assert "| 10 → — (2/2 not reached) |" in line
