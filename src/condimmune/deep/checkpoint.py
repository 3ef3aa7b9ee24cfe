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

__all__ = ["DeepHistory", "load_checkpoint", "save_checkpoint"]


@dataclass
class DeepHistory:
    """Per-step training record (task loss, log κ of the batch covariances, penalty)."""

    task_loss: list[float] = field(default_factory=list)
    penalty: list[float] = field(default_factory=list)
    log_kappa_benign: list[float] = field(default_factory=list)
    log_kappa_harmful: list[float] = field(default_factory=list)
    rank_deficient_steps: int = 0
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
    from safetensors import safe_open

    path = directory / _STATE_FILE
    if not path.is_file():
        return None
    with safe_open(path, framework="pt") as f:
        meta = f.metadata()
        if meta.get("fingerprint") != fingerprint:
            raise ValueError(
                f"{path} was written by a run with a different configuration; delete "
                f"{directory} or choose another output directory"
            )
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open API
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
