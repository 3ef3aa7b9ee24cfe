"""Safetensors checkpoints of a deep immunization: model, optimizer state and history.

A checkpoint carries a fingerprint of the configuration it was written under; loading it
under another fingerprint is refused, never silently reused.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from condimmune._files import replace_atomically
from condimmune.core.errors import UserError
from condimmune.core.user_files import read_tensor_file

__all__ = ["DeepHistory", "load_checkpoint", "save_checkpoint"]


@dataclass
class DeepHistory:
    """Per-step training record (task loss, log κ of the batch covariances, penalty)."""

    task_loss: list[float] = field(default_factory=list)
    penalty: list[float] = field(default_factory=list)
    log_kappa_benign: list[float] = field(default_factory=list)
    log_kappa_harmful: list[float] = field(default_factory=list)
    rank_deficient_steps: int = 0
    tap_error: list[float] = field(default_factory=list)
    """``full-depth``: the tap adversaries' mean held-out error per step (Eq. F3)."""
    rollbacks: int = 0
    """``full-depth``: how often the guard rolled the network back (Eq. F5)."""
    epoch: int = 0
    step_in_epoch: int = 0
    resumed_from: int | None = None
    seconds: float = 0.0

    @property
    def global_step(self) -> int:
        return len(self.task_loss)


_STATE_FILE = "checkpoint.safetensors"


def save_checkpoint(
    directory: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    history: DeepHistory,
    fingerprint: str,
) -> None:
    """Model, optimizer state and history in one safetensors file, replaced atomically."""
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    for idx, state in opt["state"].items():
        for name, value in state.items():
            tensors[f"optim.{idx}.{name}"] = torch.as_tensor(value).cpu().contiguous()
    meta = {
        "fingerprint": fingerprint,
        "param_groups": json.dumps(opt["param_groups"]),
        "history": json.dumps(asdict(history)),
    }
    directory.mkdir(parents=True, exist_ok=True)
    replace_atomically(directory / _STATE_FILE, lambda p: save_file(tensors, p, metadata=meta))


def load_checkpoint(
    directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer, fingerprint: str
) -> DeepHistory | None:
    """Restore a checkpoint written by :func:`save_checkpoint`; ``None`` if there is none.

    Refuses a checkpoint of a different configuration (its fingerprint differs)."""
    path = directory / _STATE_FILE
    if not path.is_file():
        return None
    fix = f"delete {directory} to start the run over, or choose another output directory"
    saved = read_tensor_file(path, fix=fix, finite=False)
    meta, tensors = saved.metadata, saved.tensors
    if meta.get("fingerprint") != fingerprint:
        raise UserError("written by a run with a different configuration", path, fix)
    if not {"param_groups", "history"} <= set(meta):
        raise UserError("not a checkpoint of condimmune (metadata missing)", path, fix)
    own = model.state_dict()
    model.load_state_dict(
        {k[6:]: v.to(own[k[6:]].device) for k, v in tensors.items() if k.startswith("model.")}
    )
    state: dict[int, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})
    history = DeepHistory(**json.loads(meta["history"]))
    history.resumed_from = history.global_step
    return history
