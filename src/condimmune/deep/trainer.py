"""Training a deep backbone's last blocks: θ0 pre-training and the immunization loop.

The loop runs on Lightning Fabric (any accelerator, DDP across devices, mixed precision),
takes one :func:`~condimmune.deep.penalty.step_loss` per global batch, and saves a
safetensors checkpoint (:mod:`condimmune.deep.checkpoint`) every ``checkpoint_every``
steps and at each epoch end, so a killed run resumes with the same data order. Each step's
task loss, penalty and both batch log κ also go to Lightning's own loggers (CSV or
TensorBoard, :class:`FabricOptions`), so a long run can be watched while it trains.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Literal, Never, TypeAlias

import torch
import torch.nn.functional as F
from lightning.fabric import Fabric
from lightning.fabric.loggers.csv_logs import CSVLogger
from lightning.fabric.loggers.logger import Logger
from lightning.fabric.loggers.tensorboard import TensorBoardLogger
from torch import nn
from tqdm.auto import tqdm

from condimmune.core.errors import ArgumentError
from condimmune.deep.backbones import DeepModel
from condimmune.deep.batches import Batch, Batches, Stream, loader
from condimmune.deep.checkpoint import DeepHistory, load_checkpoint, save_checkpoint
from condimmune.deep.images import KeyedDataset
from condimmune.deep.penalty import StepOptions, step_loss
from condimmune.methods.base import ConfiguredMethod, ModelFamily, require_configured
from condimmune.methods.registry import Method, configure_method

__all__ = [
    "FabricOptions",
    "ImmunizeOptions",
    "Precision",
    "TrainLogger",
    "backward_and_step",
    "immunize",
    "make_fabric",
    "pretrain",
]


Precision: TypeAlias = Literal["32-true", "64-true", "16-mixed", "bf16-mixed"]


class TrainLogger(StrEnum):
    """Lightning's logger for the per-step training curves."""

    CSV = "csv"
    TENSORBOARD = "tensorboard"


@dataclass(frozen=True)
class FabricOptions:
    """Where training runs: Lightning Fabric's accelerator, devices, strategy, precision;
    and where the training curves are logged (``log_dir``; ``None`` = not logged)."""

    accelerator: str = "cpu"
    devices: int = 1
    strategy: str = "auto"
    precision: Precision = "32-true"
    logger: TrainLogger = TrainLogger.CSV
    log_dir: Path | None = None


def _condnum() -> ConfiguredMethod:
    return configure_method(Method.CONDNUM, ModelFamily.DEEP)


@dataclass(frozen=True)
class ImmunizeOptions:
    """The immunization loop: the method with its options
    (:func:`~condimmune.methods.registry.configure_method`), SGD settings (Nesterov
    momentum; weight decay on the head only, paper.md §5), the global ``batch_size``, a step
    cap (0 = none) and the checkpoint period."""

    method: ConfiguredMethod = field(default_factory=_condnum)
    epochs: int = 3
    batch_size: int = 64
    lr: float = 1e-5
    momentum: float = 0.9
    weight_decay: float = 2e-5
    label_smoothing: float = 0.1
    normalize_covariance: bool = False
    max_steps: int = 0
    checkpoint_every: int = 50

    def __post_init__(self) -> None:
        require_configured(self.method, ModelFamily.DEEP)

    def step_options(self) -> StepOptions:
        return StepOptions(self.method, self.label_smoothing, self.normalize_covariance)


# ------------------------------------------------------------------------------------- fabric
def make_fabric(cfg: FabricOptions) -> Fabric:
    """A Lightning Fabric for the configured accelerator, devices, strategy and precision."""
    accelerator = "cuda" if cfg.accelerator == "gpu" else cfg.accelerator
    strategy = cfg.strategy
    if strategy == "auto" and cfg.devices > 1:
        strategy = "ddp"
    return Fabric(
        accelerator=accelerator,
        devices=cfg.devices,
        strategy=strategy,
        precision=cfg.precision,
        loggers=_loggers(cfg),
    )


def release_processes(fabric: Fabric) -> None:
    """End a launched worker: wait for every process, then destroy the process group.

    A gloo process group left to the interpreter's exit can abort it ("terminate called
    without an active exception") while another rank is still writing; one process
    holds no group, so nothing happens there."""
    if fabric.world_size > 1 and torch.distributed.is_initialized():
        fabric.barrier()
        torch.distributed.destroy_process_group()


def _loggers(cfg: FabricOptions) -> list[Logger]:
    if cfg.log_dir is None:
        return []
    if cfg.logger is TrainLogger.CSV:
        return [CSVLogger(cfg.log_dir, name="csv", version="")]
    try:
        return [TensorBoardLogger(cfg.log_dir, name="tensorboard", version="")]
    except ModuleNotFoundError:
        raise ArgumentError(
            "{logger} = tensorboard needs the tensorboard package: pip install tensorboard"
        ) from None


def _optimizer(model: nn.Module, cfg: ImmunizeOptions) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum; weight decay on the head only (paper.md §5)."""
    head = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith("head.")]
    body = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("head.")]
    groups = [
        {"params": body, "weight_decay": 0.0},
        {"params": head, "weight_decay": cfg.weight_decay},
    ]
    return torch.optim.SGD(
        [g for g in groups if g["params"]],
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.momentum > 0,
    )


def pretrain(
    model: DeepModel,
    data: KeyedDataset,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    progress: Callable[[Iterable[Batch]], Iterable[Batch]] | None = None,
) -> list[float]:
    """Train every parameter on the benign task (Adam, cross-entropy): the model θ0 that is
    released before immunization. Returns the per-step losses."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses: list[float] = []
    model.train()
    for epoch in range(epochs):
        sampler = Batches(
            n=len(data),
            batch=batch_size,
            seed=seed,
            epoch=epoch,
            stream=Stream.PRETRAIN,
            steps=len(data) // batch_size,
        )
        batches = loader(data, sampler, 0)
        for x, y in progress(batches) if progress else batches:
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x)[1], y)
            torch.autograd.backward(loss)
            opt.step()
            losses.append(float(loss.detach()))
    model.eval()
    return losses


def immunize(
    fabric: Fabric,
    model: DeepModel,
    benign: KeyedDataset,
    harmful: KeyedDataset,
    cfg: ImmunizeOptions,
    *,
    harmful_classes: int,
    seed: int,
    checkpoint_dir: Path | None = None,
    fingerprint: str = "",
    progress: bool = True,
) -> DeepHistory:
    """Train the backbone's last blocks and head with :func:`step_loss` for ``cfg.epochs``.

    Every ``cfg.checkpoint_every`` steps and at each epoch end the model, the optimizer and
    the history are saved (safetensors) to ``checkpoint_dir``; if a checkpoint is already
    there, training continues from it with the same data order. The backbone stays in
    eval mode (frozen batch-norm statistics: the batches are small and mix two tasks).
    Returns the history; the trained weights are in ``model``.
    """
    model.freeze_for_immunization()
    model.eval()
    wrapped, optimizer = fabric.setup(model, _optimizer(model, cfg))
    history = DeepHistory()
    if checkpoint_dir is not None:  # after setup: state is loaded onto the model's device
        history = load_checkpoint(checkpoint_dir, model, optimizer, fingerprint) or history
    rank, world = fabric.global_rank, fabric.world_size
    steps = len(benign) // cfg.batch_size  # one epoch of the benign task; harmful batches cycle
    if steps < 1 or len(harmful) < cfg.batch_size:
        raise ArgumentError(
            "{batch_size} = {value} exceeds the data ({benign} benign, {harmful} harmful "
            "training samples)",
            value=cfg.batch_size,
            benign=len(benign),
            harmful=len(harmful),
        )
    step_options = cfg.step_options()
    total_cap = cfg.max_steps or math.inf
    bar = tqdm(
        total=cfg.epochs * steps,
        initial=history.epoch * steps + history.step_in_epoch,
        disable=not progress or rank != 0,
        desc=f"immunize ({cfg.method.name})",
        leave=False,
    )
    started = time.perf_counter() - history.seconds
    for epoch in range(history.epoch, cfg.epochs):
        start = history.step_in_epoch if epoch == history.epoch else 0
        b_loader, h_loader = (
            loader(
                data,
                Batches(
                    n=len(data),
                    batch=cfg.batch_size,
                    seed=seed,
                    epoch=epoch,
                    stream=stream,
                    steps=steps,
                    start=start,
                    rank=rank,
                    world=world,
                ),
                0,
            )
            for data, stream in ((benign, Stream.BENIGN), (harmful, Stream.HARMFUL))
        )
        for step, (b, h) in enumerate(zip(b_loader, h_loader, strict=True), start=start):
            if history.global_step >= total_cap:
                _finish(bar, fabric)
                return history
            b = tuple(t.to(fabric.device) for t in b)
            h = tuple(t.to(fabric.device) for t in h)
            optimizer.zero_grad(set_to_none=True)
            # the benign guard's ceiling: θ0's first batch κ (the method decides whether
            # to honour it: condnum's guard option)
            cap = history.log_kappa_benign[0] if history.log_kappa_benign else None
            loss, task, penalty = step_loss(
                fabric,
                wrapped,
                b,
                h,
                step_options,
                harmful_classes=harmful_classes,
                benign_log_kappa_cap=cap,
            )
            backward_and_step(fabric, optimizer, loss, history.global_step)
            history.task_loss.append(task)
            history.penalty.append(float(penalty.total.detach()))
            history.log_kappa_benign.append(penalty.log_kappa_benign)
            history.log_kappa_harmful.append(penalty.log_kappa_harmful)
            history.rank_deficient_steps += int(penalty.harmful_rank_deficient)
            history.epoch, history.step_in_epoch = epoch, step + 1
            history.seconds = time.perf_counter() - started
            fabric.log_dict(
                {
                    "task_loss": task,
                    "penalty": history.penalty[-1],
                    "log_kappa_benign": penalty.log_kappa_benign,
                    "log_kappa_harmful": penalty.log_kappa_harmful,
                },
                step=history.global_step,
            )
            bar.update(1)
            if checkpoint_dir is not None and history.global_step % cfg.checkpoint_every == 0:
                _checkpoint(fabric, checkpoint_dir, model, optimizer, history, fingerprint)
        history.epoch, history.step_in_epoch = epoch + 1, 0
        if checkpoint_dir is not None:
            _checkpoint(fabric, checkpoint_dir, model, optimizer, history, fingerprint)
    _finish(bar, fabric)
    return history


def backward_and_step(
    fabric: Fabric, optimizer: torch.optim.Optimizer, loss: torch.Tensor, step: int
) -> None:
    """One optimizer step on ``loss``; a non-finite loss (training diverged) is refused with
    the step and what to lower."""
    if not math.isfinite(float(loss.detach())):
        raise FloatingPointError(
            f"the immunization loss became {float(loss.detach())} at step {step}; lower the "
            "learning rate or the method's weights"
        )
    fabric.backward(loss)
    optimizer.step()


def _finish(bar: tqdm[Never], fabric: Fabric) -> None:
    """Close the progress bar and flush the loggers (the CSV logger writes every 100 steps)."""
    bar.close()
    for logger in fabric.loggers:
        logger.finalize("success")


def _checkpoint(
    fabric: Fabric,
    directory: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    history: DeepHistory,
    fingerprint: str,
) -> None:
    if fabric.global_rank == 0:
        save_checkpoint(directory, model, optimizer, history, fingerprint)
    fabric.barrier()
