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
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file, save_file

from condimmune.experiments.artifacts import RunArtifacts
from condimmune.experiments.config import (
    DataConfig,
    ExperimentConfig,
    TrainConfig,
    config_from_dict,
    config_to_dict,
)
from condimmune.experiments.linear_evaluation import compute_metrics
from condimmune.experiments.records import LinearRunMetrics, read_metrics
from condimmune.experiments.registry import Experiment
from condimmune.experiments.report import write_report
from condimmune.experiments.rundir import (
    new_output_dir,
    package_versions,
    replace_atomically,
    write_directory_atomically,
)
from condimmune.linear.data import load_task_data as _load_task_data
from condimmune.linear.tasks import (
    LinearDataOptions,
    LinearSource,
    LinearTaskData,
    TaskKind,
    TaskSplit,
)
from condimmune.linear.train import (
    LinearModel,
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
    """Train, evaluate and (if ``out_dir``) write the run directory atomically."""
    checked = config_from_dict(config_to_dict(config))  # validated copy
    if not isinstance(checked, ExperimentConfig):
        raise ValueError(f"{config.experiment} is a deep experiment; use run_deep_experiment")
    config = checked
    final = new_output_dir(out_dir) if out_dir is not None else None
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


@dataclass(frozen=True)
class LoadedRun:
    """A linear run directory read back: config, data, immunized and raw models, metrics."""

    config: ExperimentConfig
    data: LinearTaskData
    model: LinearModel
    raw_model: LinearModel
    metrics: LinearRunMetrics


def load_run(run_dir: str | Path) -> LoadedRun:
    """Read a run directory back; a missing or damaged file is an error naming it."""
    run_dir = Path(run_dir)
    if (run_dir / "immunized.safetensors").is_file():
        raise ValueError(
            f"{run_dir} is a deep run; its attacks and RIR_θ0 are already in metrics.json "
            "(evaluate and attack work on linear runs)"
        )
    needed = [
        "config.yaml",
        "metrics.json",
        "extractor.safetensors",
        "head.safetensors",
        "data.safetensors",
    ]
    missing = [n for n in needed if not (run_dir / n).is_file()]
    if missing:
        raise ValueError(
            f"{run_dir} is not a complete run directory (missing {', '.join(missing)})"
        )
    raw = yaml.safe_load((run_dir / "config.yaml").read_text())
    raw.pop("versions", None)
    config = config_from_dict(raw)
    if not isinstance(config, ExperimentConfig):
        raise ValueError(f"{run_dir / 'config.yaml'} is the config of a deep run")
    tensors = load_file(run_dir / "data.safetensors")
    weight = load_file(run_dir / "extractor.safetensors")["weight"]
    head = load_file(run_dir / "head.safetensors")
    empty = torch.zeros(0, dtype=torch.float64)
    kind = (
        TaskKind.REGRESSION
        if config.experiment == Experiment.HOUSE_PRICE.value
        else TaskKind.CLASSIFICATION
    )
    data = LinearTaskData(
        benign=TaskSplit(
            tensors["benign_x"],
            tensors["benign_y"],
            tensors["benign_x_test"],
            tensors["benign_y_test"],
        ),
        harmful=TaskSplit(tensors["harmful_x"], tensors["harmful_y"], empty, empty),
        kind=kind,
        description=f"loaded from {run_dir}",
    )
    model = LinearModel(weight=weight, head=head["head"], bias=head["bias"][0])
    d = weight.shape[1]
    raw_model = LinearModel(
        weight=torch.eye(d, dtype=weight.dtype),
        head=tensors["raw_head"],
        bias=tensors["raw_bias"][0],
    )
    path = run_dir / "metrics.json"
    metrics = read_metrics(json.loads(path.read_text()), source=str(path))
    if not isinstance(metrics, LinearRunMetrics):
        raise ValueError(f"{path} holds the metrics of a deep run")
    return LoadedRun(config, data, model, raw_model, metrics)


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
    """Replace a run's ``metrics.json`` atomically (temp file + rename)."""
    path = Path(run_dir) / "metrics.json"
    replace_atomically(path, lambda tmp: _write_json(tmp, metrics))
