"""Run one linear experiment and write its run directory (a contract other tools read).

Run directory::

    config.yaml            resolved config + seed + package versions
    metrics.json           headline metrics (schema in README.md)
    extractor.safetensors  {"weight": W (k × d)}
    head.safetensors       {"head": ω (k,), "bias": b} of the benign model
    data.safetensors       exact preprocessed inputs: benign_x, harmful_x (training rows the
                           κ's were computed on), benign_y, harmful_y, benign_x_test, benign_y_test
    report.md, *.png       human-readable report with plots

Everything is written into a temporary sibling directory that is renamed into place at
the end, so an interrupted or failed run never leaves a half-written ``metrics.json``.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import yaml
from safetensors.torch import save_file

from condimmune.experiments.artifacts import RunArtifacts
from condimmune.experiments.config import (
    DataConfig,
    ExperimentConfig,
    TrainConfig,
    config_from_dict,
    config_to_dict,
)
from condimmune.experiments.linear_evaluation import compute_metrics
from condimmune.experiments.linear_rundir import LoadedRun, load_run
from condimmune.experiments.records import LinearRunMetrics
from condimmune.experiments.registry import Experiment
from condimmune.experiments.report import write_report
from condimmune.experiments.rundir import (
    claim_output_dir,
    package_versions,
    replace_atomically,
    run_dir_lock,
    write_directory_atomically,
)
from condimmune.linear.data import load_task_data as _load_task_data
from condimmune.linear.tasks import (
    LinearDataOptions,
    LinearSource,
    LinearTaskData,
)
from condimmune.linear.train import (
    LinearTrainOptions,
    train_linear,
)
from condimmune.methods.base import MethodOptions
from condimmune.methods.registry import Method

__all__ = [
    "LoadedRun",
    "evaluate_run",
    "linear_train_options",
    "load_run",
    "load_task_data",
    "run_experiment",
    "update_metrics",
]


def linear_train_options(train: TrainConfig) -> LinearTrainOptions:
    """The library's training options from the config's ``train`` section."""
    return LinearTrainOptions(
        method=train.method,
        epochs=train.epochs,
        batch_size=train.batch_size,
        lr=train.lr,
        method_options=MethodOptions(
            benign_weight=train.benign_weight,
            harmful_weight=train.harmful_weight,
            benign_ridge=train.benign_ridge,
            harmful_ridge=train.harmful_ridge,
            step_rule=train.step_rule,
            opt_kappa_weight=train.opt_kappa_weight,
            imma_weight=train.imma_weight,
            imma_inner_steps=train.imma_inner_steps,
        ),
    )


_SOURCES = {
    Experiment.MNIST_PAIR: LinearSource.MNIST,
    Experiment.DIGITS: LinearSource.DIGITS,
    Experiment.HOUSE_PRICE: LinearSource.HOUSE_PRICE,
}


def load_task_data(experiment: str, data: DataConfig, seed: int) -> LinearTaskData:
    """The two tasks of a linear experiment, from the config's ``data`` section."""
    options = LinearDataOptions(
        root=data.root,
        benign_digit=data.benign_digit,
        harmful_digit=data.harmful_digit,
        per_class=data.per_class,
        test_per_class=data.test_per_class,
        train_rows=data.train_rows,
        test_rows=data.test_rows,
        pca_components=data.pca_components,
        drop_collinear=data.drop_collinear,
    )
    return _load_task_data(_SOURCES[Experiment(experiment)], options, seed)


def _write_json(path: Path, record: LinearRunMetrics) -> None:
    path.write_text(json.dumps(record.to_json(), indent=2, allow_nan=True) + "\n")


def run_experiment(
    config: ExperimentConfig, out_dir: str | Path | None, *, progress: bool = True
) -> RunArtifacts:
    """Train, evaluate and (if ``out_dir``) write the run directory atomically; the output
    path is checked and locked before any compute (:func:`~.rundir.claim_output_dir`)."""
    checked = config_from_dict(config_to_dict(config))  # validated copy
    if not isinstance(checked, ExperimentConfig):
        raise ValueError(f"{config.experiment} is a deep experiment; use run_deep_experiment")
    if out_dir is None:
        return _run(checked, None, progress)
    with claim_output_dir(out_dir) as final:
        return _run(checked, final, progress)


def _run(config: ExperimentConfig, final: Path | None, progress: bool) -> RunArtifacts:
    start = time.perf_counter()
    data = load_task_data(config.experiment, config.data, config.seed)
    options = linear_train_options(config.train)
    raw_options = replace(options, method=Method.NONE.value)
    raw_model, _ = train_linear(data, raw_options, seed=config.seed, progress=progress)
    train_start = time.perf_counter()
    model, history = train_linear(data, options, seed=config.seed, progress=progress)
    train_seconds = time.perf_counter() - train_start
    metrics, attacks = compute_metrics(
        config, data, model, raw_model, notes=[*data.notes, *history.notes]
    )
    metrics = replace(
        metrics, train_seconds=train_seconds, wall_seconds=time.perf_counter() - start
    )
    artifacts = RunArtifacts(config, data, model, raw_model, history, metrics, attacks)
    if final is not None:

        def write(tmp: Path) -> None:
            _write_run(tmp, artifacts)
            write_report(tmp, artifacts)

        write_directory_atomically(final, write)
    return artifacts


def _write_run(directory: Path, art: RunArtifacts) -> None:
    resolved = config_to_dict(art.config)
    resolved["versions"] = package_versions()
    (directory / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
    save_file({"weight": art.model.weight.contiguous()}, directory / "extractor.safetensors")
    save_file(
        {"head": art.model.head.contiguous(), "bias": art.model.bias.reshape(1)},
        directory / "head.safetensors",
    )
    save_file(
        {
            "benign_x": art.data.benign.x_train.contiguous(),
            "harmful_x": art.data.harmful.x_train.contiguous(),
            "benign_y": art.data.benign.y_train.contiguous(),
            "harmful_y": art.data.harmful.y_train.contiguous(),
            "benign_x_test": art.data.benign.x_test.contiguous(),
            "benign_y_test": art.data.benign.y_test.contiguous(),
            "raw_head": art.raw_model.head.contiguous(),
            "raw_bias": art.raw_model.bias.reshape(1),
        },
        directory / "data.safetensors",
    )
    _write_json(directory / "metrics.json", art.metrics)


def evaluate_run(run_dir: str | Path) -> tuple[LinearRunMetrics, LinearRunMetrics]:
    """Recompute a saved run's metrics from its files; returns (recomputed, saved). The
    recomputed record carries the saved timings, notes and attack-suite results, which
    the files alone cannot reproduce."""
    run = load_run(run_dir)
    saved = run.metrics
    recomputed, _ = compute_metrics(
        run.config,
        run.data,
        run.model,
        run.raw_model,
        notes=saved.notes,
        train_seconds=saved.train_seconds,
        wall_seconds=saved.wall_seconds,
    )
    recomputed = replace(
        recomputed,
        attacks=saved.attacks,
        attack_worst_case=saved.attack_worst_case,
        attack_worst_case_first_order=saved.attack_worst_case_first_order,
    )
    return recomputed, saved


def update_metrics(run_dir: str | Path, metrics: LinearRunMetrics) -> None:
    """Replace a run's ``metrics.json`` atomically (temp file + rename), holding the run
    directory's lock (:func:`~.rundir.run_dir_lock`; re-entrant, so a caller can hold it
    across its own read-modify-write, as ``condimmune attack`` does)."""
    run_dir = Path(run_dir).resolve()
    with run_dir_lock(run_dir):
        path = run_dir / "metrics.json"
        replace_atomically(path, lambda tmp: _write_json(tmp, metrics))
