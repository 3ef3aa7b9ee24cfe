"""The files of a linear run directory: the extractor, the heads and the exact rows the κ's
were computed on, written and read back strictly as numpy arrays (every tensor present,
finite, floating point, read as float64, and of consistent shapes; anything else is a
:class:`~condimmune.core.errors.UserError` naming the file).

=========================  =================================================================
``extractor.safetensors``  ``weight``: W (k × d)
``head.safetensors``       ``head`` (k,), ``bias``: the benign model's head
``data.safetensors``       ``benign_x``, ``harmful_x`` (training rows), ``benign_y``,
                           ``harmful_y``, ``benign_x_test``, ``benign_y_test``, and the raw
                           model's head ``raw_head``, ``raw_bias``
=========================  =================================================================
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from safetensors.numpy import save_file

from condimmune.core.errors import UserError
from condimmune.core.user_files import read_array_file
from condimmune.linear.tasks import LinearTaskData, TaskKind, TaskSplit
from condimmune.linear.train import LinearModel

__all__ = ["read_run_files", "write_run_files"]

_Model = LinearModel[NDArray[np.floating[Any]]]


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


def _read_run_tensors(run_dir: Path, fix: str) -> dict[str, NDArray[np.float64]]:
    """Every tensor of the run's safetensors files (as float64 numpy arrays): present, finite,
    floating point, and of consistent shapes; anything else is a :class:`UserError` naming
    the file."""
    out: dict[str, NDArray[np.float64]] = {}
    sizes: dict[str, tuple[int, str]] = {"1": (1, "a scalar")}
    for name, spec in _RUN_TENSORS.items():
        path = run_dir / name
        tensors = read_array_file(path, fix=fix, required=list(spec)).tensors
        for key, dims in spec.items():
            t = tensors[key]
            shape = list(t.shape)
            problem = None
            floating = np.issubdtype(t.dtype, np.floating)
            if not floating or len(shape) != len(dims) or 0 in shape:
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
            out[key] = np.ascontiguousarray(t, dtype=np.float64)
    return out


def write_run_files(
    directory: Path,
    data: LinearTaskData,
    model: _Model,
    raw_model: _Model,
) -> None:
    """The three safetensors files of a linear run (module docstring) into ``directory``."""
    c = np.ascontiguousarray
    save_file({"weight": c(model.weight)}, directory / "extractor.safetensors")
    save_file(
        {"head": c(model.head), "bias": c(model.bias).reshape(1)},
        directory / "head.safetensors",
    )
    save_file(
        {
            "benign_x": c(data.benign.x_train),
            "harmful_x": c(data.harmful.x_train),
            "benign_y": c(data.benign.y_train),
            "harmful_y": c(data.harmful.y_train),
            "benign_x_test": c(data.benign.x_test),
            "benign_y_test": c(data.benign.y_test),
            "raw_head": c(raw_model.head),
            "raw_bias": c(raw_model.bias).reshape(1),
        },
        directory / "data.safetensors",
    )


def read_run_files(
    run_dir: Path, kind: TaskKind, fix: str
) -> tuple[LinearTaskData, _Model, _Model]:
    """``(data, immunized model, raw model)`` of a linear run directory, read strictly."""
    tensors = _read_run_tensors(run_dir, fix)
    weight = tensors["weight"]
    empty = np.zeros(0, dtype=np.float64)
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
    model = LinearModel(weight=weight, head=tensors["head"], bias=tensors["bias"].reshape(()))
    raw_model = LinearModel(
        weight=np.eye(weight.shape[1], dtype=np.float64),
        head=tensors["raw_head"],
        bias=tensors["raw_bias"].reshape(()),
    )
    return data, model, raw_model
