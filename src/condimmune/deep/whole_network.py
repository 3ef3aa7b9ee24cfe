r"""The loop of a ``WHOLE_NETWORK`` method (``full-depth``): every parameter from the input,
Eq. F1–F5 of :mod:`condimmune.methods.full_depth`, asked of the method's
:class:`~condimmune.methods.base.WholeNetworkObjective` (the loop reads none of its options).

Each step takes one benign and one harmful minibatch (the harmful rows come from data the
attack suite never reads when the run reserves some, ``data.defence_per_class``), runs one
forward pass with the taps recorded (:mod:`condimmune.deep.taps`), and minimises

* the benign cross-entropy plus the objective's terms on the taps (anchor, tap adversaries,
  conditioning: Eq. F2, F3);
* on the steps the objective names, the suppression after a simulated attack (Eq. F4). Its
  first-order gradient ``g`` at θ' enters through the linear surrogate ``⟨g, θ⟩``, so
  Lightning's precision plugin scales it like every other term.

The outer optimizer is Adam on every parameter at ``lr``; batch norm keeps θ0's running
statistics in the outer pass (mixed batches of two tasks) and uses batch statistics in the
simulated attack, as a fine-tuning attacker would. The guard (Eq. F5) checks the benign
head's accuracy on up to :data:`GUARD_IMAGES` benign training images when the objective
says and after the last step. One process only: the simulated attacker's functional passes
bypass data parallelism. No checkpoints: a killed run starts again.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from lightning.fabric import Fabric
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from condimmune.core.errors import ArgumentError
from condimmune.core.spectral import log_condition_number_features
from condimmune.deep.backbones import DeepModel
from condimmune.deep.batches import Batch, Batches, Stream, loader
from condimmune.deep.checkpoint import DeepHistory
from condimmune.deep.images import KeyedDataset
from condimmune.deep.taps import record_taps
from condimmune.deep.trainer import ImmunizeOptions, backward_and_step
from condimmune.methods.base import DeepSolver, WholeNetworkObjective

__all__ = ["GUARD_IMAGES", "immunize_whole_network"]

GUARD_IMAGES = 512
"""Benign training images the guard scores (the first ones, in dataset order)."""

_Snapshot = tuple[dict[str, Tensor], dict[str, object]]


@dataclass(frozen=True)
class _Guard:
    x: Tensor
    y: Tensor
    original_accuracy: float

    def accuracy(self, model: DeepModel) -> float:
        with torch.no_grad():
            return float((model(self.x)[1].argmax(dim=1) == self.y).double().mean())


def _objective(
    fabric: Fabric, model: DeepModel, cfg: ImmunizeOptions, classes: int
) -> WholeNetworkObjective:
    deep = cfg.method.deep
    if deep.solver is not DeepSolver.WHOLE_NETWORK or deep.objective is None:
        raise ValueError(f"method {cfg.method.name!r} is not a whole-network method")
    if fabric.world_size > 1:
        raise ArgumentError(
            "{devices} = {value}: whole-network immunization runs on one device (its simulated "
            "attacker bypasses data parallelism); set it to 1",
            value=fabric.world_size,
        )
    if model.prefix_inputs:
        raise ArgumentError(
            "{cache_prefix} is on, but whole-network immunization trains every block from the "
            "images; turn it off"
        )
    return deep.objective(cfg.method.options, classes)


def _batches(
    data: KeyedDataset, stream: Stream, batch: int, steps: int, seed: int, epoch: int
) -> DataLoader[Batch]:
    """``steps`` minibatches of ``data`` (a smaller harmful set cycles, as in the trainer)."""
    order = Batches(n=len(data), batch=batch, seed=seed, epoch=epoch, stream=stream, steps=steps)
    return loader(data, order, 0)


def immunize_whole_network(
    fabric: Fabric,
    model: DeepModel,
    benign: KeyedDataset,
    harmful: KeyedDataset,
    guard: KeyedDataset,
    cfg: ImmunizeOptions,
    *,
    harmful_classes: int,
    seed: int,
    progress: bool = True,
) -> DeepHistory:
    """Train every parameter of ``model`` with Eq. F1 (the objective of ``cfg.method``) for
    ``cfg.epochs`` epochs of the benign task (harmful batches cycle), ``cfg.batch_size`` rows
    of each task per step, Adam at ``cfg.lr``. ``guard``: the benign images the guard
    scores. Returns the history; the trained weights are in ``model``."""
    objective = _objective(fabric, model, cfg, harmful_classes)
    steps = len(benign) // cfg.batch_size
    if steps < 1 or len(harmful) < cfg.batch_size or cfg.batch_size < 4:
        raise ArgumentError(
            "{batch_size} = {value} does not fit the data ({benign} benign, {harmful} harmful "
            "training samples; at least 4 rows per batch)",
            value=cfg.batch_size,
            benign=len(benign),
            harmful=len(harmful),
        )
    device = fabric.device
    model.to(device)
    original = copy.deepcopy(model).eval().requires_grad_(False)
    model.requires_grad_(True).eval()
    wrapped, optimizer = fabric.setup(model, torch.optim.Adam(model.parameters(), lr=cfg.lr))
    rows = range(min(GUARD_IMAGES, len(guard)))
    gx, gy = (torch.stack([guard[i][j] for i in rows]).to(device) for j in (0, 1))
    check = _Guard(gx, gy, _Guard(gx, gy, 0.0).accuracy(original))
    snapshot = (copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict()))
    generator = torch.Generator().manual_seed(seed)
    history = DeepHistory()
    total = cfg.epochs * steps if not cfg.max_steps else min(cfg.max_steps, cfg.epochs * steps)
    bar = tqdm(total=total, disable=not progress, desc="immunize (whole network)", leave=False)
    started = time.perf_counter()
    for epoch in range(cfg.epochs):
        pairs = zip(
            *(
                _batches(data, stream, cfg.batch_size, steps, seed, epoch)
                for data, stream in ((benign, Stream.BENIGN), (harmful, Stream.HARMFUL))
            ),
            strict=True,
        )
        for step, ((xb, yb), (xh, yh)) in enumerate(pairs):
            if history.global_step >= total:
                break
            xb, yb, xh, yh = (t.to(device) for t in (xb, yb, xh, yh))
            optimizer.zero_grad(set_to_none=True)
            with torch.no_grad(), record_taps(original) as original_taps:
                original(xb)
            with record_taps(model) as taps:
                features, logits = wrapped(torch.cat([xb, xh]))
            nb, half = xb.shape[0], xh.shape[0] // 2
            task = F.cross_entropy(logits[:nb], yb, label_smoothing=cfg.label_smoothing)
            terms, tap_error = objective.tap_terms(taps, original_taps, yh, nb)
            loss = task + terms.to(task.dtype)
            penalty = float(terms.detach())
            if objective.simulates_at(history.global_step):
                with fabric.autocast():
                    grads, suppression = objective.simulated_attack(
                        model, model.feature_dim, (xh[:half], yh[:half]), xh[half:], generator
                    )
                surrogate = sum(
                    (g.detach() * p).sum()
                    for n, p in model.named_parameters()
                    if (g := grads.get(n)) is not None
                )
                loss, penalty = loss + surrogate, penalty + suppression
            backward_and_step(fabric, optimizer, loss, history.global_step)
            with torch.no_grad():
                phi = features.detach().to(torch.float64)
                history.log_kappa_benign.append(float(log_condition_number_features(phi[:nb])))
                history.log_kappa_harmful.append(float(log_condition_number_features(phi[nb:])))
            history.task_loss.append(float(task.detach()))
            history.penalty.append(penalty)
            history.tap_error.append(tap_error)
            history.epoch, history.step_in_epoch = epoch, step + 1
            if objective.checks_at(history.global_step) or history.global_step == total:
                snapshot = _guard_step(model, optimizer, check, objective, snapshot, history)
            history.seconds = time.perf_counter() - started
            bar.update(1)
        history.epoch, history.step_in_epoch = epoch + 1, 0
    bar.close()
    model.eval()
    return history


def _guard_step(
    model: DeepModel,
    optimizer: torch.optim.Optimizer,
    check: _Guard,
    objective: WholeNetworkObjective,
    snapshot: _Snapshot,
    history: DeepHistory,
) -> _Snapshot:
    """Eq. F5: roll back to ``snapshot`` (halving the learning rate) or take a new one."""
    if objective.rolls_back(check.original_accuracy, check.accuracy(model)):
        lr = [group["lr"] for group in optimizer.param_groups]
        model.load_state_dict(snapshot[0])
        optimizer.load_state_dict(copy.deepcopy(snapshot[1]))
        for group, before in zip(optimizer.param_groups, lr, strict=True):
            group["lr"] = 0.5 * before
        history.rollbacks += 1
        return snapshot
    return copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())
