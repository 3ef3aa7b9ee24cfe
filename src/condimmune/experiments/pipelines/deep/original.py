"""θ0 of a deep run and the data it is trained on: weights, pre-training, the frozen prefix
cache, and the benign head.

In order: build the backbone from ``model.weights`` (a file, ``imagenet`` = the installed
MobileNetV2 checkpoint through its verified safetensors copy, or a seeded random init);
pre-train it in the run (``train.pretrain_epochs``); with ``model.cache_prefix`` replace
every image by its frozen prefix's output, computed once (:mod:`condimmune.deep.prefix`) and
switch the model to read those; fit its head on the benign features
(``train.fit_head_steps``).

θ0 is saved beside the checkpoints (``<run dir>.checkpoints/original.safetensors``), tagged
with :func:`original_fingerprint` (the experiment, the seed, the model, the data and the
θ0 options, and the weights file's size and time), so a resumed run restarts from the very
same model; one saved under another fingerprint is refused with a message, never reused.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from condimmune._files import replace_atomically
from condimmune.core.errors import UserError
from condimmune.core.user_files import read_tensor_file
from condimmune.deep.backbones import DeepModel, build_model
from condimmune.deep.batches import Batch
from condimmune.deep.evaluate import extract_features
from condimmune.deep.head import fit_linear_head
from condimmune.deep.images import ImageSplit, KeyedDataset
from condimmune.deep.prefix import prefix_dataset
from condimmune.deep.pretrained import MOBILENET_V2_IMAGENET, cached_weights
from condimmune.deep.trainer import pretrain
from condimmune.experiments.pipelines.deep.data import DeepTaskData, load_deep_data
from condimmune.experiments.pipelines.deep.options import DeepRunOptions
from condimmune.experiments.plan import RunPlan, fingerprint

__all__ = [
    "DeepSetup",
    "original_fingerprint",
    "prefix_device",
    "prefix_outputs",
    "prepare_original",
    "state_tensors",
    "warm_prefix_cache",
]

IMAGENET_WEIGHTS = "imagenet"
"""``model.weights`` value naming the installed ImageNet checkpoint (mobilenet-v2)."""


@dataclass(frozen=True)
class DeepSetup:
    """θ0, the data as the run's steps read it, θ0's pre-training losses and the seconds
    spent on the frozen prefix (``None`` without ``model.cache_prefix``)."""

    original: DeepModel
    data: DeepTaskData
    pretrain_losses: list[float]
    prefix_seconds: float | None


def state_tensors(model: DeepModel) -> dict[str, torch.Tensor]:
    """The model's state as contiguous CPU tensors, as safetensors wants them."""
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def _weights(options: DeepRunOptions) -> str | None:
    model = options.model
    if model.weights == IMAGENET_WEIGHTS:
        return str(cached_weights(MOBILENET_V2_IMAGENET, model.cache_dir))
    return model.weights


def original_fingerprint(plan: RunPlan[DeepRunOptions]) -> str:
    """The fingerprint of what θ0 depends on (module docstring): not the cache location nor
    the data loader's processes, which change where or how fast θ0 is computed."""
    options = plan.options
    parts: dict[str, Any] = {
        "experiment": plan.name,
        "seed": plan.seed,
        "model": {**dataclasses.asdict(options.model), "cache_dir": None},
        "data": options.data.identity(),
        "pretrain": dataclasses.asdict(options.pretrain),
    }
    weights = options.model.weights
    if weights is not None and os.path.isfile(os.path.expanduser(weights)):
        stat = os.stat(os.path.expanduser(weights))
        parts["weights_file"] = [stat.st_size, stat.st_mtime_ns]
    return fingerprint(parts)


def _save_original(
    path: Path, tensors: dict[str, Tensor], tag: str, pretrain_losses: list[float]
) -> None:
    """θ0 with its fingerprint and its pre-training losses (a resumed run reports them)."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"fingerprint": tag, "pretrain_losses": json.dumps(pretrain_losses)}
    replace_atomically(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def _load_original(path: Path, tag: str) -> tuple[dict[str, Tensor], list[float]]:
    folder = path.parent
    fix = (
        f"delete {folder} to start the run over, or rerun with the configuration of the "
        "interrupted run"
    )
    saved = read_tensor_file(path, fix=f"delete {folder} to start the run over")
    if saved.metadata.get("fingerprint") != tag:
        raise UserError(
            "θ0 was saved by an interrupted run with another configuration (model, data, seed "
            "or train.pretrain_*/fit_head_* differ)",
            path,
            fix,
        )
    try:
        losses = [float(v) for v in json.loads(saved.metadata.get("pretrain_losses", "[]"))]
    except (ValueError, TypeError):
        raise UserError("θ0's recorded pre-training losses are damaged", path, fix) from None
    return saved.tensors, losses


def _cached_data(
    model: DeepModel,
    data: DeepTaskData,
    options: DeepRunOptions,
    progress: bool,
    local_rank: int = 0,
) -> DeepTaskData:
    """Every dataset of the run replaced by its frozen prefix's outputs (each distinct
    dataset once; training and eval views of the same images are one dataset here)."""
    done: dict[int, KeyedDataset] = {}
    device = prefix_device(options, local_rank)
    model.to(device)

    def cached(ds: KeyedDataset) -> KeyedDataset:
        if id(ds) not in done:
            done[id(ds)] = prefix_dataset(
                model,
                ds,
                preprocessing=data.preprocessing,
                batch_size=options.evaluation.batch_size,
                device=device,
                cache_dir=options.model.cache_dir,
                progress=progress,
            )
        return done[id(ds)]

    def split(s: ImageSplit) -> ImageSplit:
        return replace(s, train=cached(s.train), test=cached(s.test))

    out = replace(
        data,
        benign=split(data.benign),
        harmful=split(data.harmful),
        benign_train_eval=cached(data.benign_train_eval),
        harmful_train_eval=cached(data.harmful_train_eval),
        harmful_defence=None if data.harmful_defence is None else cached(data.harmful_defence),
    )
    model.to("cpu")
    return out


def prefix_outputs(
    model: DeepModel, data: DeepTaskData, options: DeepRunOptions, progress: bool
) -> DeepTaskData:
    """The run's data as its steps read them with ``model.cache_prefix``: every image replaced
    by ``model``'s frozen prefix output, read from the prefix cache (computed if missing)."""
    return _cached_data(model, data, options, progress)


def prefix_device(options: DeepRunOptions, local_rank: int = 0) -> str:
    """The device the frozen prefix runs on: this process's GPU when training runs on GPUs
    (one per process under DDP, ``local_rank`` from Lightning), else the CPU."""
    accelerator = options.fabric.accelerator
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return f"cuda:{local_rank}" if gpu else "cpu"


def prepare_original(
    plan: RunPlan[DeepRunOptions],
    data: DeepTaskData,
    ckpt: Path | None,
    progress: bool,
    local_rank: int = 0,
) -> DeepSetup:
    """θ0 and the data its immunization reads (see the module docstring); ``local_rank``:
    this process's device index when training runs on several GPUs."""
    options = plan.options
    pre = options.pretrain
    fit_head = pre.fit_head_steps > 0
    model = build_model(
        options.model.backbone,
        num_classes=data.benign.num_classes,
        image_size=options.model.image_size,
        weights=_weights(options),
        seed=plan.seed,
        trainable_blocks=options.model.trainable_blocks,
        load_head=not fit_head,
        weights_key="model.weights",
    )
    saved = ckpt / "original.safetensors" if ckpt is not None else None
    resumed = saved is not None and saved.is_file()
    losses: list[float] = []
    tag = original_fingerprint(plan)
    if saved is not None and resumed:
        state, losses = _load_original(saved, tag)
        model.load_state_dict(state)
    elif pre.epochs:
        epochs = iter(range(1, pre.epochs + 1))  # pretrain asks for one bar per epoch

        def bar(it: Iterable[Batch]) -> Iterable[Batch]:
            desc = f"pre-train θ0 (epoch {next(epochs)}/{pre.epochs})"
            return tqdm(it, disable=not progress, desc=desc, leave=False)

        losses = pretrain(
            model,
            data.benign.train,
            epochs=pre.epochs,
            lr=pre.lr,
            batch_size=pre.batch_size,
            seed=plan.seed,
            progress=bar,
        )
    prefix_seconds = None
    if options.model.cache_prefix:
        start = time.perf_counter()
        data = _cached_data(model, data, options, progress, local_rank)
        model.read_prefix()
        prefix_seconds = time.perf_counter() - start
    if fit_head and not resumed:
        phi, _, labels = extract_features(
            model, data.benign_train_eval, batch_size=options.evaluation.batch_size
        )
        weight, bias = fit_linear_head(
            phi, labels, data.benign.num_classes, steps=pre.fit_head_steps
        )
        with torch.no_grad():
            model.head.weight.copy_(weight.to(model.head.weight.dtype))
            model.head.bias.copy_(bias.to(model.head.bias.dtype))
    if saved is not None and not resumed:
        _save_original(saved, state_tensors(model), tag, losses)
    return DeepSetup(model, data, losses, prefix_seconds)


def warm_prefix_cache(plan: RunPlan[DeepRunOptions], progress: bool) -> bool:
    """Fill the on-disk prefix cache for ``plan``'s data (runs in parallel then read it
    instead of computing the same prefixes at once). Only where the prefix is known before
    the run: ``model.cache_prefix`` without pre-training. Returns whether it did."""
    options = plan.options
    if not options.model.cache_prefix or options.pretrain.epochs:
        return False
    model = build_model(
        options.model.backbone,
        num_classes=1,
        image_size=options.model.image_size,
        weights=_weights(options),
        trainable_blocks=options.model.trainable_blocks,
        load_head=False,
        weights_key="model.weights",
    )
    data = load_deep_data(options.data, options.model, plan.seed)
    _cached_data(model, data, options, progress)
    return True
