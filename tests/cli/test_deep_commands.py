"""End-to-end deep runs through the CLI: the offline MNIST CNN experiment, the ImageNet →
Cars / Country211 configs on tiny generated folders, resume after a kill, error paths."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from _cli_support import TINY_DEEP, invoke, reseal, sets
from _helpers import make_folder
from safetensors.torch import load_file

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
    for block, (groups, size) in (
        ("rir_theta0", (3, 64)),
        ("rir_theta0_paper_protocol", (20, 100)),
    ):
        for rule in ("honest", "paper_compatible"):
            r = m[block][rule]
            assert (r["groups"], r["group_size"]) == (groups, size)
            # each group's RIR is exp(its log RIR): by Jensen the mean of the RIRs is at least
            # exp(mean log RIR), whatever the data (1e-12: rounding of the two means only)
            assert r["rir_mean"] >= math.exp(r["log_rir_mean"]) * (1 - 1e-12)
            assert r["rir_std"] >= 0
    # top-1 over the 5 × 20 held-out benign images: a multiple of 1/100
    for which in ("original", "immunized"):
        correct = m["benign_accuracy"][which] * 100
        assert correct == pytest.approx(round(correct), abs=1e-9) and 0 <= correct <= 100
    assert m["training"]["steps"] == 200 // 64
    assert m["wall_seconds"] >= m["train_seconds"] >= 0
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["train"]["epochs"] == 1 and "lightning" in cfg["versions"]
    orig, imm = load_file(out / "original.safetensors"), load_file(out / "immunized.safetensors")
    changed = [k for k in orig if not (orig[k] == imm[k]).all()]
    assert changed and all(k.startswith(("body.block3.", "head.")) for k in changed)
    assert "guard_rollbacks" not in json.loads((out / "metrics.json").read_text())["training"]


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


def test_full_depth_trains_every_block_on_harmful_images_the_attacks_never_read(tmp_path) -> None:
    out = tmp_path / "full-depth"
    extra = ["train.method=full-depth", "data.defence_per_class=4", "method.simulate_every=1"]
    result = invoke("run", "mnist-cnn", "--out", out, "--no-progress", *sets([*TINY_DEEP, *extra]))
    assert result.exit_code == 0, result.output
    orig, imm = load_file(out / "original.safetensors"), load_file(out / "immunized.safetensors")
    changed = {k for k in orig if not (orig[k] == imm[k]).all()}
    assert {"body.block1.0.weight", "body.block2.0.weight", "body.block3.0.weight"} <= changed
    m = json.loads((out / "metrics.json").read_text())
    assert m["training"]["steps"] == 40 // 16 and m["training"]["guard_rollbacks"] >= 0
    assert m["training"]["last_tap_error"] >= 0.0


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["model.cache_prefix=true"], "model.cache_prefix is on"),
        (["data.defence_per_class=490"], "data.defence_per_class"),
    ],
    ids=["prefix-cache", "too-few-images"],
)
def test_full_depth_refusals_name_the_key(tmp_path, extra, match) -> None:
    args = sets([*TINY_DEEP, "train.method=full-depth", *extra])
    result = invoke("run", "mnist-cnn", "--out", tmp_path / "x", "--no-progress", *args)
    assert result.exit_code == 2, result.output
    assert match in " ".join(result.output.split())
    assert not (tmp_path / "x").exists()


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
    total = 3 * (200 // 64)
    assert m["training"]["steps"] == total
    # killed after the first checkpoint (≥ 1 step) and before the run directory existed
    assert 1 <= m["training"]["resumed_from_step"] <= total
    assert not ckpt.parent.exists()  # removed after success
    # the same command never interrupted (same process setup, one thread): the resumed run
    # continued the very same trajectory, so both runs end with the same weights
    control = tmp_path / "uninterrupted"
    args[args.index(str(out))] = str(control)
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    straight_training = json.loads((control / "metrics.json").read_text())["training"]
    assert straight_training["resumed_from_step"] is None
    # θ0 came back from its checkpoint with the losses of its pre-training
    assert m["training"]["pretrain_steps"] == straight_training["pretrain_steps"] > 0
    for name in ("original.safetensors", "immunized.safetensors"):
        resumed, straight = load_file(out / name), load_file(control / name)
        assert resumed.keys() == straight.keys()
        for key in resumed:
            torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=0, msg=key)


@pytest.mark.slow
def test_default_mnist_cnn_experiment_immunizes_relative_to_the_none_control(tmp_path) -> None:
    """The shipped default against its control: the same command with ``train.method=none``
    (same seed, θ0, data, groups and budget; task loss only). Every comparison is between
    the two runs or follows from the definitions; no number is fitted to a measurement."""
    runs, outs = {}, {}
    for method in ("condnum", "none"):
        outs[method] = tmp_path / method
        result = invoke(
            "run",
            "mnist-cnn",
            "--out",
            outs[method],
            "--no-progress",
            "--set",
            f"train.method={method}",
        )
        assert result.exit_code == 0, result.output
        runs[method] = json.loads((outs[method] / "metrics.json").read_text())
    imm, ctl = runs["condnum"], runs["none"]
    # the same seed pre-trains the same θ0 whatever the method
    theta0 = [load_file(outs[m] / "original.safetensors") for m in ("condnum", "none")]
    assert theta0[0].keys() == theta0[1].keys()
    assert all(torch.equal(theta0[0][k], theta0[1][k]) for k in theta0[0])
    assert imm["benign_accuracy"]["original"] == ctl["benign_accuracy"]["original"]
    for rule in ("honest", "paper_compatible"):
        r, c = imm["rir_theta0"][rule], ctl["rir_theta0"][rule]
        # immunization: more relative ill-conditioning than training on the task alone
        assert r["rir_mean"] > c["rir_mean"] and r["log_rir_mean"] > c["log_rir_mean"]
        assert r["harmful_ratio_mean"] > c["harmful_ratio_mean"]
    # Def. 3.1 (b): the benign κ is not raised above θ0's
    assert imm["rir_theta0"]["honest"]["benign_ratio_mean"] <= 1.0
    # the paper's attacker (GD, step 1/L) needs more steps than against the control
    assert imm["attack"]["gd"]["slowdown"] > ctl["attack"]["gd"]["slowdown"]
    # Def. 3.1 (c), benign task kept: above chance (5 classes), and — our reading of "≈" —
    # at least half of θ0's accuracy above chance is retained
    chance = 1 / 5
    acc = imm["benign_accuracy"]
    assert acc["immunized"] - chance >= (acc["original"] - chance) / 2
    assert imm["wall_seconds"] >= imm["train_seconds"] >= 0


@pytest.mark.parametrize(
    "extra", [[], ["model.cache_prefix=true"]], ids=["images", "cached-prefix"]
)
def test_evaluate_recomputes_a_deep_run_from_its_files(tmp_path, extra) -> None:
    out = tmp_path / "run"
    args = ["run", "mnist-cnn", "--out", out, "--no-progress", *sets(TINY_DEEP + extra)]
    args += ["--set", f"model.cache_dir={tmp_path / 'cache'}"]
    assert invoke(*args).exit_code == 0
    result = invoke("evaluate", out)
    assert result.exit_code == 0, result.output
    assert "recomputed metrics match metrics.json" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    metrics["rir_theta0"]["honest"]["rir_mean"] *= 2  # a saved number that the files refute
    (out / "metrics.json").write_text(json.dumps(metrics))
    result = invoke("evaluate", out)
    assert result.exit_code == 2 and "metrics.json" in result.output  # the manifest's check
    reseal(out)  # the same change, sealed: the recomputation behind the manifest refutes it
    result = invoke("evaluate", out)
    assert result.exit_code == 1 and "rir_theta0.honest.rir_mean" in result.output
