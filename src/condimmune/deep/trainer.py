r"""Immunizing a deep backbone: the regularized loss on gathered features, and its trainer.

The loss of one step (Alg. 1 for non-linear extractors, Eq. 13 of the paper) is

.. math::
    \mathcal L = \mathrm{CE}_{\text{smooth}}(\text{head}(f_\theta(X_P)), y_P)
      + \lambda_P R_{\text{well}}(S_P) + \lambda_H R_{\text{ill}}(S_H),
    \qquad S = \Phi^\top\Phi,\ \Phi = f_\theta(X)

with the covariances of the **global** batch: under data-parallel training every process
gathers the features of all processes (with gradients) before forming ``S``, so the
regularizers see the same matrix as one process on the concatenated batch. With ``n``
gathered rows and ``k`` features, ``n < k`` is the normal case (64 × 512 for ResNet18,
32 × 768 for ViT-B/16): ``S`` is then rank-deficient, both regularizers are evaluated on
the ``n × n`` Gram matrix ``ΦΦᵀ`` (same non-zero spectrum), and ``R_ill`` takes σ_min over
the non-zero spectrum with the relative threshold (the core library's rule, here with
``rank_deficiency="allow"`` because the deficiency is structural; docs/deep.md).
The spectral parts always run in float64 with autocast off, whatever the training precision.

Baselines on the same features: ``r-ill-only`` (drop R_well), ``opt-kappa``
(``λ_P log κ(S_P) − λ_H log κ(S_H)`` through eigenvalue gradients), ``imma`` (maximise the
harmful probing loss after an unrolled simulated attack) and ``none`` (task loss only).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from condimmune.core._choices import parse_choice
from condimmune.experiments.rundir import replace_atomically
from condimmune.experiments.config import DeepTrainConfig, Method
from condimmune.core.regularizers import r_ill_features, r_well_features
from condimmune.core.spectral import log_condition_number_features

__all__ = [
    "DeepHistory",
    "PenaltyTerms",
    "immunization_penalty",
    "immunize",
    "make_fabric",
    "normalized_features",
    "pretrain",
    "step_loss",
]


def normalized_features(phi: Tensor) -> Tensor:
    r"""``Φ · sqrt(k / ‖Φ‖_F²)``: its covariance is ``S · k / tr S`` (mean eigenvalue 1).

    κ is scale-free, but the regularizers are not (``R_well`` grows like scale⁴, ``R_ill``
    shrinks like scale⁻⁴), so raw regularizers can be lowered by rescaling the features
    without changing κ; normalised ones cannot.
    """
    return phi * math.sqrt(phi.shape[1]) / torch.linalg.vector_norm(phi)


@dataclass(frozen=True)
class PenaltyTerms:
    """The regularization added to the task loss, and what it saw (for the history)."""

    total: Tensor
    log_kappa_benign: float
    log_kappa_harmful: float
    harmful_rank_deficient: bool


def _imma_penalty(phi: Tensor, y: Tensor, num_classes: int, steps: int) -> Tensor:
    """Minus the harmful squared probing loss after ``steps`` unrolled GD steps (step 1/L)
    from ``w = 0`` on one-hot targets: minimising it makes the simulated attack fail."""
    target = F.one_hot(y, num_classes).to(phi.dtype)
    target = target - target.mean(dim=0)
    n = phi.shape[0]
    lipschitz = 2.0 / n * torch.linalg.matrix_norm(phi, ord=2) ** 2
    w = torch.zeros(phi.shape[1], num_classes, dtype=phi.dtype, device=phi.device)
    for _ in range(steps):
        w = w - (2.0 / n) * phi.mT @ (phi @ w - target) / lipschitz
    return -((phi @ w - target) ** 2).sum() / n


def immunization_penalty(
    method: Method | str,
    benign: Tensor,
    harmful: Tensor,
    cfg: DeepTrainConfig,
    *,
    harmful_labels: Tensor | None = None,
    harmful_classes: int = 0,
    benign_log_kappa_cap: float | None = None,
) -> PenaltyTerms:
    r"""``λ_P R_well(S_P) + λ_H R_ill(S_H)`` (Eq. 3, 12, 13) or a baseline's term, in float64.

    ``benign`` and ``harmful`` are the (gathered) feature batches ``n × k``. With
    ``benign_log_kappa_cap``, the harmful term is left out of this step while the benign
    batch's log κ exceeds the cap (the guard of Def. 3.1 (b), as for linear extractors).
    """
    method = parse_choice(Method, method, "method")
    if not (bool(torch.isfinite(benign).all()) and bool(torch.isfinite(harmful).all())):
        raise FloatingPointError(
            "the features contain NaN or Inf (training diverged); lower train.lr or the "
            "regularizer weights"
        )
    device_type = benign.device.type
    with torch.autocast(device_type=device_type, enabled=False):
        pb, ph = benign.to(torch.float64), harmful.to(torch.float64)
        if cfg.normalize_covariance:
            pb, ph = normalized_features(pb), normalized_features(ph)
        with torch.no_grad():
            log_kb = float(log_condition_number_features(pb.detach()))
            log_kh = float(log_condition_number_features(ph.detach()))
        deficient = min(ph.shape) < ph.shape[1]
        zero = pb.new_zeros(())
        harmful_on = benign_log_kappa_cap is None or log_kb <= benign_log_kappa_cap
        if method is Method.CONDNUM:
            total = cfg.benign_weight * r_well_features(pb)
            if harmful_on:
                total = total + cfg.harmful_weight * r_ill_features(ph, rank_deficiency="allow")
        elif method is Method.R_ILL_ONLY:
            total = cfg.harmful_weight * r_ill_features(ph, rank_deficiency="allow")
        elif method is Method.OPT_KAPPA:
            total = cfg.opt_kappa_weight * (
                log_condition_number_features(pb) - log_condition_number_features(ph)
            )
        elif method is Method.IMMA:
            if harmful_labels is None or harmful_classes < 2:
                raise ValueError("imma needs the harmful labels and their number of classes")
            total = cfg.imma_weight * _imma_penalty(
                ph, harmful_labels, harmful_classes, cfg.imma_inner_steps
            )
        else:
            total = zero
    return PenaltyTerms(total, log_kb, log_kh, deficient)


def _gather(fabric, x: Tensor) -> Tensor:
    """All processes' rows, in rank order, with gradients flowing back to each process."""
    if fabric is None or fabric.world_size == 1:
        return x
    return fabric.all_gather(x, sync_grads=True).reshape(-1, *x.shape[1:])


def step_loss(
    fabric,
    model: nn.Module,
    benign: tuple[Tensor, Tensor],
    harmful: tuple[Tensor, Tensor],
    cfg: DeepTrainConfig,
    *,
    harmful_classes: int,
    benign_log_kappa_cap: float | None = None,
) -> tuple[Tensor, float, PenaltyTerms]:
    """One step's loss on this process's share of the global batch: ``(loss, task, penalty)``.

    One forward pass on the concatenated benign and harmful images (DDP sees exactly one).
    The task loss is this share's mean (DDP averages it over processes); the penalty is
    evaluated on the gathered global batch, identically on every process: the all-gather's
    backward sums the processes' gradients, and DDP's averaging then yields exactly the
    single-process gradient.
    """
    (xb, yb), (xh, yh) = benign, harmful
    features, logits = model(torch.cat([xb, xh]))
    nb = xb.shape[0]
    task = F.cross_entropy(logits[:nb], yb, label_smoothing=cfg.label_smoothing)
    penalty = immunization_penalty(
        cfg.method,
        _gather(fabric, features[:nb]),
        _gather(fabric, features[nb:]),
        cfg,
        harmful_labels=_gather(fabric, yh),
        harmful_classes=harmful_classes,
        benign_log_kappa_cap=benign_log_kappa_cap,
    )
    return task + penalty.total.to(task.dtype), float(task.detach()), penalty


# ------------------------------------------------------------------------------------ batches
def epoch_order(n: int, seed: int, epoch: int, stream: int) -> Tensor:
    """The permutation of ``n`` samples used in ``epoch`` (``stream`` 0 benign, 1 harmful)."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch * 7 + stream)
    return torch.randperm(n, generator=gen)


class _Batches:
    """Batch sampler of this process's share of each global batch, keyed ``(epoch, index)``;
    starts at ``start`` (resume) and drops the last incomplete global batch."""

    def __init__(
        self,
        n: int,
        batch: int,
        seed: int,
        epoch: int,
        stream: int,
        steps: int,
        start: int,
        rank: int,
        world: int,
    ) -> None:
        self.n, self.batch, self.seed, self.epoch, self.stream = n, batch, seed, epoch, stream
        self.steps, self.start, self.rank, self.world = steps, start, rank, world

    def __len__(self) -> int:
        return self.steps - self.start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        per_epoch = self.n // self.batch
        cached: tuple[int, Tensor] | None = None
        for step in range(self.start, self.steps):
            cycle, pos = divmod(step, per_epoch)  # the harmful stream may wrap around
            if cached is None or cached[0] != cycle:
                cached = (
                    cycle,
                    epoch_order(self.n, self.seed, self.epoch * 1000 + cycle, self.stream),
                )
            order = cached[1]
            rows = order[pos * self.batch : (pos + 1) * self.batch][self.rank :: self.world]
            yield [(self.epoch, int(i)) for i in rows]


def _loader(dataset: Dataset, sampler: _Batches, workers: int) -> DataLoader:
    return DataLoader(dataset, batch_sampler=sampler, num_workers=workers)


# -------------------------------------------------------------------------------- checkpoints
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
        "history": json.dumps(history.__dict__),
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


# ------------------------------------------------------------------------------------- fabric
def make_fabric(cfg: DeepTrainConfig):
    """A Lightning Fabric for the configured accelerator, devices, strategy and precision."""
    from lightning.fabric import Fabric

    accelerator = "cuda" if cfg.accelerator == "gpu" else cfg.accelerator
    strategy = cfg.strategy
    if strategy == "auto" and cfg.devices > 1:
        strategy = "ddp"
    return Fabric(
        accelerator=accelerator, devices=cfg.devices, strategy=strategy, precision=cfg.precision
    )


def _optimizer(model: nn.Module, cfg: DeepTrainConfig) -> torch.optim.Optimizer:
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
    model: nn.Module,
    data: Dataset,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    progress: Callable[[Iterator], Iterator] | None = None,
) -> list[float]:
    """Train every parameter on the benign task (Adam, cross-entropy): the model θ0 that is
    released before immunization. Returns the per-step losses."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses: list[float] = []
    model.train()
    for epoch in range(epochs):
        steps = len(data) // batch_size
        batches = _loader(data, _Batches(len(data), batch_size, seed, epoch, 2, steps, 0, 0, 1), 0)
        for x, y in progress(batches) if progress else batches:
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x)[1], y)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    model.eval()
    return losses


def immunize(
    fabric,
    model: nn.Module,
    benign: Dataset,
    harmful: Dataset,
    cfg: DeepTrainConfig,
    *,
    harmful_classes: int,
    seed: int,
    checkpoint_dir: Path | None = None,
    fingerprint: str = "",
    progress: bool = True,
    stop_after: int | None = None,
) -> DeepHistory:
    """Train the backbone's last blocks and head with :func:`step_loss` for ``cfg.epochs``.

    Every ``cfg.checkpoint_every`` steps and at each epoch end the model, the optimizer and
    the history are saved (safetensors) to ``checkpoint_dir``; if a checkpoint is already
    there, training continues from it with the same data order. The backbone stays in
    eval mode (frozen batch-norm statistics: the batches are small and mix two tasks).
    ``stop_after`` ends the call after that many steps of this call (tests use it to
    simulate a kill). Returns the history; the trained weights are in ``model``.
    """
    from tqdm.auto import tqdm

    model.freeze_for_immunization()
    model.eval()
    wrapped, optimizer = fabric.setup(model, _optimizer(model, cfg))
    history = DeepHistory()
    if checkpoint_dir is not None:  # after setup: state is loaded onto the model's device
        history = load_checkpoint(checkpoint_dir, model, optimizer, fingerprint) or history
    rank, world = fabric.global_rank, fabric.world_size
    steps = len(benign) // cfg.batch_size  # one epoch of the benign task; harmful batches cycle
    if steps < 1 or len(harmful) < cfg.batch_size:
        raise ValueError(
            f"train.batch_size={cfg.batch_size} exceeds the data ({len(benign)} benign, "
            f"{len(harmful)} harmful training samples)"
        )
    done_this_call = 0
    total_cap = cfg.max_steps or math.inf
    bar = tqdm(
        total=cfg.epochs * steps,
        initial=history.epoch * steps + history.step_in_epoch,
        disable=not progress or rank != 0,
        desc=f"immunize ({cfg.method})",
        leave=False,
    )
    started = time.perf_counter() - history.seconds
    for epoch in range(history.epoch, cfg.epochs):
        start = history.step_in_epoch if epoch == history.epoch else 0
        nb = cfg.batch_size
        b_loader = _loader(
            benign, _Batches(len(benign), nb, seed, epoch, 0, steps, start, rank, world), 0
        )
        h_loader = _loader(
            harmful, _Batches(len(harmful), nb, seed, epoch, 1, steps, start, rank, world), 0
        )
        for step, (b, h) in enumerate(zip(b_loader, h_loader, strict=True), start=start):
            if history.global_step >= total_cap or (
                stop_after is not None and done_this_call >= stop_after
            ):
                bar.close()
                return history
            b = tuple(t.to(fabric.device) for t in b)
            h = tuple(t.to(fabric.device) for t in h)
            optimizer.zero_grad(set_to_none=True)
            cap = (
                history.log_kappa_benign[0]
                if cfg.benign_guard and history.log_kappa_benign
                else None
            )
            loss, task, penalty = step_loss(
                fabric,
                wrapped,
                b,
                h,
                cfg,
                harmful_classes=harmful_classes,
                benign_log_kappa_cap=cap,
            )
            if not math.isfinite(float(loss.detach())):
                raise FloatingPointError(
                    f"the immunization loss became {float(loss.detach())} at step "
                    f"{history.global_step}; lower train.lr or the regularizer weights"
                )
            fabric.backward(loss)
            optimizer.step()
            history.task_loss.append(task)
            history.penalty.append(float(penalty.total.detach()))
            history.log_kappa_benign.append(penalty.log_kappa_benign)
            history.log_kappa_harmful.append(penalty.log_kappa_harmful)
            history.rank_deficient_steps += int(penalty.harmful_rank_deficient)
            history.epoch, history.step_in_epoch = epoch, step + 1
            history.seconds = time.perf_counter() - started
            done_this_call += 1
            bar.update(1)
            if checkpoint_dir is not None and history.global_step % cfg.checkpoint_every == 0:
                _checkpoint(fabric, checkpoint_dir, model, optimizer, history, fingerprint)
        history.epoch, history.step_in_epoch = epoch + 1, 0
        if checkpoint_dir is not None:
            _checkpoint(fabric, checkpoint_dir, model, optimizer, history, fingerprint)
    bar.close()
    return history


def _checkpoint(fabric, directory, model, optimizer, history, fingerprint) -> None:
    if fabric.global_rank == 0:
        save_checkpoint(directory, model, optimizer, history, fingerprint)
    fabric.barrier()
