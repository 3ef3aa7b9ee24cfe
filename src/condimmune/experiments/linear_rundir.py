"""A linear run directory read back strictly: every file present, well-formed and consistent.

A missing, damaged or inconsistent file is a :class:`~condimmune.core.errors.UserError`
(or, for ``metrics.json``, a :class:`~condimmune.core.records.RecordError`) naming it, so
``condimmune evaluate`` and ``condimmune attack`` never compute on a half-read run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from condimmune.core.errors import UserError
from condimmune.core.user_files import read_tensor_file
from condimmune.experiments.config import ExperimentConfig, config_from_dict
from condimmune.experiments.records import LinearRunMetrics, read_metrics
from condimmune.experiments.registry import Experiment
from condimmune.experiments.rundir import read_json, read_yaml_mapping
from condimmune.linear.tasks import LinearTaskData, TaskKind, TaskSplit
from condimmune.linear.train import LinearModel

__all__ = ["LoadedRun", "load_run"]


@dataclass(frozen=True)
class LoadedRun:
    """A linear run directory read back: config, data, immunized and raw models, metrics."""

    config: ExperimentConfig
    data: LinearTaskData
    model: LinearModel
    raw_model: LinearModel
    metrics: LinearRunMetrics


_RUN_TENSORS: dict[str, dict[str, tuple[str, ...]]] = {
    "extractor.safetensors": {"weight": ("k", "d")},
    "head.safetensors": {"head": ("k",), "bias": ("1",)},
    "data.safetensors": {
        "benign_x": ("n_benign", "d"),
        "harmful_x": ("n_harmful", "d"),
        "benign_y": ("n_benign",),
        "harmful_y": ("n_harmful",),
        "benign_x_test": ("n_test", "d"),
        "benign_y_test": ("n_test",),
        "raw_head": ("d",),
        "raw_bias": ("1",),
    },
}
"""The tensors of a linear run directory and their shapes (shared letters: equal sizes)."""


def _read_run_tensors(run_dir: Path, fix: str) -> dict[str, Tensor]:
    """Every tensor of the run's safetensors files: present, finite, floating point, and
    of consistent shapes; anything else is a :class:`UserError` naming the file."""
    out: dict[str, Tensor] = {}
    sizes: dict[str, tuple[int, str]] = {"1": (1, "a scalar")}
    for name, spec in _RUN_TENSORS.items():
        path = run_dir / name
        tensors = read_tensor_file(path, fix=fix, required=list(spec)).tensors
        for key, dims in spec.items():
            t = tensors[key]
            shape = list(t.shape)
            problem = None
            if not t.is_floating_point() or len(shape) != len(dims) or 0 in shape:
                problem = f"{len(dims)}-dimensional, non-empty floating point expected"
            else:
                for dim, n in zip(dims, shape, strict=True):
                    seen, where = sizes.setdefault(dim, (n, f"{key!r} ({name})"))
                    if seen != n:
                        problem = f"size {n} differs from {seen} in {where}"
                        break
            if problem is not None:
                raise UserError(
                    f"tensor {key!r} has shape {shape} and dtype {t.dtype}: {problem}", path, fix
                )
            out[key] = t
    return out


def load_run(run_dir: str | Path) -> LoadedRun:
    """Read a run directory back; a missing or damaged file is a :class:`UserError` naming it."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(
            "no such run directory" if not run_dir.exists() else "not a directory",
            run_dir,
            "pass a run directory written by `condimmune run`",
        )
    if (run_dir / "immunized.safetensors").is_file():
        raise ValueError(
            f"{run_dir} is a deep run; its attacks and RIR_θ0 are already in metrics.json "
            "(evaluate and attack work on linear runs)"
        )
    needed = ["config.yaml", "metrics.json", *_RUN_TENSORS]
    missing = [n for n in needed if not (run_dir / n).is_file()]
    if missing:
        raise ValueError(
            f"{run_dir} is not a complete run directory (missing {', '.join(missing)})"
        )
    fix = "the run directory is damaged: run the experiment again into a new --out"
    config_path = run_dir / "config.yaml"
    raw = read_yaml_mapping(config_path, fix)
    raw.pop("versions", None)
    try:
        config = config_from_dict(raw)
    except ValueError as exc:
        raise UserError(f"not a valid run config ({exc})", config_path, fix) from None
    if not isinstance(config, ExperimentConfig):
        raise ValueError(f"{config_path} is the config of a deep run")
    tensors = _read_run_tensors(run_dir, fix)
    weight = tensors["weight"]
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
    model = LinearModel(weight=weight, head=tensors["head"], bias=tensors["bias"][0])
    d = weight.shape[1]
    raw_model = LinearModel(
        weight=torch.eye(d, dtype=weight.dtype),
        head=tensors["raw_head"],
        bias=tensors["raw_bias"][0],
    )
    path = run_dir / "metrics.json"
    metrics = read_metrics(read_json(path, fix), source=str(path))
    if not isinstance(metrics, LinearRunMetrics):
        raise ValueError(f"{path} holds the metrics of a deep run")
    return LoadedRun(config, data, model, raw_model, metrics)
