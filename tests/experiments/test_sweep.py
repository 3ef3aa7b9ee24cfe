"""The sweep: typed rows and summaries, the unchanged CSV, resume and its config check,
duplicate jobs refused up front, failed jobs kept as rows, no more workers than jobs, and a
sweep stopped by SIGTERM (in this process; with worker processes: tests/cli/test_signals.py)."""

from __future__ import annotations

import csv
import math
import os
import re
import shutil
import signal
import statistics
from pathlib import Path

import pytest
import yaml
from _cli_support import leftovers

import condimmune.experiments.sweep as sweep_module
from condimmune.core.errors import UserError
from condimmune.experiments.config import ExperimentConfig, apply_overrides, default_config
from condimmune.experiments.interrupt import Interrupted
from condimmune.experiments.pipeline import pipeline_for
from condimmune.experiments.report import format_number
from condimmune.experiments.sweep import run_sweep, sweep_command
from condimmune.experiments.sweep_jobs import split_grid
from condimmune.experiments.sweep_rows import SweepRow
from condimmune.experiments.tables import MethodStats, summarize, summary_table
from condimmune.methods.base import DeepSolver, DeepVersion, MethodSpec, ModelFamily, NoOptions
from condimmune.methods.leace import leace_feature_map
from condimmune.methods.registry import register_method, unregister_method

# sweep.csv's columns, as the CLI and users' notebooks read them: must not change.
CSV_COLUMNS = [
    "experiment",
    "method",
    "variant",
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
    "benign_original",
    "benign_immunized",
    "steps_original",
    "steps_immunized",
    "immunized",
    "wall_seconds",
    "settings",
    "method_settings",
    "run_dir",
    "error",
]
PAIRS = [(1, 7), (7, 1)]
TINY = ["data.per_class=20", "data.test_per_class=5", "attack.budget=50"]
"""A run of about a second (tests that only need runs to exist)."""


def digits_config(*overrides: str) -> ExperimentConfig:
    cfg = apply_overrides(default_config("digits"), ["train.epochs=1", *overrides])
    assert isinstance(cfg, ExperimentConfig)
    return cfg


def sweep(out: Path, cfg: ExperimentConfig | None = None, **kwargs: object) -> list[SweepRow]:
    options: dict[str, object] = {
        "methods": ["closed-form"],
        "seeds": [0],
        "pairs": PAIRS,
        "workers": 1,
        "progress": False,
    }
    options.update(kwargs)
    return run_sweep(cfg or digits_config(), out_dir=out, **options).rows  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[SweepRow]]:
    """One finished two-pair sweep, shared (tests that resume work on a copy)."""
    out = tmp_path_factory.mktemp("sweep") / "out"
    return out, sweep(out)


def copy_of(finished: tuple[Path, list[SweepRow]], tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(finished[0], out)
    return out


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_rows_are_typed_and_the_csv_columns_are_unchanged(finished):
    out, rows = finished
    assert [(r["benign"], r["harmful"]) for r in rows] == PAIRS  # by method, pair, seed
    for r in rows:
        assert isinstance(r, SweepRow)
        assert not r.failed and r.error == ""
        assert (r.experiment, r.method, r.seed) == ("digits", "closed-form", 0)
        for name in ("rir", "rir_paper_compatible", "harmful_ratio", "benign_ratio", "bound"):
            assert isinstance(r[name], float), name
        assert isinstance(r["steps_original"], int) and isinstance(r["steps_immunized"], int)
        assert isinstance(r["immunized"], bool)
        assert r["benign_metric"] == "accuracy"
        pair = f"{r['benign']}-{r['harmful']}"
        assert Path(r.run_dir) == out / "runs" / "closed-form" / pair / "seed0"
    with pytest.raises(TypeError):
        rows[0].values["rir"] = 2.0  # type: ignore[index]
    header = (out / "sweep.csv").read_text().splitlines()[0]
    assert header.split(",") == CSV_COLUMNS
    table = read_csv(out / "sweep.csv")
    assert len(table) == len(rows)
    for r, line in zip(rows, table, strict=True):
        assert float(line["rir"]) == r["rir"]
        assert int(line["steps_immunized"]) == r["steps_immunized"]
        assert line["immunized"] == str(r["immunized"])
        assert line["benign"] == str(r["benign"]) and line["error"] == ""
    assert "mean RIR" in (out / "sweep.md").read_text()
    assert (out / "heatmap_closed-form.png").is_file()


def _cells(stats: list[MethodStats]) -> list[dict[str, str]]:
    """The linear summary's markdown cells of each method, by header."""
    _, columns = pipeline_for(ModelFamily.LINEAR).sweep_summary()
    table = summary_table(stats, columns)
    return [dict(zip(table.columns, row, strict=True)) for row in table.rows]


def test_summary_numbers_are_the_means_of_the_rows(finished):
    _, rows = finished
    (stats,) = summarize(rows, ["closed-form"])
    assert (stats.method, stats.runs, stats.failed) == ("closed-form", 2, 0)
    (cells,) = _cells([stats])
    f = format_number

    def values(name: str) -> list[float]:
        return [float(r[name]) for r in rows]  # type: ignore[arg-type]

    assert cells["runs"] == "2"
    assert cells["mean RIR"] == f(statistics.fmean(values("rir")))
    assert cells["median RIR"] == f(statistics.median(values("rir")))
    assert cells["mean RIR (paper-compatible)"] == f(
        statistics.fmean(values("rir_paper_compatible"))
    )
    assert cells["median RIR (paper-compatible)"] == f(
        statistics.median(values("rir_paper_compatible"))
    )
    assert cells["mean (i)"] == f(statistics.fmean(values("harmful_ratio")))
    assert cells["mean (ii)"] == f(statistics.fmean(values("benign_ratio")))
    assert cells["mean bound"] == f(statistics.fmean(values("bound")))
    assert cells["mean RIR/bound"] == f(statistics.fmean(values("rir_fraction_of_bound")))
    assert cells["s/run"] == f(statistics.fmean(values("wall_seconds")))
    kept = sum(v <= 1 + 1e-6 for v in values("benign_ratio"))
    assert cells["κ_P kept"] == f"{kept}/2"
    assert cells["RIR > 1"] == f"{sum(v > 1 for v in values('rir'))}/2"
    assert cells["Def. 3.1"] == f"{sum(bool(r['immunized']) for r in rows)}/2"
    assert cells["benign metric orig. → imm. (mean)"] == (
        f"{f(statistics.fmean(values('benign_original')))} → "
        f"{f(statistics.fmean(values('benign_immunized')))}"
    )


def _row(method: str, error: str = "", **values: object) -> SweepRow:
    return SweepRow(
        experiment="digits",
        method=method,
        seed=0,
        values={"benign": 1, "harmful": 7, **values},
        run_dir="x",
        error=error,
    )


def test_summary_of_unbounded_and_failed_runs():
    # skewed, distinct values: each mean differs from its median
    done = {"harmful_ratio": 3.0, "benign_ratio": 1.5, "rir_fraction_of_bound": None}
    rows = [
        _row(
            "a",
            rir=4.0,
            rir_paper_compatible=1.0,
            benign_original=1.0,
            benign_immunized=0.5,
            bound=math.inf,
            wall_seconds=1.0,
            immunized=True,
            **done,
        ),
        _row(
            "a",
            rir=0.5,
            rir_paper_compatible=2.0,
            benign_original=0.25,
            benign_immunized=0.5,
            bound=math.inf,
            wall_seconds=3.0,
            immunized=False,
            **done,
        ),
        _row(
            "a",
            rir=1.0,
            rir_paper_compatible=9.0,
            benign_original=0.25,
            benign_immunized=0.875,
            bound=math.inf,
            wall_seconds=2.0,
            immunized=False,
            **done,
        ),
        _row("a", error="ValueError: boom"),
        _row("b", error="ValueError: boom"),
    ]
    a, b = _cells(summarize(rows, ["a", "b"]))
    assert a == {
        "method": "a",
        "runs": "3 (1 failed)",
        "mean RIR": format_number(5.5 / 3),
        "median RIR": "1",
        "mean RIR (paper-compatible)": "4",
        "median RIR (paper-compatible)": "2",
        "mean (i)": "3",
        "mean (ii)": "1.5",
        "mean bound": "inf",
        "mean RIR/bound": "—",
        "κ_P kept": "0/3",
        "RIR > 1": "1/3",
        "Def. 3.1": "1/3",
        "benign metric orig. → imm. (mean)": "0.5 → 0.625",
        "s/run": "2",
    }
    assert b["runs"] == "0 (1 failed)" and b["mean RIR"] == "—" and b["κ_P kept"] == "—"


def test_resume_reuses_finished_runs_and_runs_the_rest(finished, tmp_path):
    out = copy_of(finished, tmp_path)
    before = {r.run_dir.replace(str(finished[0]), str(out)): r for r in finished[1]}
    stamps = {d: (Path(d) / "metrics.json").stat().st_mtime_ns for d in before}
    rows = sweep(out, pairs=[*PAIRS, (2, 3)], resume=True)
    assert len(rows) == 3
    for r in rows:
        if r.run_dir in before:  # read back, not re-run
            assert r["wall_seconds"] == before[r.run_dir]["wall_seconds"]
            assert r["rir"] == before[r.run_dir]["rir"]
            assert (Path(r.run_dir) / "metrics.json").stat().st_mtime_ns == stamps[r.run_dir]
        else:
            assert (r["benign"], r["harmful"], r.error) == (2, 3, "")
    assert len(read_csv(out / "sweep.csv")) == 3


def _drop_key(cfg: dict) -> None:
    del cfg["train"]["batch_size"]


def _add_key(cfg: dict) -> None:
    cfg["train"]["momentum"] = 0.9


@pytest.mark.parametrize(
    "edit, overrides, message",
    [
        pytest.param(
            None,
            ["train.epochs=2"],
            "was run with train.epochs=1, this sweep asks for 2; use a new --out or delete it",
            id="changed-epochs",
        ),
        pytest.param(
            None,
            ["train.lr=0.25"],
            "was run with train.lr=0.001, this sweep asks for 0.25",
            id="changed-rate",
        ),
        pytest.param(
            _drop_key,
            [],
            "was run without train.batch_size, this sweep asks for",
            id="key-missing",
        ),
        pytest.param(
            _add_key,
            [],
            "was run with train.momentum=0.9, this sweep does not set it",
            id="extra-key",
        ),
    ],
)
def test_resume_refuses_a_run_with_another_config(finished, tmp_path, edit, overrides, message):
    out = copy_of(finished, tmp_path)
    run_dir = out / "runs" / "closed-form" / "1-7" / "seed0"
    if edit is not None:
        path = run_dir / "config.yaml"
        saved = yaml.safe_load(path.read_text())
        edit(saved)
        path.write_text(yaml.safe_dump(saved, sort_keys=False))
    before = (out / "sweep.csv").read_text()
    with pytest.raises(ValueError, match=r"1-7/seed0 ") as err:
        sweep(out, digits_config(*overrides), resume=True)
    assert message in str(err.value)
    assert str(run_dir) in str(err.value)
    assert "\n" not in str(err.value)
    assert (out / "sweep.csv").read_text() == before  # refused before anything ran


def test_resume_refuses_a_run_without_config_yaml(finished, tmp_path):
    out = copy_of(finished, tmp_path)
    (out / "runs" / "closed-form" / "7-1" / "seed0" / "config.yaml").unlink()
    with pytest.raises(ValueError, match=r"no config\.yaml"):
        sweep(out, resume=True)


def test_resume_refuses_a_run_whose_files_were_swapped(finished, tmp_path):
    out = copy_of(finished, tmp_path)
    runs = out / "runs" / "closed-form"
    shutil.copy(runs / "7-1" / "seed0" / "extractor.safetensors", runs / "1-7" / "seed0")
    with pytest.raises(UserError, match=r"^was changed or replaced .*1-7/seed0/extractor\."):
        sweep(out, resume=True)


def _unmark(out: Path) -> None:
    (out / "sweep.json").unlink()


def _mark_other(out: Path) -> None:
    (out / "sweep.json").write_text('{"format": 1, "sweep_of": "mnist-pair"}\n')


@pytest.mark.parametrize(
    "edit, message",
    [
        pytest.param(_unmark, "is not a sweep directory (it has no sweep.json)", id="no-marker"),
        pytest.param(_mark_other, "marks a sweep of 'mnist-pair', not of 'digits'", id="other"),
    ],
)
def test_resume_refuses_a_directory_that_is_not_this_sweep(finished, tmp_path, edit, message):
    out = copy_of(finished, tmp_path)
    edit(out)
    with pytest.raises(UserError, match=re.escape(message)):
        sweep(out, resume=True)


def test_resume_continues_a_sweep_stopped_before_its_first_table(finished, tmp_path):
    """A sweep killed before any job finished has only its marker and run folders."""
    out = copy_of(finished, tmp_path)
    for table in ("sweep.csv", "sweep.md", "heatmap_closed-form.png"):
        (out / table).unlink()
    shutil.rmtree(out / "runs" / "closed-form" / "7-1")
    rows = sweep(out, resume=True)
    assert [r.error for r in rows] == ["", ""] and (out / "sweep.csv").is_file()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        pytest.param({"seeds": [0, 1, 0]}, "seeds lists 0 twice", id="seed"),
        pytest.param(
            {"methods": ["closed-form", "none", "closed-form"]},
            "methods lists 'closed-form' twice",
            id="method",
        ),
        pytest.param({"pairs": [(1, 7), (3, 8), (1, 7)]}, "pairs lists 1-7 twice", id="pair"),
        pytest.param({"methods": ["magic"]}, "unknown train.method 'magic'", id="unknown-method"),
        pytest.param({"methods": ["sweep-deep-only"]}, "has no linear version", id="deep-only"),
    ],
)
def test_bad_job_lists_are_refused_up_front(tmp_path, kwargs, message):
    deep_only = MethodSpec(
        "sweep-deep-only",
        "test",
        deep=DeepVersion(NoOptions, DeepSolver.CLOSED_FORM, feature_map=leace_feature_map),
    )
    register_method(deep_only)
    try:
        with pytest.raises(ValueError, match=message) as err:
            sweep(tmp_path / "out", **kwargs)
    finally:
        unregister_method(deep_only.name)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_a_failed_job_becomes_a_row_with_its_error(tmp_path):
    # digit 8 has only 174 images: 140 + 38 per class is too many for it, not for digit 1/7
    cfg = digits_config("data.per_class=140", "data.test_per_class=38")
    out = tmp_path / "out"
    ok, bad = sweep(out, cfg, pairs=[(1, 7), (8, 1)])
    assert not ok.failed
    assert bad.failed and bad.error.startswith("ConfigError: digit 8 has 174 images")
    assert (bad["benign"], bad["harmful"], bad.method, bad.seed) == (8, 1, "closed-form", 0)
    assert all(bad.values.get(name) is None for name in ("rir", "wall_seconds", "immunized"))
    line = read_csv(out / "sweep.csv")[1]
    assert line["error"] == bad.error and line["benign"] == "8"
    assert all(line[c] == "" for c in CSV_COLUMNS[6:19])
    assert f"| closed-form | 0 | 8 | 1 | failed: {bad.error} |" in (out / "sweep.md").read_text()
    (cells,) = _cells(summarize([ok, bad], ["closed-form"]))
    assert (cells["runs"], cells["mean RIR"]) == ("1 (1 failed)", format_number(ok["rir"]))
    (only_failed,) = _cells(summarize([bad], ["closed-form"]))
    assert (only_failed["runs"], only_failed["mean RIR"]) == ("0 (1 failed)", "—")


def test_workers_beyond_the_job_count_change_nothing(tmp_path, monkeypatch):
    """``--workers 1000`` on a one-job sweep runs it here, as ``--workers 1`` does, and
    records the same config (its threads included)."""

    def no_pool(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("started worker processes for a single job")

    monkeypatch.setattr(sweep_module, "results_in_workers", no_pool)
    cfg = digits_config("threads=2", *TINY)
    saved = []
    for workers in (1000, 1):
        out = tmp_path / f"workers{workers}"
        (row,) = sweep(out, cfg, pairs=[(1, 7)], workers=workers)
        assert not row.failed, row.error
        config = yaml.safe_load((Path(row.run_dir) / "config.yaml").read_text())
        saved.append({k: v for k, v in config.items() if k != "versions"})
    assert saved[0] == saved[1] and saved[0]["threads"] == 2


def test_a_sweep_stopped_by_sigterm_cleans_up_and_resumes(tmp_path, monkeypatch):
    """A real SIGTERM while the second job writes its run directory (jobs run in this
    process): the job's temporary directory and lock go, the finished run stays, the
    sweep's lock is released, and ``--resume`` runs only the rest."""
    import condimmune.experiments.pipelines.linear.report as linear_report

    draw = linear_report.save_figure

    def save_figure(fig: object, path: Path) -> None:
        if "/7-1/" in str(path):  # inside the second job's temporary directory
            os.kill(os.getpid(), signal.SIGTERM)
        draw(fig, path)  # type: ignore[arg-type]

    monkeypatch.setattr(linear_report, "save_figure", save_figure)
    out = tmp_path / "out"
    options = {"methods": "closed-form", "seeds": "0", "pairs": "1-7,7-1", "out": out}
    options.update(workers=1, progress=False)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted) as stopped:
        sweep_command(digits_config(*TINY), resume=False, **options)  # type: ignore[arg-type]
    assert signal.getsignal(signal.SIGTERM) is before
    assert stopped.value.exit_status == 143
    assert str(stopped.value) == (
        f"stopped by SIGTERM after 1 of 2 runs: {out}; to run the other 1, repeat the "
        f"command with --resume --out {out} (finished runs are kept)"
    )
    assert leftovers(tmp_path) == []
    assert not (out / "runs" / "closed-form" / "7-1" / "seed0").exists()
    finished = out / "runs" / "closed-form" / "1-7" / "seed0" / "metrics.json"
    stamp = finished.stat().st_mtime_ns
    monkeypatch.setattr(linear_report, "save_figure", draw)
    result = sweep_command(digits_config(*TINY), resume=True, **options)  # type: ignore[arg-type]
    assert [row.failed for row in result.rows] == [False, False]
    assert finished.stat().st_mtime_ns == stamp  # kept, not re-run
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("sets", "plain", "grid"),
    [
        pytest.param(["train.epochs=1,3"], [], [("train.epochs", ("1", "3"))], id="int-list"),
        pytest.param(["train.lr=0.1, 0.01"], [], [("train.lr", ("0.1", "0.01"))], id="spaces"),
        pytest.param(["train.epochs=2"], ["train.epochs=2"], [], id="one-value"),
        pytest.param(
            ["attack.attackers=linear-gd,whiten-gd"],
            ["attack.attackers=linear-gd,whiten-gd"],
            [],
            id="text-key-keeps-its-commas",
        ),
        pytest.param(["data.root=a,b"], ["data.root=a,b"], [], id="optional-text-keeps-its-commas"),
        pytest.param(
            ["method.harmful_step=0.1,0.2", "train.epochs=3"],
            ["train.epochs=3"],
            [("method.harmful_step", ("0.1", "0.2"))],
            id="method-option",
        ),
        pytest.param(["nope.key=1,2"], ["nope.key=1,2"], [], id="unknown-key-left-to-set"),
    ],
)
def test_split_grid(sets, plain, grid):
    base = apply_overrides(default_config("digits"), ["train.method=condnum"])
    assert split_grid(base, sets) == (plain, grid)


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        pytest.param([("seed", ("0", "1"))], "give them with --seeds", id="seed"),
        pytest.param([("data.benign_digit", ("1", "2"))], "with --pairs", id="digit"),
        pytest.param([("train.epochs", ("1", ""))], "lists an empty value", id="empty"),
        pytest.param([("train.epochs", ("1", "1"))], "lists '1' twice", id="repeated"),
        pytest.param([("train.epochs", ("1", "x"))], "train.epochs must be of type int", id="bad"),
        pytest.param(
            [("train.epochs", ("1",)), ("train.epochs", ("2",))],
            "lists 'train.epochs' twice",
            id="key-twice",
        ),
    ],
)
def test_bad_grids_are_refused_before_anything_runs(tmp_path, grid, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        sweep(tmp_path / "out", grid=grid)
    assert not (tmp_path / "out").exists()


def test_a_sweep_over_listed_values_summarizes_each_combination(tmp_path):
    grid = [("train.epochs", ("1", "2")), ("data.per_class", ("20", "30"))]
    rows = sweep(tmp_path / "out", digits_config(*TINY[1:]), pairs=[(1, 7)], grid=grid)
    variants = [r.variant for r in rows]
    assert variants == [
        "train.epochs=1,data.per_class=20",
        "train.epochs=1,data.per_class=30",
        "train.epochs=2,data.per_class=20",
        "train.epochs=2,data.per_class=30",
    ]
    for row in rows:
        saved = yaml.safe_load((Path(row.run_dir) / "config.yaml").read_text())
        epochs, per_class = (int(part.split("=")[1]) for part in row.variant.split(","))
        assert (saved["train"]["epochs"], saved["data"]["per_class"]) == (epochs, per_class)
        assert Path(row.run_dir).parts[-3] == row.variant
    assert len({r.settings for r in rows}) == 1  # the swept keys are the row's variant
    md = (tmp_path / "out" / "sweep.md").read_text()
    assert "| closed-form [train.epochs=2,data.per_class=30] | 1 |" in md
    # one heat map per arm, named without spaces, brackets or `=`
    assert "heatmap_closed-form_train.epochs-2_data.per_class-30.png" in {
        p.name for p in (tmp_path / "out").iterdir()
    }
    assert [line["variant"] for line in read_csv(tmp_path / "out" / "sweep.csv")] == variants
    again = sweep(
        tmp_path / "out", digits_config(*TINY[1:]), pairs=[(1, 7)], grid=grid, resume=True
    )
    assert [r["wall_seconds"] for r in again] == [r["wall_seconds"] for r in rows]
