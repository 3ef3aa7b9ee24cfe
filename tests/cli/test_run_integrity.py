"""Files bound to their run (issue 26 §1): a run directory's manifest (linear and deep runs)
refuses files swapped in from another run, edited after the run, missing or unlisted, with
exit code 2, an error naming the file, and nothing at the run's path changed; ``attack``
replaces its files all at once, so a process killed at any point leaves a directory whose
files belong together."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from _cli_support import TINY_DEEP, TINY_LINEAR, error_line, invoke, sets, snapshot

from condimmune.experiments.manifest import MANIFEST, stage_update

ATTACK = ("--attackers", "linear-gd", "--set", "attack.suite_budget=5", "--no-progress")


@pytest.fixture(scope="module")
def other_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run of another digit pair (3-8), whose files are swapped into tiny_run."""
    out = tmp_path_factory.mktemp("other") / "run"
    result = invoke(
        "run",
        "digits",
        "--out",
        out,
        "--no-progress",
        *sets([*TINY_LINEAR, "data.benign_digit=3", "data.harmful_digit=8"]),
    )
    assert result.exit_code == 0, result.output
    return out


def swap(name: str) -> Callable[[Path, Path], None]:
    def change(run: Path, other: Path) -> None:
        shutil.copyfile(other / name, run / name)

    return change


def edit_config_digit(run: Path, other: Path) -> None:
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["data"]["harmful_digit"] = 8
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def edit_manifest(change: Callable[[dict], object]) -> Callable[[Path, Path], None]:
    def edit(run: Path, other: Path) -> None:
        document = json.loads((run / MANIFEST).read_text())
        change(document)
        (run / MANIFEST).write_text(json.dumps(document))

    return edit


CASES: dict[str, tuple[Callable[[Path, Path], None], str]] = {
    "extractor-from-another-run": (swap("extractor.safetensors"), "extractor.safetensors"),
    "data-from-another-run": (swap("data.safetensors"), "data.safetensors"),
    "head-from-another-run": (swap("head.safetensors"), "head.safetensors"),
    "metrics-from-another-run": (swap("metrics.json"), "metrics.json"),
    "config-from-another-run": (swap("config.yaml"), "config.yaml"),
    "config-edited-to-another-digit": (edit_config_digit, "config.yaml"),
    "manifest-from-another-run": (swap(MANIFEST), MANIFEST),
    "manifest-removed": (lambda run, other: (run / MANIFEST).unlink(), "manifest.json"),
    "manifest-not-json": (lambda run, other: (run / MANIFEST).write_text("{"), MANIFEST),
    "manifest-wrong-format": (edit_manifest(lambda d: d.update(format=0)), MANIFEST),
    "listed-file-removed": (lambda run, other: (run / "report.md").unlink(), "report.md"),
    "run-file-not-listed": (
        edit_manifest(lambda d: d["files"].pop("extractor.safetensors")),
        "extractor.safetensors",
    ),
    "recipe-of-another-run": (
        edit_manifest(lambda d: d.update(recipe="0" * 16)),
        "config.yaml",
    ),
}


@pytest.mark.parametrize("command", ["evaluate", "attack"])
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_files_that_do_not_belong_to_the_run_are_refused(
    case: tuple[Callable[[Path, Path], None], str],
    command: str,
    tiny_run: Path,
    other_run: Path,
    tmp_path: Path,
) -> None:
    change, named = case
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    change(run, other_run)
    before = snapshot(tmp_path)
    result = invoke(command, run, *(ATTACK if command == "attack" else ()))
    assert result.exit_code == 2, result.output
    line = error_line(result)
    assert named in line and str(run) in line, line
    assert "internal error" not in line
    assert snapshot(tmp_path) == before


@pytest.fixture(scope="module")
def deep_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two finished tiny mnist-cnn runs of seeds 0 and 1: the same shapes, other weights."""
    root = tmp_path_factory.mktemp("deep")
    for seed in (0, 1):
        args = ("run", "mnist-cnn", "--out", root / f"seed{seed}", "--no-progress")
        result = invoke(*args, *sets([*TINY_DEEP, f"seed={seed}"]))
        assert result.exit_code == 0, result.output
    return root / "seed0", root / "seed1"


def contents(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root``: a file's bytes, ``None`` for a directory."""
    return {
        str(p.relative_to(root)): None if p.is_dir() else p.read_bytes()
        for p in sorted(root.rglob("*"))
    }


DEEP_ATTACK = ("--attackers", "linear-gd", "--no-progress", "--set", "attack.trials=1")
DEEP_COMMANDS = {
    "evaluate": ("evaluate", "{run}"),
    "attack": ("attack", "{run}", *DEEP_ATTACK),
    "attack-matrix": ("attack-matrix", "{run}", "--out", "{tmp}/matrix"),
}


@pytest.mark.parametrize("command", DEEP_COMMANDS.values(), ids=DEEP_COMMANDS.keys())
@pytest.mark.parametrize("name", ["immunized.safetensors", "original.safetensors"])
def test_a_deep_runs_model_from_another_run_is_refused(
    name: str, command: tuple[str, ...], deep_runs: tuple[Path, Path], tmp_path: Path
) -> None:
    """Issue 26's example on a deep run: a model file of another run, of the same shapes
    (only the manifest tells them apart), is refused naming it; not a byte changes."""
    mine, other = deep_runs
    run = tmp_path / "run"
    shutil.copytree(mine, run)
    shutil.copyfile(other / name, run / name)
    assert (run / name).read_bytes() != (mine / name).read_bytes()
    before, files = snapshot(tmp_path), contents(tmp_path)
    result = invoke(*(a.format(run=run, tmp=tmp_path) for a in command))
    assert result.exit_code == 2, result.output
    line = error_line(result)
    assert str(run / name) in line and "sha256" in line, line
    assert "internal error" not in line
    assert snapshot(tmp_path) == before and contents(tmp_path) == files


def test_a_fresh_run_verifies_and_an_attack_keeps_it_sealed(tiny_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    listed = set(json.loads((run / MANIFEST).read_text())["files"])
    assert {"config.yaml", "metrics.json", "extractor.safetensors", "report.md"} <= listed
    assert invoke("attack", run, *ATTACK).exit_code == 0
    after = json.loads((run / MANIFEST).read_text())["files"]
    assert {"attack_report.md", "metrics.json"} <= set(after)
    assert not [p.name for p in run.iterdir() if p.name.startswith(".update")]
    result = invoke("evaluate", run)
    assert result.exit_code == 0, result.output


def _new_metrics(folder: Path, run: Path) -> None:
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["wall_seconds"] = 12345.0
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "attack_report.md").write_text("# staged\n")


@pytest.mark.parametrize("moved", [0, 1, 2], ids=["none-moved", "one-moved", "all-but-manifest"])
def test_an_update_killed_after_its_journal_is_finished_by_the_next_command(
    moved: int, tiny_run: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    stage_update(run, lambda folder: _new_metrics(folder, run))
    journal = json.loads((run / ".update-journal.json").read_text())
    for name in journal["files"][:moved]:  # the killed process had moved these already
        os.replace(run / journal["pending"] / name, run / name)
    result = invoke("evaluate", run)
    assert result.exit_code == 0, result.output
    assert json.loads((run / "metrics.json").read_text())["wall_seconds"] == 12345.0
    assert (run / "attack_report.md").read_text() == "# staged\n"
    assert not [p.name for p in run.iterdir() if p.name.startswith(".update")]


def test_an_update_killed_before_its_journal_leaves_the_run_as_it_was(
    tiny_run: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = {p.name: p.read_bytes() for p in run.iterdir()}

    def dies_half_way(folder: Path) -> None:
        (folder / "metrics.json").write_text("{}")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        stage_update(run, dies_half_way)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


@pytest.mark.parametrize("delay", [0.5, 2.0, 3.5], ids=["starting", "attacking", "late"])
def test_attack_killed_with_sigkill_at_any_moment_leaves_files_that_belong_together(
    delay: float, tiny_run: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    command = [str(Path(sys.executable).parent / "condimmune"), "attack", str(run), *ATTACK]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    result = invoke("evaluate", run)
    assert result.exit_code == 0, result.output
    attacked = "attacks" in json.loads((run / "metrics.json").read_text())
    assert (run / "attack_report.md").exists() == attacked
    assert ("## Attack suite" in (run / "report.md").read_text()) == attacked
