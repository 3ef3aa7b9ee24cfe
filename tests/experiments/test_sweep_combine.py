"""Sweeps run apart, combined (experiments/sweep_combine.py, `condimmune sweep-table`): the
CSV reads back to the same rows, two halves give the table of the whole, and each bad input
is refused with the file named."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
from _cli_support import invoke

from condimmune.core.errors import UncheckedInputWarning, UserError
from condimmune.experiments.config import ExperimentConfig, apply_overrides, default_config
from condimmune.experiments.pipeline import pipeline_for
from condimmune.experiments.sweep import run_sweep
from condimmune.experiments.sweep_combine import combine_sweeps, read_sweep_csv
from condimmune.experiments.sweep_rows import SweepRow, row_settings
from condimmune.methods.base import ModelFamily


@pytest.fixture(scope="module")
def halves(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[SweepRow]]:
    """Two sweeps of the same digits runs, one per pair, and the rows of one sweep of both."""
    root = tmp_path_factory.mktemp("combine")
    cfg = apply_overrides(default_config("digits"), ["train.epochs=1"])
    assert isinstance(cfg, ExperimentConfig)

    def sweep(out: Path, pairs: list[tuple[int, int]]) -> list[SweepRow]:
        return run_sweep(
            cfg,
            methods=["closed-form"],
            seeds=[0],
            pairs=pairs,
            out_dir=out,
            workers=1,
            progress=False,
        ).rows

    sweep(root / "first", [(1, 7)])
    sweep(root / "second", [(7, 1)])
    both = sweep(root / "both", [(1, 7), (7, 1)])
    return root / "first", root / "second", both


def _without_dirs_and_times(rows: list[SweepRow]) -> list[tuple[object, ...]]:
    # run directories and wall times differ between the sweeps; every number must not
    kept = ("benign", "harmful", "rir", "rir_paper_compatible", "bound", "benign_original")
    kept += ("benign_immunized", "steps_immunized", "immunized")
    return [(r.method, r.seed, *(r[name] for name in kept)) for r in rows]


def test_a_sweep_csv_reads_back_to_its_rows(halves):
    first, _, _ = halves
    rows = read_sweep_csv(first)
    assert rows == read_sweep_csv(first / "sweep.csv")
    (row,) = rows
    assert isinstance(row, SweepRow) and isinstance(row["steps_immunized"], int)
    assert isinstance(row["immunized"], bool) and row.error == ""


def test_two_halves_combine_to_the_table_of_the_whole(halves, tmp_path):
    first, second, both = halves
    rows, _ = combine_sweeps([second, first / "sweep.csv"], tmp_path / "out")
    assert _without_dirs_and_times(rows) == _without_dirs_and_times(both)
    assert read_sweep_csv(tmp_path / "out") == rows
    assert "mean RIR" in (tmp_path / "out" / "sweep.md").read_text()
    assert (tmp_path / "out" / "heatmap_closed-form.png").is_file()


def _rewrite(src: Path, dst: Path, column: str, value: str) -> Path:
    with (src / "sweep.csv").open(newline="") as fh:
        lines = list(csv.DictReader(fh))
    lines[0][column] = value
    with dst.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(lines[0]))
        writer.writeheader()
        writer.writerows(lines)
    return dst


def test_a_run_in_two_sweeps_is_refused(halves, tmp_path):
    first, _, _ = halves
    with pytest.raises(UserError, match=r"also in .*first"):
        combine_sweeps([first, first / "sweep.csv"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "column, value, message",
    [
        ("immunized", "maybe", "line 2, column immunized: expected True or False"),
        ("seed", "", "line 2, column seed"),
        ("rir", "big", "line 2, column rir"),
        ("benign", "12", "line 2: the digit pair 12-7 is not two digits 0-9"),
        ("harmful", "", "line 2: the digit pair 1-None is not two digits 0-9"),
        ("experiment", "cifar", "line 2: unknown experiment 'cifar'"),
        ("bound", "", "line 2: a finished run .no error. without bound"),
        ("benign_immunized", "-inf", "line 2: benign_immunized is -inf, not a finite number"),
        ("rir", "nan", "line 2: rir is nan, not a finite number"),
        ("bound", "-inf", "line 2: bound is -inf, not a finite number"),
    ],
    ids=[
        "bad-bool",
        "missing-required",
        "bad-float",
        "digit-12",
        "no-harmful-digit",
        "unknown-experiment",
        "finished-without-bound",
        "minus-infinite-accuracy",
        "nan-rir",
        "minus-infinite-bound",
    ],
)
def test_a_bad_cell_is_refused_with_its_line(halves, tmp_path, column, value, message):
    bad = _rewrite(halves[0], tmp_path / "bad.csv", column, value)
    with pytest.raises(UserError, match=message) as err:
        read_sweep_csv(bad)
    assert str(bad) in str(err.value)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda line: line + ",extra", "has 24 cells"),
        (lambda line: line.rsplit(",", 3)[0], "has 20 cells"),
    ],
    ids=["extra-cell", "short-row"],
)
def test_a_row_of_the_wrong_length_is_refused(halves, tmp_path, edit, message):
    header, line, *rest = (halves[0] / "sweep.csv").read_text().splitlines()
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join([header, edit(line), *rest]) + "\n")
    with pytest.raises(UserError, match=f"line 2 {message}, a sweep.csv row has 23"):
        read_sweep_csv(bad)


def test_rows_of_every_kind_read_back_unchanged(tmp_path):
    done = {
        "rir": 3.5,
        "rir_paper_compatible": 1e7,
        "harmful_ratio": 2.0,
        "benign_ratio": 0.5,
        "bound": math.inf,  # unbounded (raw pixels)
        "rir_fraction_of_bound": None,
        "benign_metric": "accuracy",
        "benign_original": 0.9,
        "benign_immunized": 0.875,
        "steps_original": 10,
        "steps_immunized": 400,
        "immunized": False,
        "wall_seconds": 1.25,
    }
    pair = {"benign": 1, "harmful": 7}
    failed = dict.fromkeys(done)
    rows = [
        SweepRow("mnist-pair", "condnum", 0, {**pair, **done}, run_dir="r/1-7"),
        SweepRow(
            "mnist-pair", "condnum", 1, {**pair, **failed}, "r/1-7b", error="ValueError: κ, σ"
        ),
    ]
    house = [SweepRow("house-price", "condnum", 0, {"benign": None, "harmful": None, **done}, "h")]
    for name, table in (("digits", rows), ("house", house)):
        (tmp_path / name).mkdir()
        pipeline_for(ModelFamily.LINEAR).write_sweep(tmp_path / name, table, ["condnum"])
        assert read_sweep_csv(tmp_path / name) == table


def test_sweeps_of_different_experiments_are_refused(halves, tmp_path):
    other = _rewrite(halves[1], tmp_path / "other.csv", "experiment", "mnist-pair")
    with pytest.raises(UserError, match="a sweep of mnist-pair, and one of digits in"):
        combine_sweeps([halves[0], other], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_foreign_and_missing_files_are_refused(tmp_path):
    foreign = tmp_path / "other.csv"
    foreign.write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match=r"not a sweep\.csv"):
        read_sweep_csv(foreign)
    with pytest.raises(UserError, match="cannot be read"):
        read_sweep_csv(tmp_path / "missing")
    with pytest.raises(UserError, match="no sweep given"):
        combine_sweeps([], tmp_path / "out")


def test_the_command_prints_the_summary_and_names_a_bad_file(halves, tmp_path):
    first, second, _ = halves
    result = invoke("sweep-table", str(first), str(second), "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    # the printed table wraps at the test terminal's 80 columns; sweep.md has every cell
    assert "2 runs from 2 sweeps" in result.output and "sweep.md" in result.output
    assert "| closed-form | 2 |" in (tmp_path / "out" / "sweep.md").read_text()
    bad = invoke("sweep-table", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out2"))
    assert bad.exit_code == 2 and "nowhere" in bad.output


@pytest.mark.parametrize(
    "column, message",
    [
        pytest.param("settings", "made with other settings than those of", id="other-config"),
        pytest.param("method_settings", "closed-form runs were made with other options", id="λ"),
    ],
)
def test_sweeps_with_other_settings_are_refused(halves, tmp_path, column, message):
    other = _rewrite(halves[1], tmp_path / "other.csv", column, "0123456789abcdef")
    with pytest.raises(UserError, match=message) as err:
        combine_sweeps([halves[0], other], tmp_path / "out")
    assert str(other) in str(err.value) and str(halves[0]) in str(err.value)
    assert not (tmp_path / "out").exists()


def test_the_settings_fingerprint_is_what_the_numbers_depend_on(halves, tmp_path):
    """Sweeps of other pairs share it; one more epoch, or another λ, does not."""
    (first,), (second,) = read_sweep_csv(halves[0]), read_sweep_csv(halves[1])
    assert first.settings == second.settings and len(first.settings) == 16
    assert first.method_settings == second.method_settings
    base = default_config("digits")
    cfg = apply_overrides(base, ["train.epochs=1"])
    more = apply_overrides(base, ["train.epochs=2"])
    where = apply_overrides(base, ["train.epochs=1", "threads=1"])
    assert row_settings(cfg) == row_settings(where)  # how fast, not what
    assert row_settings(cfg)["settings"] != row_settings(more)["settings"]
    condnum = apply_overrides(cfg, ["train.method=condnum"])
    heavier = apply_overrides(condnum, ["method.harmful_step=0.5"])
    assert row_settings(condnum)["settings"] == row_settings(cfg)["settings"]
    assert row_settings(condnum)["method_settings"] != row_settings(heavier)["method_settings"]


def _legacy(src: Path, dst: Path) -> Path:
    """``src``'s sweep.csv as written before the settings columns existed."""
    with (src / "sweep.csv").open(newline="") as fh:
        lines = list(csv.DictReader(fh))
    names = [n for n in lines[0] if n not in ("variant", "settings", "method_settings")]
    with dst.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=names, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(lines)
    return dst


def test_a_sweep_csv_without_settings_is_read_with_a_warning(halves, tmp_path):
    old = _legacy(halves[0], tmp_path / "old.csv")
    with pytest.warns(UncheckedInputWarning, match=r"old\.csv: written before sweep\.csv"):
        (row,) = read_sweep_csv(old)
    assert (row.settings, row.method_settings) == ("", "")
    assert row.values == read_sweep_csv(halves[0])[0].values
    other = _legacy(halves[1], tmp_path / "other.csv")
    with pytest.warns(UncheckedInputWarning):
        rows, _ = combine_sweeps([old, other], tmp_path / "both")
    assert len(rows) == 2
    with pytest.warns(UncheckedInputWarning), pytest.raises(UserError, match="only one of it"):
        combine_sweeps([halves[1], old], tmp_path / "mixed")
