"""End-to-end tests of the CLI on small budgets, the run-directory contract and error paths."""

import errno
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from _cli_support import invoke
from _data import AMES_DIR as AMES
from _helpers import blas_threads, torch_modules_after
from safetensors.numpy import load_file

import condimmune.experiments.runner as runner_module
from condimmune.experiments.config import apply_overrides, default_config
from condimmune.methods.registry import Method

needs_ames = pytest.mark.needs("ames")


def numpy_kappa(x: np.ndarray) -> float:
    """Independent check: κ of xᵀx over singular values above the numerical-range threshold."""
    s = np.linalg.svd(x, compute_uv=False) ** 2
    keep = s > x.shape[1] * np.finfo(np.float64).eps * s[0]
    return float(s[keep][0] / s[keep][-1])


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "default"
    result = invoke("run", "--out", out, "--set", "train.epochs=2", "--no-progress")
    assert result.exit_code == 0, result.output
    return out, result.output


def test_default_run_writes_the_run_directory_contract(default_run):
    out, output = default_run
    for name in (
        "config.yaml",
        "metrics.json",
        "extractor.safetensors",
        "data.safetensors",
        "report.md",
        "attack_curves.png",
        "spectra.png",
        "training.png",
    ):
        assert (out / name).is_file(), name
    m = json.loads((out / "metrics.json").read_text())
    assert m["experiment"] == "mnist-pair" and m["method"] == "condnum" and m["seed"] == 0
    assert isinstance(m["rir"], float) and isinstance(m["wall_seconds"], float)
    for task in ("benign", "harmful"):
        assert set(m["kappa"][task]) == {"original", "immunized"}
    assert set(m["benign_task"]) >= {"metric", "original", "immunized"}
    assert m["benign_task"]["metric"] == "accuracy"
    assert isinstance(m["attack"]["steps_original"], int)
    assert isinstance(m["attack"]["steps_immunized"], int)
    assert set(m["rir_bound"]) == {"value", "unbounded", "reason"}
    assert "RIR" in output and "κ benign" in output
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["seed"] == 0 and "scipy" in config["versions"]  # a linear run: no torch


def test_every_kappa_and_the_rir_can_be_recomputed_from_the_files(default_run):
    out, _ = default_run
    m = json.loads((out / "metrics.json").read_text())
    weight = load_file(out / "extractor.safetensors")["weight"]
    data = load_file(out / "data.safetensors")
    xp, xh = data["benign_x"], data["harmful_x"]
    assert weight.shape == (xp.shape[1], xp.shape[1])
    kappas = {
        ("benign", "original"): numpy_kappa(xp),
        ("benign", "immunized"): numpy_kappa(xp @ weight.T),
        ("harmful", "original"): numpy_kappa(xh),
        ("harmful", "immunized"): numpy_kappa(xh @ weight.T),
    }
    for (task, which), value in kappas.items():
        assert m["kappa"][task][which] == pytest.approx(value, rel=1e-6)
    rir = (kappas["harmful", "immunized"] / kappas["harmful", "original"]) / (
        kappas["benign", "immunized"] / kappas["benign", "original"]
    )
    assert m["rir"] == pytest.approx(rir, rel=1e-6)


def test_evaluate_recomputes_a_saved_run(default_run):
    out, _ = default_run
    result = invoke("evaluate", out)
    assert result.exit_code == 0, result.output
    assert "match" in result.output


def test_list_shows_experiments_and_methods():
    result = invoke("list")
    assert result.exit_code == 0
    for name in [*(m.value for m in Method), "mnist-pair", "house-price", "digits"]:
        assert name in result.output


@pytest.mark.needs("ames", "ames-reference-splits")
def test_house_price_split_matches_the_reference_files():
    from condimmune.experiments.pipeline import resolve_plan
    from condimmune.linear.data import load_task_data

    sets = [f"data.root={AMES / 'train.csv'}", "data.drop_collinear=false"]
    options = resolve_plan(apply_overrides(default_config("house-price"), sets)).options
    data = load_task_data(options.source, options.data, seed=0)
    for name, ref_file, target in (
        ("benign", "D1.csv", "LotArea"),
        ("harmful", "D2.csv", "SalePrice"),
    ):
        ref = pd.read_csv(AMES / ref_file)[target].to_numpy(dtype=float)[:200]
        expected = (ref - ref.mean()) / ref.std()
        got = getattr(data, name).y_train
        np.testing.assert_allclose(got, expected, rtol=1e-9)
    assert data.dim == 77  # 81 columns − Id − 2 targets − 1 constant (Utilities)


@needs_ames
def test_house_price_end_to_end(tmp_path):
    out = tmp_path / "house"
    result = invoke(
        "run",
        "house-price",
        "--out",
        out,
        "--no-progress",
        "--set",
        f"data.root={AMES / 'train.csv'}",
        "--set",
        "train.epochs=3",
    )
    assert result.exit_code == 0, result.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["benign_task"]["metric"] == "mse"
    assert m["rir_bound"]["unbounded"] is False  # drop_collinear is the default


@pytest.mark.parametrize("method", ["none", "r-ill-only", "opt-kappa", "imma", "closed-form"])
def test_every_method_runs_on_digits(method, tmp_path):
    out = tmp_path / method
    result = invoke(
        "run",
        "digits",
        "--out",
        out,
        "--no-progress",
        "--set",
        "train.epochs=2",
        "--set",
        f"train.method={method}",
    )
    assert result.exit_code == 0, result.output
    m = json.loads((out / "metrics.json").read_text())
    if method == "closed-form":
        assert m["rir_fraction_of_bound"] == pytest.approx(1.0, rel=1e-6)
    if method == "none":
        assert m["rir"] == pytest.approx(1.0)


def test_sweep_writes_one_table_and_heat_maps(tmp_path):
    out = tmp_path / "sweep"
    result = invoke(
        "sweep",
        "digits",
        "--out",
        out,
        "--methods",
        "none,closed-form",
        "--pairs",
        "1-7,7-1",
        "--workers",
        "2",
        "--no-progress",
        "--set",
        "train.epochs=1",
    )
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(out / "sweep.csv")
    assert len(rows) == 4
    assert set(rows["method"]) == {"none", "closed-form"}
    assert (out / "heatmap_closed-form.png").is_file()
    assert "mean RIR" in (out / "sweep.md").read_text()


def _bad_csv(tmp_path: Path, mutate) -> Path:
    df = pd.read_csv(AMES / "train.csv")
    mutate(df)
    path = tmp_path / "train.csv"
    df.to_csv(path, index=False)
    return path


ERRORS = {
    "unknown-experiment": (["run", "mnist"], "unknown experiment 'mnist'"),
    "unknown-method": (["run", "--set", "train.method=magic"], "unknown train.method 'magic'"),
    "unknown-key": (["run", "--set", "train.speed=3"], "unknown config key: train.speed"),
    "bad-type": (["run", "--set", "train.epochs=abc"], "train.epochs must be of type int"),
    "wrong-digit": (["run", "--set", "data.benign_digit=12"], "must be a digit 0–9"),
    "same-digits": (["run", "--set", "data.harmful_digit=1"], "choose two different digits"),
    "missing-house-data": (
        ["run", "house-price"],
        "house prices need the Ames data: set data.root",
    ),
    "missing-mnist-root": (["run", "--set", "data.root=/nonexistent/mnist"], "no such directory"),
    "house-root-missing-file": (
        ["run", "house-price", "--set", "data.root=/nonexistent/t.csv"],
        "no such file",
    ),
    "set-without-equals": (["run", "--set", "train.epochs"], "expects key=value"),
    "bad-pairs": (["sweep", "--pairs", "1-1"], "two different digits"),
}


@pytest.mark.parametrize("args, message", ERRORS.values(), ids=ERRORS.keys())
def test_errors_are_one_line_without_traceback(args, message, tmp_path):
    result = invoke(*args, "--out", tmp_path / "out", "--no-progress")
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "metrics.json").exists()


def _nan_sale_price(df: pd.DataFrame) -> None:
    df.loc[df.index[df.MSZoning == "RL"][3], "SalePrice"] = np.nan


def _constant_lot_area(df: pd.DataFrame) -> None:
    df["LotArea"] = 1000


@needs_ames
@pytest.mark.parametrize(
    "mutate, message",
    [
        (_nan_sale_price, "target column SalePrice has 1 missing"),
        (_constant_lot_area, "target column LotArea is constant"),
    ],
    ids=["nan-in-target", "constant-target"],
)
def test_bad_house_csv_is_refused(mutate, message, tmp_path):
    path = _bad_csv(tmp_path, mutate)
    result = invoke(
        "run",
        "house-price",
        "--out",
        tmp_path / "out",
        "--no-progress",
        "--set",
        f"data.root={path}",
    )
    assert result.exit_code == 2, result.output
    assert message in result.output


@needs_ames
def test_constant_feature_column_is_dropped_and_reported(tmp_path):
    path = _bad_csv(tmp_path, lambda df: df.__setitem__("PoolArea", 0))
    out = tmp_path / "out"
    result = invoke(
        "run",
        "house-price",
        "--out",
        out,
        "--no-progress",
        "--set",
        f"data.root={path}",
        "--set",
        "train.epochs=1",
    )
    assert result.exit_code == 0, result.output
    notes = json.loads((out / "metrics.json").read_text())["notes"]
    assert any("PoolArea" in n for n in notes)


def test_existing_output_directory_is_refused(default_run):
    out, _ = default_run
    result = invoke("run", "--out", out, "--no-progress")
    assert result.exit_code == 2
    assert "already exists (--out is a new directory that the command creates)" in result.output


def test_failed_run_leaves_no_partial_directory(tmp_path, monkeypatch):
    calls = []

    def boom(directory, *_args, **_kwargs):
        calls.append(Path(directory))
        (Path(directory) / "half-written.md").write_text("partial")  # fail mid-write
        raise OSError(errno.ENOSPC, "disk full", str(directory))

    # the writer is patched where the runner looks it up, whether it imports it at module
    # level or lazily from condimmune.experiments.report
    monkeypatch.setattr("condimmune.experiments.report.write_page", boom)
    monkeypatch.setattr(runner_module, "write_page", boom, raising=False)
    out = tmp_path / "run"
    result = invoke("run", "digits", "--out", out, "--no-progress", "--set", "train.epochs=1")
    assert len(calls) == 1, "the patched report writer was not the one that failed"
    assert result.exit_code == 2 and "disk full" in result.output
    assert calls[0] != out  # it wrote into a temporary directory, not into --out
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # the temporary directory is gone too


def test_yaml_config_rejects_unknown_keys(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("experiment: digits\ntrain:\n  epochs: 2\n  warmup: 3\n")
    result = invoke("run", "--config", path, "--out", tmp_path / "o", "--no-progress")
    assert result.exit_code == 2
    assert "unknown config key: train.warmup" in result.output and str(path) in result.output


def _write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    import gzip
    import struct

    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += b"".join(struct.pack(">I", n) for n in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as fh:
            fh.write(payload)
    else:
        path.write_bytes(payload)


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_mnist_from_local_idx_files(gz, tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 30)
    images = rng.integers(0, 256, size=(300, 28, 28))
    root = tmp_path / "mnist"
    root.mkdir()
    _write_idx(root / "train-images-idx3-ubyte", images, gz)
    _write_idx(root / "train-labels-idx1-ubyte", labels, gz)
    out = tmp_path / "run"
    result = invoke(
        "run",
        "--out",
        out,
        "--no-progress",
        "--set",
        f"data.root={root}",
        "--set",
        "data.per_class=10",
        "--set",
        "data.test_per_class=5",
        "--set",
        "train.epochs=1",
    )
    assert result.exit_code == 0, result.output
    assert "MNIST IDX at" in (out / "report.md").read_text()


def test_malformed_idx_file_is_refused(tmp_path):
    root = tmp_path / "mnist"
    root.mkdir()
    (root / "train-images-idx3-ubyte").write_bytes(b"not an idx file")
    (root / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x01\x07")
    result = invoke("run", "--out", tmp_path / "o", "--no-progress", "--set", f"data.root={root}")
    assert result.exit_code == 2
    assert "bad magic number" in result.output


def test_sweep_reports_failed_runs_and_resumes(tmp_path):
    out = tmp_path / "sweep"
    args = [
        "sweep",
        "digits",
        "--out",
        out,
        "--methods",
        "closed-form",
        "--pairs",
        "1-7,8-1",
        "--workers",
        "1",
        "--no-progress",
        "--set",
        "data.per_class=140",
        "--set",
        "data.test_per_class=38",
        "--set",
        "train.epochs=1",
    ]
    result = invoke(*args)
    assert result.exit_code == 1  # digit 8 has only 174 images: that run fails
    assert "1 of 2 runs failed" in result.output and "digit 8 has 174 images" in result.output
    rows = pd.read_csv(out / "sweep.csv", dtype={"error": str}, keep_default_na=False)
    assert sorted(bool(e) for e in rows["error"]) == [False, True]
    assert "failed: ConfigError: digit 8" in (out / "sweep.md").read_text()
    finished = out / "runs" / "closed-form" / "1-7" / "seed0" / "metrics.json"
    stamp = finished.stat().st_mtime_ns
    assert invoke(*args).exit_code == 2  # a non-empty --out needs --resume
    again = invoke(*args, "--resume")
    assert again.exit_code == 1
    assert finished.stat().st_mtime_ns == stamp  # reused, not re-run


def test_attack_command_adds_the_suite_to_the_run(default_run):
    out, _ = default_run
    result = invoke(
        "attack",
        out,
        "--attackers",
        "linear-gd,linear-lstsq,whiten-gd",
        "--set",
        "attack.suite_budget=50",
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["attacks"]) == {"linear-gd", "linear-lstsq", "whiten-gd"}
    for entry in m["attacks"].values():
        for key in ("harmful_slowdown", "benign_slowdown", "harmful_best", "benign_best"):
            assert isinstance(entry[key], float)
    assert m["attacks"]["linear-lstsq"]["harmful_slowdown"] == 1.0
    assert m["attack_worst_case"]["harmful_slowdown"] == 1.0
    assert m["attack_worst_case_first_order"]["attacker_original"] == "linear-gd"  # no lstsq
    assert "rir" in m  # the original metrics are kept
    for name in ("attack_report.md", "attacks_harmful.png", "attacks_benign.png"):
        assert (out / name).is_file()
    report = (out / "report.md").read_text()
    assert report.count("## Attack suite") == 1 and "| linear-lstsq |" in report
    # another attacker under the same settings is added; the worst cases cover all four
    more = ("--attackers", "linear-adam", "--set", "attack.suite_budget=50", "--no-progress")
    assert invoke("attack", out, *more).exit_code == 0
    merged = json.loads((out / "metrics.json").read_text())
    assert set(merged["attacks"]) == {"linear-gd", "linear-lstsq", "whiten-gd", "linear-adam"}
    assert merged["attacks"]["linear-gd"] == m["attacks"]["linear-gd"]
    assert merged["attack_worst_case"]["harmful_slowdown"] == 1.0  # still lstsq's
    steps = {n: e["harmful_steps_original"] or 51 for n, e in merged["attacks"].items()}
    first_order = merged["attack_worst_case_first_order"]
    assert first_order["steps_original"] == min(steps[n] for n in ("linear-gd", "linear-adam"))
    report = (out / "report.md").read_text()
    assert "| linear-lstsq |" in report and "| linear-adam |" in report
    # other settings: the earlier results are replaced, and the command says so
    other = invoke(
        "attack", out, "--attackers", "linear-gd", "--set", "attack.suite_budget=5",
        "--no-progress",
    )  # fmt: skip
    assert other.exit_code == 0, other.output
    assert "replaced the results of linear-adam, linear-lstsq, whiten-gd" in other.output
    # 5 steps reach no target: the printed table says so as the report does, never "—"
    gd = json.loads((out / "metrics.json").read_text())["attacks"]["linear-gd"]
    assert gd["harmful_steps_immunized"] is None
    assert "> 5" in other.output and "≥" in other.output and "—" not in other.output
    assert set(json.loads((out / "metrics.json").read_text())["attacks"]) == {"linear-gd"}
    report = (out / "report.md").read_text()
    assert report.count("## Attack suite") == 1 and "| linear-lstsq |" not in report  # replaced
    assert not list(out.glob(".*.tmp*"))


def test_attack_command_errors(default_run, tmp_path):
    out, _ = default_run
    bad = invoke("attack", out, "--attackers", "linear-gd,magic", "--no-progress")
    assert bad.exit_code == 2 and "unknown attack.attackers entry 'magic'" in bad.output
    missing = invoke("attack", tmp_path, "--no-progress")
    assert missing.exit_code == 2 and "not a complete run directory" in missing.output


@pytest.mark.parametrize(
    ("option", "expected"),
    [([], 1), (["--threads", "2"], 2), (["--set", "threads=0"], None)],
    ids=["linear-default-one", "option", "zero-keeps-the-default"],
)
def test_threads_come_from_the_option_or_the_config(option, expected, tmp_path):
    """A linear run's threads are numpy's BLAS threads (it never imports torch): set by the
    CLI, recorded in config.yaml's versions."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=3, user_api="blas"):  # a value no case sets
        result = invoke(
            "run", "digits", "--out", tmp_path / "r", "--set", "train.epochs=1",
            "--no-progress", *option,
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        after = blas_threads()
    config = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert config["threads"] == (0 if expected is None else expected)
    assert after == (3 if expected is None else expected)
    assert config["versions"]["blas_threads"] == after
    assert "torch_threads" not in config["versions"]


_ONE_EPOCH = ["--set", "train.epochs=1"]
_RAW_PIXELS = ["--set", "data.pca_components=0", "--set", "data.per_class=40"]
TORCH_FREE = {
    "default": [["run", "--no-progress"]],
    **{
        method: [["run", "digits", "--set", f"train.method={method}", *_ONE_EPOCH]]
        for method in ("imma", "opt-kappa", "closed-form", "leace", "r-ill-only")
    },
    "raw-pixels": [["run", "mnist-pair", *_RAW_PIXELS, *_ONE_EPOCH]],
    "sweep": [["sweep", "digits", "--methods", "condnum,none", "--pairs", "1-7", *_ONE_EPOCH]],
}
"""Commands (each followed by ``--out DIR``) that a linear experiment runs without torch;
a ``run`` is followed by ``evaluate DIR``."""


@pytest.mark.parametrize("commands", TORCH_FREE.values(), ids=TORCH_FREE.keys())
def test_a_linear_run_and_its_evaluation_never_import_torch(commands, tmp_path):
    """Issue #30: a linear run (data, training, metrics, files, report), `evaluate` of it and
    a linear sweep run on numpy and scipy alone; only `attack` (torch's optimizers) imports
    torch."""
    out = tmp_path / "r"
    calls = [[*c, "--out", str(out)] for c in commands]
    calls += [["evaluate", str(out)] for c in commands if c[0] == "run"]
    code = (
        "import json, sys; from typer.testing import CliRunner; from condimmune.cli import app\n"
        "for args in json.loads(sys.argv[1]):\n"
        "    r = CliRunner().invoke(app, args)\n"
        "    assert r.exit_code == 0, r.output\n"
    )
    assert torch_modules_after(code, json.dumps(calls), cwd=tmp_path) == []
    assert (out / ("sweep.csv" if commands[0][0] == "sweep" else "metrics.json")).is_file()


def test_help_does_not_import_torch():
    code = (
        "from typer.testing import CliRunner; from condimmune.cli import app; "
        "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output"
    )
    assert torch_modules_after(code) == []


def test_a_long_cell_folds_at_80_columns_instead_of_being_cut(monkeypatch):
    """A sweep arm's name carries its swept values; on a narrow terminal it must stay whole
    (and its brackets must not be read as rich markup, which dropped them)."""
    import io

    from rich.console import Console

    import condimmune.cli as cli

    out = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=out, width=80))
    arm = "condnum [train.epochs=2,data.per_class=30,method.harmful_step=0.25,seed=3]"
    numbers = ["64.36", "0.95", "392", "2,521", "6.43", "1.3e+04"]
    cli._table(
        "summary", ["arm", "rir", "acc", "steps", "steps_i", "slow", "bound"], [[arm, *numbers]]
    )
    lines = [line for line in out.getvalue().splitlines() if line.startswith("│")]
    first_column = "".join(line.split("│")[1].strip() for line in lines)  # the header has ┃
    assert first_column == arm.replace(" ", "")  # wrapped at the space, folded after it
    assert "…" not in out.getvalue()
    assert all(n in out.getvalue() for n in numbers)


@pytest.mark.slow
def test_evaluate_recomputes_on_the_threads_the_run_was_made_with(tmp_path):
    """A raw-pixel run's κ's sit at the rank cut-off: recomputed by a BLAS on more threads
    (another summation order) they moved past the comparison's tolerance."""
    from threadpoolctl import threadpool_limits

    out = tmp_path / "r"
    raw = ["--set", "data.pca_components=0", "--set", "train.epochs=1"]
    result = invoke("run", "mnist-pair", *raw, "--out", out, "--no-progress")
    assert result.exit_code == 0, result.output
    with threadpool_limits(limits=2, user_api="blas"):  # the run recorded threads: 1
        result = invoke("evaluate", out)
    assert result.exit_code == 0, result.output
