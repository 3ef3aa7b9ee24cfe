"""Files a deep run keeps beside its run directory for a resume (``<run dir>.checkpoints/``),
each tagged with a fingerprint of the config parts it depends on.

θ0 (``original.safetensors``) depends on the experiment, the seed, the model (and the
weights file it starts from), the data and the ``train.pretrain_*``/``train.fit_head_*``
keys; the immunization checkpoint (:mod:`condimmune.deep.checkpoint`) on the whole config.
A file written under another fingerprint is refused with a message, never reused; files are
written to a temporary name and renamed.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from torch import Tensor

from condimmune._files import replace_atomically
from condimmune.core.errors import UserError
from condimmune.core.user_files import read_tensor_file
from condimmune.experiments.config import DeepExperimentConfig, config_to_dict

__all__ = ["load_original", "original_fingerprint", "save_original"]

_THETA0_TRAIN_KEYS = ("pretrain_", "fit_head")
_NOT_THETA0 = {"model": {"cache_dir"}, "data": {"num_workers"}}
"""Keys that change where or how fast θ0 is computed, not θ0 itself."""


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def original_fingerprint(config: DeepExperimentConfig) -> str:
    """The fingerprint of the config parts θ0 depends on (see the module docstring)."""
    full = config_to_dict(config)
    parts: dict[str, Any] = {"experiment": full["experiment"], "seed": full["seed"]}
    for section in ("model", "data"):
        parts[section] = {
            k: v for k, v in full[section].items() if k not in _NOT_THETA0.get(section, set())
        }
    parts["train"] = {k: v for k, v in full["train"].items() if k.startswith(_THETA0_TRAIN_KEYS)}
    weights = config.model.weights
    if weights is not None and os.path.isfile(os.path.expanduser(weights)):
        stat = os.stat(os.path.expanduser(weights))
        parts["weights_file"] = [stat.st_size, stat.st_mtime_ns]
    return _digest(parts)


def save_original(path: Path, tensors: dict[str, Tensor], fingerprint: str) -> None:
    """Write θ0's state with its fingerprint (temporary name, then renamed)."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    replace_atomically(
        path, lambda tmp: save_file(tensors, tmp, metadata={"fingerprint": fingerprint})
    )


def load_original(path: Path, fingerprint: str) -> dict[str, Tensor]:
    """θ0's state saved by :func:`save_original` under the same fingerprint; a damaged file
    or another fingerprint is a :class:`UserError` naming the file."""
    folder = path.parent
    fix = (
        f"delete {folder} to start the run over, or rerun with the configuration of the "
        "interrupted run"
    )
    saved = read_tensor_file(path, fix=f"delete {folder} to start the run over")
    if saved.metadata.get("fingerprint") != fingerprint:
        raise UserError(
            "θ0 was saved by an interrupted run with another configuration (model, data, seed "
            "or train.pretrain_*/fit_head_* differ)",
            path,
            fix,
        )
    return saved.tensors
