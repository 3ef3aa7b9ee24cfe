"""θ0 of a deep run and the data it is trained on: weights, pre-training, the frozen prefix
cache, and the benign head.

In order: build the backbone from ``model.weights`` (a file, ``imagenet`` = the installed
MobileNetV2 checkpoint through its verified safetensors copy, or a seeded random init);
pre-train it in the run (``train.pretrain_epochs``); with ``model.cache_prefix`` replace
every image by its frozen prefix's output, computed once (:mod:`condimmune.deep.prefix`) and
switch the model to read those; fit its head on the benign features
(``train.fit_head_steps``). θ0 is saved beside the checkpoints, so a resumed run restarts
from the very same model.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from condimmune.deep.backbones import DeepModel, build_model
from condimmune.deep.evaluate import extract_features
from condimmune.deep.head import fit_linear_head
from condimmune.deep.images import ImageSplit, KeyedDataset
from condimmune.deep.prefix import prefix_dataset
from condimmune.deep.pretrained import MOBILENET_V2_IMAGENET, cached_weights
from condimmune.deep.trainer import Batch, pretrain
from condimmune.experiments.config import DeepExperimentConfig
from condimmune.experiments.deep_data import DeepTaskData, load_deep_data
from condimmune.experiments.run_cache import load_original, original_fingerprint, save_original

__all__ = ["DeepSetup", "cache_dir", "prepare_original", "state_tensors", "warm_prefix_cache"]

IMAGENET_WEIGHTS = "imagenet"
"""``model.weights`` value naming the installed ImageNet checkpoint (mobilenet-v2)."""


def cache_dir(config: DeepExperimentConfig) -> Path:
    """``model.cache_dir``, else ``$CONDIMMUNE_CACHE_DIR``, else ``$XDG_CACHE_HOME/condimmune``
    (``~/.cache/condimmune``)."""
    if config.model.cache_dir is not None:
        return Path(config.model.cache_dir).expanduser()
    if os.environ.get("CONDIMMUNE_CACHE_DIR"):
        return Path(os.environ["CONDIMMUNE_CACHE_DIR"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "condimmune"


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


def _weights(config: DeepExperimentConfig) -> str | None:
    if config.model.weights == IMAGENET_WEIGHTS:
        return str(cached_weights(MOBILENET_V2_IMAGENET, cache_dir(config)))
    return config.model.weights


def _cached_data(
    model: DeepModel, data: DeepTaskData, config: DeepExperimentConfig, progress: bool
) -> DeepTaskData:
    """Every dataset of the run replaced by its frozen prefix's outputs (each distinct
    dataset once; training and eval views of the same images are one dataset here)."""
    done: dict[int, KeyedDataset] = {}
    device = _prefix_device(config)
    model.to(device)

    def cached(ds: KeyedDataset) -> KeyedDataset:
        if id(ds) not in done:
            done[id(ds)] = prefix_dataset(
                model,
                ds,
                preprocessing=data.preprocessing,
                batch_size=config.eval.batch_size,
                device=device,
                cache_dir=cache_dir(config),
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
    )
    model.to("cpu")
    return out


def _prefix_device(config: DeepExperimentConfig) -> str:
    """This process's GPU when training runs on GPUs (one per process under DDP), else CPU."""
    gpu = config.train.accelerator in ("gpu", "cuda") or (
        config.train.accelerator == "auto" and torch.cuda.is_available()
    )
    return f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if gpu else "cpu"


def prepare_original(
    config: DeepExperimentConfig, data: DeepTaskData, ckpt: Path | None, progress: bool
) -> DeepSetup:
    """θ0 and the data its immunization reads (see the module docstring)."""
    fit_head = config.train.fit_head_steps > 0
    model = build_model(
        config.model.backbone,
        num_classes=data.benign.num_classes,
        image_size=config.model.image_size,
        weights=_weights(config),
        seed=config.seed,
        trainable_blocks=config.model.trainable_blocks,
        load_head=not fit_head,
    )
    saved = ckpt / "original.safetensors" if ckpt is not None else None
    resumed = saved is not None and saved.is_file()
    losses: list[float] = []
    if saved is not None and resumed:
        model.load_state_dict(load_original(saved, original_fingerprint(config)))
    elif config.train.pretrain_epochs:

        def bar(it: Iterable[Batch]) -> Iterable[Batch]:
            return tqdm(it, disable=not progress, desc="pre-train θ0", leave=False)

        losses = pretrain(
            model,
            data.benign.train,
            epochs=config.train.pretrain_epochs,
            lr=config.train.pretrain_lr,
            batch_size=config.train.pretrain_batch_size,
            seed=config.seed,
            progress=bar,
        )
    prefix_seconds = None
    if config.model.cache_prefix:
        start = time.perf_counter()
        data = _cached_data(model, data, config, progress)
        model.read_prefix()
        prefix_seconds = time.perf_counter() - start
    if fit_head and not resumed:
        phi, _, labels = extract_features(
            model, data.benign_train_eval, batch_size=config.eval.batch_size
        )
        weight, bias = fit_linear_head(
            phi, labels, data.benign.num_classes, steps=config.train.fit_head_steps
        )
        with torch.no_grad():
            model.head.weight.copy_(weight.to(model.head.weight.dtype))
            model.head.bias.copy_(bias.to(model.head.bias.dtype))
    if saved is not None and not resumed:
        save_original(saved, state_tensors(model), original_fingerprint(config))
    return DeepSetup(model, data, losses, prefix_seconds)


def warm_prefix_cache(config: DeepExperimentConfig, progress: bool) -> bool:
    """Fill the on-disk prefix cache for ``config``'s data (runs in parallel then read it
    instead of computing the same prefixes at once). Only where the prefix is known before
    the run: ``model.cache_prefix`` without pre-training. Returns whether it did."""
    if not config.model.cache_prefix or config.train.pretrain_epochs:
        return False
    model = build_model(
        config.model.backbone,
        num_classes=1,
        image_size=config.model.image_size,
        weights=_weights(config),
        trainable_blocks=config.model.trainable_blocks,
        load_head=False,
    )
    _cached_data(model, load_deep_data(config), config, progress)
    return True
