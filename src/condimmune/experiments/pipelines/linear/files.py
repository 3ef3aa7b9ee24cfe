"""The files of a linear run directory: the extractor, the heads and the exact rows the κ's
were computed on, written and read back strictly (every tensor present, finite, floating
point and of consistent shapes; anything else is a
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

import torch
from safetensors.torch import save_file
from torch import Tensor

from condimmune.core.errors import UserError
from condimmune.core.user_files import read_tensor_file
from condimmune.linear.tasks import LinearTaskData, TaskKind, TaskSplit
from condimmune.linear.train import LinearModel

__all__ = ["read_run_files", "write_run_files"]


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


def write_run_files(
    directory: Path,
    data: LinearTaskData,
    model: LinearModel[Tensor],
    raw_model: LinearModel[Tensor],
) -> None:
    """The three safetensors files of a linear run (module docstring) into ``directory``."""
    save_file({"weight": model.weight.contiguous()}, directory / "extractor.safetensors")
    save_file(
        {"head": model.head.contiguous(), "bias": model.bias.reshape(1)},
        directory / "head.safetensors",
    )
    save_file(
        {
            "benign_x": data.benign.x_train.contiguous(),
            "harmful_x": data.harmful.x_train.contiguous(),
            "benign_y": data.benign.y_train.contiguous(),
            "harmful_y": data.harmful.y_train.contiguous(),
            "benign_x_test": data.benign.x_test.contiguous(),
            "benign_y_test": data.benign.y_test.contiguous(),
            "raw_head": raw_model.head.contiguous(),
            "raw_bias": raw_model.bias.reshape(1),
        },
        directory / "data.safetensors",
    )


def read_run_files(
    run_dir: Path, kind: TaskKind, fix: str
) -> tuple[LinearTaskData, LinearModel[Tensor], LinearModel[Tensor]]:
    """``(data, immunized model, raw model)`` of a linear run directory, read strictly."""
    tensors = _read_run_tensors(run_dir, fix)
    weight = tensors["weight"]
    empty = torch.zeros(0, dtype=torch.float64)
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
    raw_model = LinearModel(
        weight=torch.eye(weight.shape[1], dtype=weight.dtype),
        head=tensors["raw_head"],
        bias=tensors["raw_bias"][0],
    )
    return data, model, raw_model
