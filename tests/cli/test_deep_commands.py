"""End-to-end deep runs through the CLI: the offline MNIST CNN experiment, the ImageNet →
Cars / Country211 configs on tiny generated folders, resume after a kill, error paths."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from _helpers import make_folder
from safetensors.torch import load_file
from typer.testing import CliRunner

from condimmune.cli import app

cli = CliRunner()

QUICK_MNIST = [
    "train.pretrain_epochs=1",
    "train.epochs=1",
    "train.batch_size=64",
    "data.train_per_class=40",
    "data.test_per_class=20",
    "eval.groups=3",
    "eval.group_size=64",
    "eval.probe_steps=20",
    "eval.attack_budget=50",
]


def invoke(*args):
    return cli.invoke(app, [str(a) for a in args])


def sets(pairs):
    return [x for p in pairs for x in ("--set", p)]


def test_mnist_cnn_run_directory_contract(tmp_path) -> None:
    out = tmp_path / "run"
    result = invoke("run", "mnist-cnn", "--out", out, "--no-progress", *sets(QUICK_MNIST))
    assert result.exit_code == 0, result.output
    assert "RIR_θ0" in result.output
    names = {p.name for p in out.iterdir()}
    assert {
        "config.yaml",
        "metrics.json",
        "original.safetensors",
        "immunized.safetensors",
        "report.md",
        "attack_curves.png",
        "spectra.png",
        "training.png",
    } <= names
    assert not (tmp_path / "run.checkpoints").exists()  # removed after success
    m = json.loads((out / "metrics.json").read_text())
    for rule in ("honest", "paper_compatible"):
        r = m["rir_theta0"][rule]
        assert r["groups"] == 3 and r["rir_mean"] > 0 and r["rir_std"] >= 0
    assert 0 <= m["benign_accuracy"]["immunized"] <= 1
    assert m["training"]["steps"] == 200 // 64
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["train"]["epochs"] == 1 and "lightning" in cfg["versions"]
    orig, imm = load_file(out / "original.safetensors"), load_file(out / "immunized.safetensors")
    changed = [k for k in orig if not (orig[k] == imm[k]).all()]
    assert changed and all(k.startswith(("body.block3.", "head.")) for k in changed)


@pytest.mark.parametrize("method", ["none", "r-ill-only", "opt-kappa", "imma", "closed-form"])
def test_mnist_cnn_baselines_run(tmp_path, method) -> None:
    out = tmp_path / method
    result = invoke(
        "run",
        "mnist-cnn",
        "--out",
        out,
        "--no-progress",
        *sets([*QUICK_MNIST, f"train.method={method}"]),
    )
    assert result.exit_code == 0, result.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["rir_theta0_paper_protocol"]["honest"]["group_size"] == 100
    if method == "closed-form":  # T⁻¹ folded into the head: benign predictions unchanged
        assert m["benign_accuracy"]["immunized"] == m["benign_accuracy"]["original"]
        assert m["training"]["steps"] == 0


TABLE3 = ["imagenet-cars-resnet18", "imagenet-country211-vit"]


@pytest.mark.slow
@pytest.mark.parametrize("experiment", TABLE3)
def test_table3_configs_run_end_to_end_on_tiny_folders(tmp_path, experiment) -> None:
    imagenet = make_folder(
        tmp_path / "imagenet", ("train", "val"), classes=("n1", "n2", "n3"), per_class=4, size=40
    )
    harmful_splits = ("train", "test") if "cars" in experiment else ("train", "valid", "test")
    harmful = make_folder(
        tmp_path / "harm", harmful_splits, classes=("x", "y"), per_class=6, size=40
    )
    out = tmp_path / "run"
    result = invoke(
        "run",
        experiment,
        "--out",
        out,
        "--no-progress",
        *sets(
            [
                f"data.root={imagenet}",
                f"data.harmful_root={harmful}",
                "model.image_size=32",
                "train.batch_size=4",
                "train.epochs=1",
                "eval.groups=2",
                "eval.group_size=6",
                "eval.probe_steps=5",
                "eval.attack_budget=20",
            ]
        ),
    )
    assert result.exit_code == 0, result.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["feature_dim"] == (512 if "resnet" in experiment else 768)
    assert m["training"]["steps"] == 3 and m["training"]["rank_deficient_steps"] == 3


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["imagenet-cars-resnet18"], "data.root is not set"),
        (["imagenet-cars-vit", "--set", "data.root=/nonexistent"], "no such directory"),
        (["mnist-cnn", "--set", "model.weights=/nonexistent.safetensors"], "nothing is downloaded"),
        (["mnist-cnn", "--set", "train.method=nope"], "train.method"),
        (["mnist-cnn", "--set", "train.batch_size=63", "--set", "train.devices=2"], "divisible"),
        (
            ["mnist-cnn", "--set", "data.benign_digits=0123", "--set", "data.harmful_digits=3456"],
            "overlap",
        ),
    ],
    ids=[
        "no-root",
        "missing-root",
        "missing-weights",
        "bad-method",
        "indivisible-batch",
        "overlap",
    ],
)
def test_user_errors_are_one_line(tmp_path, args, match) -> None:
    result = invoke("run", *args, "--out", tmp_path / "x", "--no-progress")
    assert result.exit_code == 2, result.output
    assert match in " ".join(result.output.split())
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_resume_after_sigkill_continues_from_the_checkpoint(tmp_path) -> None:
    out = tmp_path / "run"
    ckpt = tmp_path / "run.checkpoints" / "checkpoint.safetensors"
    args = [
        sys.executable,
        "-m",
        "condimmune.cli",
        "run",
        "mnist-cnn",
        "--out",
        str(out),
        "--no-progress",
        *sets([*QUICK_MNIST, "train.epochs=3", "train.checkpoint_every=1"]),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not ckpt.exists():
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists() and not out.exists()
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert m["training"]["steps"] == 3 * (200 // 64)
    assert m["training"]["resumed_from_step"] >= 1


@pytest.mark.slow
def test_default_mnist_cnn_experiment_immunizes_and_keeps_the_benign_task(tmp_path) -> None:
    """The shipped default, measured: a clear RIR_θ0 over random groups, the benign κ not
    raised, the benign accuracy kept, and the paper's GD attacker slowed down."""
    out = tmp_path / "default"
    result = invoke("run", "mnist-cnn", "--out", out, "--no-progress")
    assert result.exit_code == 0, result.output
    m = json.loads((out / "metrics.json").read_text())
    r = m["rir_theta0"]["honest"]
    assert r["rir_mean"] > 3.0
    assert r["benign_ratio_mean"] < 1.0 < r["harmful_ratio_mean"]
    acc = m["benign_accuracy"]
    assert acc["immunized"] >= acc["original"] - 0.03
    assert m["attack"]["gd"]["slowdown"] > 1.5
    assert m["wall_seconds"] < 600


def test_linear_only_commands_refuse_a_deep_run_clearly(tmp_path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "immunized.safetensors").write_bytes(b"")
    for command in ("evaluate", "attack"):
        result = invoke(command, out)
        assert result.exit_code == 2 and "deep run" in result.output
