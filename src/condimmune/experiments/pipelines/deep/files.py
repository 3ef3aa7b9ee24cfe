"""The model files of a deep run directory: θ0 (``original.safetensors``) and θ_I
(``immunized.safetensors``), each the full state of a
:class:`~condimmune.deep.backbones.DeepModel` (backbone, feature map, head); and
``logs/``, the training curves Lightning's logger wrote."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from safetensors.torch import save_file

from condimmune.core.errors import UserError
from condimmune.core.user_files import read_tensor_file
from condimmune.deep.backbones import DeepModel, build_model
from condimmune.experiments.pipelines.deep.options import DeepRunOptions
from condimmune.experiments.pipelines.deep.original import state_tensors
from condimmune.experiments.plan import RunPlan

__all__ = ["MODEL_FILES", "load_model", "write_model_files"]

MODEL_FILES = ("original.safetensors", "immunized.safetensors")


def write_model_files(
    directory: Path, original: DeepModel, immunized: DeepModel, logs: Path | None
) -> None:
    """θ0, θ_I and (if there are any) the training logs into ``directory``."""
    if logs is not None and logs.is_dir():
        shutil.copytree(logs, directory / "logs")
    for name, model in zip(MODEL_FILES, (original, immunized), strict=True):
        save_file(state_tensors(model), directory / name)


def load_model(path: Path, plan: RunPlan[DeepRunOptions], fix: str) -> tuple[DeepModel, bytes]:
    """A model from a run's safetensors file (in eval mode), and the sha256 of its bytes; a
    file that is damaged or does not fit the run's model is a :class:`UserError` naming it."""
    state = read_tensor_file(path, fix=fix, required=("head.weight", "feature_map")).tensors
    options = plan.options.model
    model = build_model(
        options.backbone,
        num_classes=int(state["head.weight"].shape[0]),
        image_size=options.image_size,
        seed=plan.seed,
        trainable_blocks=options.trainable_blocks,
    )
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise UserError(f"does not fit the run's model ({exc})", path, fix) from None
    model.eval()
    return model, hashlib.sha256(path.read_bytes()).digest()
