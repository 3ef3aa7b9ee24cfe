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
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file, save_file

from condimmune.experiments.rundir import (
    new_output_dir,
    package_versions,
    replace_atomically,
    write_directory_atomically,
)
from condimmune.attacks.probes import ProbeComparison, compare_probe_attacks
from condimmune.core.bound import immunization_bound_features
from condimmune.experiments.config import ExperimentConfig, Method, config_from_dict, config_to_dict
from condimmune.linear.data import LinearTaskData, TaskKind, load_task_data
from condimmune.linear.train import LinearModel, TrainingHistory, predict, task_loss, train_linear
from condimmune.core.metrics import check_immunization, immunization_condition_numbers

__all__ = ["RunArtifacts", "evaluate_run", "load_run", "run_experiment", "update_metrics"]


@dataclass(frozen=True)
class RunArtifacts:
    """What a run produced, in memory (the run directory is its serialisation)."""

    config: ExperimentConfig
    data: LinearTaskData
    model: LinearModel
    raw_model: LinearModel
    history: TrainingHistory
    metrics: dict[str, Any]
    attacks: dict[str, ProbeComparison]
    """The paper's attacker on each task ("harmful", "benign"), raw vs immunized."""


def _benign_metric(kind: TaskKind, model: LinearModel, x, y) -> float:
    with torch.no_grad():
        out = predict(model, x)
        if kind is TaskKind.CLASSIFICATION:
            return float(((out > 0).to(y.dtype) == y).to(torch.float64).mean())
        return float(((out - y) ** 2).mean())


def _train_loss(kind: TaskKind, model: LinearModel, x, y) -> float:
    with torch.no_grad():
        return float(task_loss(kind, predict(model, x), y))


def compute_metrics(
    config: ExperimentConfig,
    data: LinearTaskData,
    model: LinearModel,
    raw_model: LinearModel,
) -> tuple[dict[str, Any], dict[str, ProbeComparison]]:
    """All metrics of a run from its data and models (used by ``run`` and ``evaluate``),
    and the attack trajectories behind them (plotted by the report)."""
    xp, xh = data.benign.x_train, data.harmful.x_train
    honest = immunization_condition_numbers(xp, xh, model.weight)
    compat = immunization_condition_numbers(xp, xh, model.weight, rule="paper-compatible")
    bound = immunization_bound_features(xp, xh)

    def attack(x, y, transform: str = "none") -> ProbeComparison:
        return compare_probe_attacks(
            x,
            y,
            model.weight,
            target=config.attack.target,
            budget=config.attack.budget,
            transform=transform,
        )

    harmful_attack = attack(xh, data.harmful.y_train)
    benign_attack = attack(xp, data.benign.y_train)
    rescaling_attackers = {
        name: attack(xh, data.harmful.y_train, name) for name in ("standardize", "whiten")
    }
    loss_raw = _train_loss(data.kind, raw_model, xp, data.benign.y_train)
    loss_imm = _train_loss(data.kind, model, xp, data.benign.y_train)
    check = check_immunization(honest, benign_loss_raw=loss_raw, benign_loss_immunized=loss_imm)
    metric_name = "accuracy" if data.kind is TaskKind.CLASSIFICATION else "mse"
    fraction = None if bound.unbounded else honest.rir / bound.value
    metrics = {
        "experiment": config.experiment,
        "method": config.train.method,
        "seed": config.seed,
        "rir": honest.rir,
        "kappa": {
            "benign": {"raw": honest.benign_raw, "immunized": honest.benign_immunized},
            "harmful": {"raw": honest.harmful_raw, "immunized": honest.harmful_immunized},
        },
        "harmful_ratio": honest.harmful_ratio,
        "benign_ratio": honest.benign_ratio,
        "rir_paper_compatible": compat.rir,
        "kappa_paper_compatible": {
            "benign": {"raw": compat.benign_raw, "immunized": compat.benign_immunized},
            "harmful": {"raw": compat.harmful_raw, "immunized": compat.harmful_immunized},
        },
        "rir_bound": {
            "value": bound.value,
            "unbounded": bound.unbounded,
            "reason": bound.reason,
        },
        "rir_fraction_of_bound": fraction,
        "benign_task": {
            "metric": metric_name,
            "raw": _benign_metric(data.kind, raw_model, data.benign.x_test, data.benign.y_test),
            "immunized": _benign_metric(data.kind, model, data.benign.x_test, data.benign.y_test),
            "train_loss_raw": loss_raw,
            "train_loss_immunized": loss_imm,
        },
        "attack": {
            "target": config.attack.target,
            "steps_raw": harmful_attack.raw.steps_to_target,
            "steps_immunized": harmful_attack.immunized.steps_to_target,
            "harmful_slowdown": harmful_attack.slowdown,
            "benign_steps_raw": benign_attack.raw.steps_to_target,
            "benign_steps_immunized": benign_attack.immunized.steps_to_target,
            "benign_slowdown": benign_attack.slowdown,
            "rescaling_attackers": {
                name: {
                    "steps_raw": cmp.raw.steps_to_target,
                    "steps_immunized": cmp.immunized.steps_to_target,
                    "harmful_slowdown": cmp.slowdown,
                }
                for name, cmp in rescaling_attackers.items()
            },
        },
        "immunization_check": {
            "immunized": check.immunized,
            "harmful_ok": check.harmful_ok,
            "harmful_margin": check.harmful_margin,
            "benign_ok": check.benign_ok,
            "benign_margin": check.benign_margin,
            "utility_ok": check.utility_ok,
            "utility_gap": check.utility_gap,
        },
    }
    return metrics, {"harmful": harmful_attack, "benign": benign_attack}


def _write_json(path: Path, payload: Any) -> None:
    path.write_text(json.dumps(payload, indent=2, allow_nan=True) + "\n")


def run_experiment(
    config: ExperimentConfig, out_dir: str | Path | None, *, progress: bool = True
) -> RunArtifacts:
    """Train, evaluate and (if ``out_dir``) write the run directory atomically."""
    from condimmune.experiments.report import write_report

    config = config_from_dict(config_to_dict(config))  # validated copy
    final = new_output_dir(out_dir) if out_dir is not None else None
    start = time.perf_counter()
    data = load_task_data(config.experiment, config.data, config.seed)
    raw_cfg = config_from_dict(config_to_dict(config)).train
    raw_cfg.method = Method.NONE.value
    raw_model, _ = train_linear(data, raw_cfg, seed=config.seed, progress=progress)
    train_start = time.perf_counter()
    model, history = train_linear(data, config.train, seed=config.seed, progress=progress)
    train_seconds = time.perf_counter() - train_start
    metrics, attacks = compute_metrics(config, data, model, raw_model)
    metrics["train_seconds"] = train_seconds
    metrics["notes"] = [*data.notes, *history.notes]
    metrics["wall_seconds"] = time.perf_counter() - start
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


def load_run(
    run_dir: str | Path,
) -> tuple[ExperimentConfig, LinearTaskData, LinearModel, LinearModel, dict[str, Any]]:
    """Read a run directory back: config, data, immunized and raw models, saved metrics."""
    from condimmune.linear.data import TaskSplit

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
    tensors = load_file(run_dir / "data.safetensors")
    weight = load_file(run_dir / "extractor.safetensors")["weight"]
    head = load_file(run_dir / "head.safetensors")
    empty = torch.zeros(0, dtype=torch.float64)
    kind = TaskKind.REGRESSION if config.experiment == "house-price" else TaskKind.CLASSIFICATION
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
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return config, data, model, raw_model, metrics


def evaluate_run(run_dir: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Recompute a saved run's metrics from its files; returns (recomputed, saved)."""
    config, data, model, raw_model, saved = load_run(run_dir)
    return compute_metrics(config, data, model, raw_model)[0], saved


def metrics_agree(a: dict[str, Any], b: dict[str, Any], rel: float = 1e-6) -> list[str]:
    """Keys (dotted) whose numbers differ between two metrics dicts by more than ``rel``."""
    bad: list[str] = []

    def walk(x: Any, y: Any, key: str) -> None:
        if isinstance(x, dict) and isinstance(y, dict):
            for k in x.keys() & y.keys():
                walk(x[k], y[k], f"{key}.{k}" if key else k)
        elif (
            isinstance(x, int | float)
            and isinstance(y, int | float)
            and not isinstance(x, bool)
            and not (math.isclose(x, y, rel_tol=rel, abs_tol=1e-12) or (x != x and y != y))
        ):
            bad.append(key)

    walk(a, b, "")
    return sorted(bad)


def update_metrics(run_dir: str | Path, additions: dict[str, Any]) -> None:
    """Merge ``additions`` into a run's ``metrics.json`` atomically (temp file + rename)."""
    path = Path(run_dir) / "metrics.json"
    metrics = json.loads(path.read_text())
    metrics.update(additions)
    replace_atomically(path, lambda tmp: _write_json(tmp, metrics))
