"""``condimmune attack`` on deep runs, the erasure methods end to end, ``attack-matrix``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import optuna
import pytest
import torch
import torch.nn.functional as F
from _cli_support import QUICK_ATTACK, TINY_DEEP, invoke, reseal, sets
from safetensors.torch import load_file, save_file

from condimmune.attacks.registry import DeepAttacker
from condimmune.deep.backbones import build_model
from condimmune.deep.evaluate import extract_features
from condimmune.experiments.config import apply_overrides, default_config
from condimmune.experiments.pipeline import resolve_plan
from condimmune.experiments.pipelines.deep.data import load_deep_data


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two tiny deep runs, the erasure arm and the combined method, each attacked once."""
    root = tmp_path_factory.mktemp("deep-attack")
    out: dict[str, Path] = {}
    for method in ("leace", "condnum-leace"):
        run = root / "runs" / method
        result = invoke(
            "run", "mnist-cnn", "--out", run, "--no-progress",
            *sets([*TINY_DEEP, f"train.method={method}"]),
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        few = [] if method == "leace" else ["--attackers", "linear-gd,blocks-adam"]
        result = invoke("attack", run, "--no-progress", *few, *sets(QUICK_ATTACK))
        assert result.exit_code == 0, result.output
        assert "worst case:" in result.output and "utility:" in result.output
        out[method] = run
    return out


def test_a_deep_run_is_attacked_by_every_attacker_and_recorded(runs):
    run = runs["leace"]
    metrics = json.loads((run / "metrics.json").read_text())
    suite = metrics["attack_suite"]
    assert len(suite["attackers"]) == len(DeepAttacker) and suite["settings"]["trials"] == 2
    assert suite["worst_case"]["attacker"] in suite["attackers"]
    assert suite["settings"]["storage"].startswith("sqlite:///")
    assert (run / "attack_studies.db").is_file()
    for name in ("attack_report.md", "attack_best_so_far.png", "attack_slowdowns.png"):
        assert (run / name).is_file(), name
    report = (run / "attack_report.md").read_text()
    assert "**Verdict for `leace`" in report and "| blocks-reinit | blocks |" in report
    assert "Worst-case attack suite" in (run / "report.md").read_text()
    # the yardstick: every attacker's cost on both models, the weight-free ones included
    stick = suite["yardstick"]
    assert {c["attacker"] for c in stick["original"]} == set(suite["attackers"])
    assert stick["cheapest_weight_free"]["attacker"] in ("raw-lstsq", "raw-adam", "scratch-adam")
    assert "**Yardstick (one target, one cost currency).**" in report


def _stored_trials(run: Path) -> int:
    storage = f"sqlite:///{run / 'attack_studies.db'}"
    return sum(s.n_trials for s in optuna.study.get_all_study_summaries(storage))


def test_a_second_attack_reads_the_stored_trials_back(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs["leace"], run)
    before = json.loads((run / "metrics.json").read_text())["attack_suite"]
    stored = _stored_trials(run)
    result = invoke(
        "attack", run, "--no-progress", "--attackers", "linear-adam,mlp-adam", *sets(QUICK_ATTACK)
    )
    assert result.exit_code == 0, result.output
    assert _stored_trials(run) == stored  # nothing was run again
    after = json.loads((run / "metrics.json").read_text())["attack_suite"]
    # the same settings: the two attackers' results (read back) join the earlier ones
    assert after["attackers"] == before["attackers"]
    assert after["worst_case"] == before["worst_case"]
    assert "yardstick" not in after  # two attackers' costs alone cannot give it


def test_a_second_attack_by_every_attacker_keeps_the_yardstick(runs, tmp_path):
    """An attack re-run over every attacker (e.g. after an attacker was added to the suite)
    reads the stored trials back and keeps the yardstick, which needs every cost."""
    run = tmp_path / "run"
    shutil.copytree(runs["leace"], run)
    before = json.loads((run / "metrics.json").read_text())["attack_suite"]
    stored = _stored_trials(run)
    result = invoke("attack", run, "--no-progress", *sets(QUICK_ATTACK))
    assert result.exit_code == 0, result.output
    assert _stored_trials(run) == stored
    after = json.loads((run / "metrics.json").read_text())["attack_suite"]
    assert after["attackers"] == before["attackers"]
    assert after["yardstick"] == before["yardstick"]
    assert after["wall_seconds"] > before["wall_seconds"]


def _harmful_features(run: Path, which: str) -> tuple[torch.Tensor, torch.Tensor]:
    config = apply_overrides(default_config("mnist-cnn"), TINY_DEEP)
    model = build_model("small-cnn", num_classes=5, image_size=28)
    model.load_state_dict(load_file(run / f"{which}.safetensors"))
    options = resolve_plan(config).options
    data = load_deep_data(options.data, options.model, seed=0)
    phi, _, labels = extract_features(model, data.harmful_train_eval)
    return phi, labels


@pytest.mark.parametrize("method", ["leace", "condnum-leace"])
def test_erasure_leaves_no_linearly_decodable_harmful_label(runs, method):
    """The released model computes in float32: directions below its rounding (relative
    1e-5) are not features, so the least-squares probe ignores them."""
    for which, erased in (("original", False), ("immunized", True)):
        phi, labels = _harmful_features(runs[method], which)
        design = F.pad(phi, (0, 1), value=1.0)
        targets = F.one_hot(labels).double()
        fit = torch.linalg.lstsq(design, targets, rcond=1e-5, driver="gelsd").solution
        pred = design @ fit
        explained = 1 - float((pred - targets).square().sum()) / float(
            (targets - targets.mean(0)).square().sum()
        )
        assert (explained < 1e-4) == erased, (which, explained)


def test_the_combined_method_trains_the_blocks_before_erasing(runs):
    original = load_file(runs["condnum-leace"] / "original.safetensors")
    immunized = load_file(runs["condnum-leace"] / "immunized.safetensors")
    block = "body.block3.0.weight"
    assert not torch.equal(original[block], immunized[block])  # condnum trained block3
    leace = load_file(runs["leace"] / "immunized.safetensors")
    assert torch.equal(load_file(runs["leace"] / "original.safetensors")[block], leace[block])


def test_attack_matrix_combines_the_runs(runs, tmp_path):
    out = tmp_path / "matrix"
    # the fixture attacked condnum-leace with 2 attackers and leace with all: not mixed
    mixed = invoke("attack-matrix", runs["leace"].parent, "--out", out)
    assert mixed.exit_code == 2 and "other attackers" in mixed.output, mixed.output
    assert not out.exists()
    result = invoke("attack-matrix", runs["leace"], "--out", out)
    assert result.exit_code == 0, result.output
    groups = json.loads((out / "attack_matrix.json").read_text())
    assert [g["method"] for g in groups] == ["leace"]
    assert len(groups[0]["slowdown"]) == len(DeepAttacker) and groups[0]["seeds"] == [0]
    text = (out / "attack_matrix.md").read_text()
    assert "| **worst case** |" in text and "**Verdict for `leace`" in text
    assert "| runs (seeds) | 1 (0) |" in text
    # the yardstick's headline, from the run's own record
    stick = json.loads((runs["leace"] / "metrics.json").read_text())["attack_suite"]["yardstick"]
    assert groups[0]["s"]["mean"] == stick["s"] and groups[0]["s"]["n"] == 1
    assert groups[0]["s_max"]["mean"] == stick["s_max"]
    assert "| **S = T*(θ_I) / T*(θ0)** (FLOPs to one target) |" in text
    settled = stick["theta0_settled"]  # with weight_free_steps θ0's side is settled
    assert groups[0]["theta0_extended"] == [len(stick["extended_original"]) if settled else None]
    assert "| attackers stopped short on θ0, per seed |" in text
    assert (out / "attack_matrix.png").is_file() and (out / "attack_matrix_curves.png").is_file()
    again = invoke("attack-matrix", runs["leace"], "--out", out)
    assert again.exit_code == 2 and "already exists" in again.output


def test_deep_attack_errors_are_one_line(runs, tmp_path):
    run = runs["leace"]
    cases = [
        (("attack", run, "--set", "attack.suite_budget=5"), "unknown config key: attack.suite"),
        (("attack", run, "--set", "train.epochs=2"), "only attack.* keys"),
        (("attack", run, "--attackers", "gd"), "unknown attack.attackers entry 'gd'"),
        (("attack", run, "--set", "attack.trials=0"), "attack.trials"),
    ]
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "immunized.safetensors").write_bytes(b"")
    cases.append((("attack", bare), "config.yaml"))
    unattacked = tmp_path / "unattacked"
    shutil.copytree(run, unattacked)
    metrics = json.loads((unattacked / "metrics.json").read_text())
    del metrics["attack_suite"]
    (unattacked / "metrics.json").write_text(json.dumps(metrics))
    broken = {}
    for name in ("linear-config", "linear-metrics", "damaged-model", "foreign-model"):
        broken[name] = tmp_path / name
        shutil.copytree(run, broken[name])
    linear = {"experiment": "digits", "train": {"method": "condnum"}}
    (broken["linear-config"] / "config.yaml").write_text(json.dumps(linear))
    (broken["linear-metrics"] / "metrics.json").write_text(json.dumps({"experiment": "x"}))
    (broken["damaged-model"] / "immunized.safetensors").write_bytes(b"\x00" * 64)
    state = load_file(run / "immunized.safetensors")
    state["body.block3.0.weight"] = state["body.block3.0.weight"][:, :3].contiguous()
    save_file(state, broken["foreign-model"] / "immunized.safetensors")
    for folder in (unattacked, *broken.values()):  # the checks behind the manifest's
        reseal(folder)
    cases += [
        (("attack", broken["linear-config"]), "missing extractor.safetensors"),
        (("attack", broken["linear-metrics"]), "metrics.json"),
        (("attack", broken["damaged-model"]), "immunized.safetensors"),
        (("attack", broken["foreign-model"]), "does not fit the run's model"),
        (("attack-matrix", unattacked, "--out", tmp_path / "m1"), "has no attack_suite"),
        (("attack-matrix", tmp_path / "nowhere", "--out", tmp_path / "m2"), "not a run directory"),
        (("attack-matrix", bare, "--out", tmp_path / "m3"), "no run directory"),
    ]
    for args, message in cases:
        result = invoke(*args, "--no-progress") if args[0] == "attack" else invoke(*args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and "Traceback" not in result.output, result.output
