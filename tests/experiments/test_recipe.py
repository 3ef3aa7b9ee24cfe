"""A run's ``config.yaml`` is a faithful recipe, and says what ran.

* ``condimmune run --config RUN/config.yaml --out NEW`` gives the same ``metrics.json``
  apart from timings, for a linear run, a deep run and a sweep's runs (one process, and
  worker processes whose threads differ from the sweep's own). Both runs are on this
  machine with the same threads, so the arithmetic is the same: compared exactly.
* Its ``versions`` section (not part of the recipe) records the threads torch ran with, the
  device, precision, package versions and the git commit of the checkout.
* Every key a config holds (so every key a ``config.yaml`` holds) can be given back, through
  ``--set`` and through ``--config``, for every experiment and method; a key an experiment
  does not read is accepted at that value only.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from _cli_support import TINY_DEEP, TINY_LINEAR, invoke, sets
from _helpers import blas_threads
from threadpoolctl import threadpool_info, threadpool_limits

from condimmune.experiments import provenance
from condimmune.experiments.config import (
    ConfigError,
    apply_overrides,
    config_to_dict,
    default_config,
    load_config,
)
from condimmune.experiments.registry import registered_experiments
from condimmune.experiments.runner import read_run
from condimmune.methods.registry import registered_methods

_SHA = "0123456789abcdef0123456789abcdef01234567"


def _differences(stored: object, new: object, key: str = "") -> list[str]:
    """Dotted keys whose value, type or presence differs, exactly (NaN equals NaN); keys
    holding wall-clock seconds are skipped."""
    if "seconds" in key.rsplit(".", 1)[-1]:
        return []
    if isinstance(stored, dict) and isinstance(new, dict):
        out = []
        for k in sorted(stored.keys() | new.keys()):
            sub = f"{key}.{k}" if key else k
            if k not in stored or k not in new:
                out.append(f"{sub} (only in one file)")
            else:
                out += _differences(stored[k], new[k], sub)
        return out
    if isinstance(stored, list) and isinstance(new, list) and len(stored) == len(new):
        return [
            d
            for i, p in enumerate(zip(stored, new, strict=True))
            for d in _differences(*p, f"{key}[{i}]")
        ]
    both_nan = isinstance(stored, float) and isinstance(new, float)
    if both_nan and math.isnan(stored) and math.isnan(new):  # type: ignore[arg-type]
        return []
    same = type(stored) is type(new) and stored == new
    return [] if same else [f"{key} ({stored!r} → {new!r})"]


def test_the_comparison_itself() -> None:
    timed = {"a": [1.0, math.nan], "wall_seconds": 1.0}
    assert _differences(timed, {"a": [1.0, math.nan], "wall_seconds": 2.0}) == []
    assert _differences({"a": 1.0}, {"a": 1.0 + 1e-15}) == ["a (1.0 → 1.000000000000001)"]
    assert _differences({"a": 1}, {"a": 1.0}) == ["a (1 → 1.0)"]
    assert _differences({"a": {"b": 2}}, {"a": {}}) == ["a.b (only in one file)"]
    assert _differences({"n": [1, 2]}, {"n": [1]}) == ["n ([1, 2] → [1])"]


@pytest.fixture
def keep_threads() -> Iterator[None]:
    """The CLI sets torch's threads (deep runs) or numpy's BLAS threads (linear runs) in this
    process: give them back afterwards."""
    before, blas_before = torch.get_num_threads(), blas_threads()
    yield
    torch.set_num_threads(before)
    threadpool_limits(limits=blas_before, user_api="blas")


def _threads_key(versions: dict[str, Any]) -> str:
    """A deep run records torch's threads, a linear run (numpy and scipy only) the BLAS's."""
    return "torch_threads" if "torch_threads" in versions else "blas_threads"


def _saved(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A run directory's recipe, its ``versions`` and its metrics."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    versions = config.pop("versions")
    return config, versions, json.loads((run_dir / "metrics.json").read_text())


def _rerun(run_dir: Path, out: Path) -> None:
    """Re-run ``run_dir``'s own config.yaml as a user would, and compare."""
    result = invoke("run", "--config", run_dir / "config.yaml", "--out", out, "--no-progress")
    assert result.exit_code == 0, result.output
    recipe, versions, metrics = _saved(run_dir)
    again, versions_again, metrics_again = _saved(out)
    assert again == recipe
    key = _threads_key(versions)
    assert versions_again[key] == versions[key]
    assert _differences(metrics, metrics_again) == []
    read_run(out)  # the manifest's recipe fingerprint leaves the record out


@pytest.mark.slow
def test_a_linear_run_reruns_from_its_config_yaml(tmp_path: Path, keep_threads: None) -> None:
    first = tmp_path / "first"
    result = invoke("run", "digits", "--out", first, "--no-progress", *sets(TINY_LINEAR))
    assert result.exit_code == 0, result.output
    recipe, versions, _ = _saved(first)
    assert recipe["threads"] == versions["blas_threads"] == 1  # the CLI's linear default
    assert "torch_threads" not in versions and "openblas" in versions["blas"]
    assert (versions["device"], versions["precision"]) == ("cpu", "64-true")
    _rerun(first, tmp_path / "again")


@pytest.mark.slow
def test_a_deep_run_reruns_from_its_config_yaml(tmp_path: Path, keep_threads: None) -> None:
    first = tmp_path / "first"
    result = invoke("run", "mnist-cnn", "--out", first, "--no-progress", *sets(TINY_DEEP))
    assert result.exit_code == 0, result.output
    recipe, versions, _ = _saved(first)
    assert recipe["threads"] == 0  # torch's default, which the record names
    assert versions["torch_threads"] == torch.get_num_threads()
    assert (versions["device"], versions["precision"]) == ("cpu", "32-true")
    assert "lightning" in versions
    _rerun(first, tmp_path / "again")


def _sweep(out: Path, *args: str) -> None:
    cmd = ["sweep", "digits", "--methods", "condnum", "--pairs", "1-7", "--out", out]
    result = invoke(*cmd, "--no-progress", *args, *sets(TINY_LINEAR))
    assert result.exit_code == 0, result.output


@pytest.mark.slow
def test_a_sweep_run_reruns_from_its_config_yaml(tmp_path: Path, keep_threads: None) -> None:
    _sweep(tmp_path / "sweep", "--seeds", "0", "--workers", "1")
    _rerun(tmp_path / "sweep" / "runs" / "condnum" / "1-7" / "seed0", tmp_path / "again")


@pytest.mark.slow
def test_sweep_workers_record_their_own_threads(tmp_path: Path, keep_threads: None) -> None:
    """The sweep runs on 2 threads, its workers on 1 each: each job's config.yaml says 1,
    also for a job that ``--resume`` runs alone (it runs in a worker too), and re-running it
    gives the same numbers."""
    out = tmp_path / "sweep"
    args = ["--seeds", "0,1", "--workers", "2", "--set", "threads=2"]
    _sweep(out, *args)
    runs = [out / "runs" / "condnum" / "1-7" / f"seed{seed}" for seed in (0, 1)]
    shutil.rmtree(runs[1])
    _sweep(out, *args, "--resume")
    assert blas_threads() == 2
    for run in runs:
        recipe, versions, _ = _saved(run)
        assert recipe["threads"] == versions["blas_threads"] == 1
    _rerun(runs[1], tmp_path / "again")


# ------------------------------------------------------------------------- the record
def _checkout(root: Path, head: str, *, pyproject: bool = True) -> Path:
    git = root / ".git"
    (git / "refs" / "heads").mkdir(parents=True)
    (git / "HEAD").write_text(head)
    if pyproject:
        (root / "pyproject.toml").write_text("[project]\n")
    return git


def test_the_git_commit_is_read_from_the_checkouts_files(tmp_path: Path) -> None:
    detached = tmp_path / "detached"
    _checkout(detached, f"{_SHA}\n")
    assert provenance.git_commit(detached) == _SHA
    loose = tmp_path / "loose"
    git = _checkout(loose, "ref: refs/heads/main\n")
    (git / "refs" / "heads" / "main").write_text(f"{_SHA}\n")
    assert provenance.git_commit(loose) == _SHA
    packed = tmp_path / "packed"
    git = _checkout(packed, "ref: refs/heads/main\n")
    other = "f" * 40
    (git / "packed-refs").write_text(f"# pack-refs\n{other} refs/heads/x\n{_SHA} refs/heads/main\n")
    assert provenance.git_commit(packed) == _SHA
    worktree = tmp_path / "worktree"
    (worktree / "pyproject.toml").parent.mkdir()
    (worktree / "pyproject.toml").write_text("")
    own = tmp_path / "packed" / ".git" / "worktrees" / "w"
    own.mkdir(parents=True)
    (own / "HEAD").write_text("ref: refs/heads/main\n")
    (own / "commondir").write_text("../..\n")
    (worktree / ".git").write_text(f"gitdir: {own}\n")
    assert provenance.git_commit(worktree) == _SHA


@pytest.mark.parametrize(
    "case",
    ["no-git", "no-pyproject", "unborn-branch", "garbage-head", "bad-gitdir-file", "gone-gitdir"],
)
def test_no_commit_is_recorded_when_there_is_none(tmp_path: Path, case: str) -> None:
    root = tmp_path / "checkout"
    if case == "no-git":
        root.mkdir()
        (root / "pyproject.toml").write_text("")
    elif case == "no-pyproject":  # an installed condimmune beside someone else's repository
        _checkout(root, f"{_SHA}\n", pyproject=False)
    elif case == "unborn-branch":
        _checkout(root, "ref: refs/heads/main\n")
    elif case == "garbage-head":
        _checkout(root, "not a commit\n")
    else:
        root.mkdir()
        (root / "pyproject.toml").write_text("")
        pointer = "something else" if case == "bad-gitdir-file" else f"gitdir: {tmp_path}/gone"
        (root / ".git").write_text(f"{pointer}\n")
    assert provenance.git_commit(root) is None


def test_the_record_says_what_ran(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(provenance, "_CHECKOUT", tmp_path)
    linear = provenance.run_record(config_to_dict(default_config("digits")), torch_run=False)
    assert "git_commit" not in linear
    blas = [i for i in threadpool_info() if i["user_api"] == "blas"]
    assert linear["blas_threads"] == max(i["num_threads"] for i in blas)
    named = str(linear["blas"]).split("; ")  # every BLAS loaded, each with its version
    assert len(named) == len(blas)
    for info, text in zip(blas, named, strict=True):
        assert f"{info['internal_api']} {info['version']}" in text
    assert (linear["device"], linear["precision"]) == ("cpu", "64-true")
    assert "scipy" in linear  # LAPACK's eigh and sytrf decide a linear run's numbers
    assert not {"torch", "torch_threads", "cpu_capability", "onednn"} & set(linear)
    _checkout(tmp_path, f"{_SHA}\n")
    deep = config_to_dict(apply_overrides(default_config("mnist-cnn"), ["train.precision=64-true"]))
    record = provenance.run_record(deep, "lightning")
    assert "torch" in record  # a deep run names torch's version, a linear run does not
    assert record["torch_threads"] == torch.get_num_threads()
    assert record["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert isinstance(record["onednn"], bool)
    names = list(record)
    assert names[:3] == ["python", "condimmune", "git_commit"]
    assert record["git_commit"] == _SHA and "lightning" in record
    # a hand-made .git that git itself cannot read: the record leaves the question out
    assert "git_tree_changed" not in record
    assert (record["device"], record["precision"]) == ("cpu", "64-true")


@pytest.mark.skipif(shutil.which("git") is None, reason="needs the git program")
def test_the_record_says_whether_the_checkout_had_changes(tmp_path: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "pyproject.toml").write_text("[project]\n")
    git("add", "pyproject.toml")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    assert provenance.git_tree_changed(tmp_path) is False
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "x.txt").write_text("untracked output\n")
    assert provenance.git_tree_changed(tmp_path) is False
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'changed'\n")
    assert provenance.git_tree_changed(tmp_path) is True
    assert provenance.git_tree_changed(tmp_path / "no-such-folder") is None


# -------------------------------------------------- every written key can be given back
def _text(value: object) -> str:
    """A value as ``--set`` takes it: text as is, anything else as a config file writes it."""
    if isinstance(value, str):
        return value
    return str(yaml.safe_dump(value)).removesuffix("\n...\n").strip()


def _leaves(data: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, object]]:
    for key, value in data.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


_CASES = [
    pytest.param(spec.name.value, method.name, id=f"{spec.name.value}-{method.name}")
    for spec in registered_experiments()
    for method in registered_methods()
    if method.supports(spec.family)
]


@pytest.mark.parametrize(("experiment", "method"), _CASES)
def test_every_written_key_can_be_given_back(experiment: str, method: str, tmp_path: Path) -> None:
    config = apply_overrides(default_config(experiment), [f"train.method={method}"])
    written = config_to_dict(config)
    for key, value in _leaves(written):
        if key != "experiment":  # the command's EXPERIMENT argument
            assert apply_overrides(config, [f"{key}={_text(value)}"]) == config, key
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({**written, "versions": {"torch_threads": 1}}, sort_keys=False))
    assert load_config(path) == config


@pytest.mark.parametrize(
    ("experiment", "key", "value", "default"),
    [
        ("mnist-pair", "data.train_rows", "300", "200"),
        ("mnist-pair", "data.train_rows", "many", "200"),
        ("digits", "data.root", "/data", "null"),
        ("mnist-cnn", "data.max_train_images", "5", "0"),
        ("mobilenet-fashion-mnist", "data.benign_digits", "01", "'01234'"),
    ],
)
def test_a_key_not_read_takes_its_default_only(
    experiment: str, key: str, value: str, default: str, tmp_path: Path
) -> None:
    message = f"{key} is not read by experiment {experiment}; remove it (or leave it at its "
    message += f"default {default})"
    with pytest.raises(ConfigError) as raised:
        apply_overrides(default_config(experiment), [f"{key}={value}"])
    assert str(raised.value) == message
    section, name = key.split(".")
    path = tmp_path / "c.yaml"
    path.write_text(f"experiment: {experiment}\n{section}:\n  {name}: {value}\n")
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert str(raised.value) == f"config file {path}: {message}"
