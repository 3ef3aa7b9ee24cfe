"""The attack surface of a released deep model: what the deep attack suite
(:mod:`condimmune.attacks.deep_suite`) gets from a :class:`~condimmune.deep.backbones.DeepModel`.

Every body is split into a frozen prefix and the immunized suffix
(:mod:`condimmune.deep.bodies`):

* the **prefix** activations (images → what enters the immunized blocks) are computed once
  per image and cached; they are identical for θ0 and θ_I whenever the frozen parameters
  are (:func:`same_prefix`), so the runner computes them once;
* :class:`ImmunizedBlocks` maps them to the released features: ``body.suffix(a) @ Tᵀ``,
  with ``T`` the model's feature map (a buffer; re-initialising the blocks resets it to
  the identity).

``ImmunizedBlocks(prefix(x)) == model.features(x)``. The skip probe sees the prefix
activations average-pooled to at most ``skip_dims`` values per image: a ``C × H × W`` map
is pooled to ``C × s × s`` with the largest ``s ≤ H`` such that ``C s² ≤ skip_dims``
(at least ``1 × 1``); token sequences ``N × D`` are averaged over the tokens. The tap
probe sees the pooled activations of every tap of the body (:mod:`condimmune.deep.taps`),
concatenated: those inside the prefix from one pass of the images through it (or read from
a model with the same prefix), those after it from the prefix activations; each image
passes through a frozen prefix once per attack.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from condimmune.attacks.cost import forward_flops
from condimmune.attacks.deep_cost import ExtractionFlops
from condimmune.attacks.deep_suite import ReleasedModel, Task
from condimmune.attacks.deep_train import TaskTensors
from condimmune.deep.backbones import DeepModel
from condimmune.deep.bodies import SplitBody
from condimmune.deep.taps import record_taps
from condimmune.methods.tap_adversary import pool_activations

__all__ = [
    "ImmunizedBlocks",
    "TaskImages",
    "extraction_flops",
    "prefix_tensors",
    "released_model",
    "same_prefix",
    "stacked_prefix",
    "task_images",
]


@dataclass(frozen=True)
class TaskImages:
    """One task's training and held-out images (eval transforms) and its classes."""

    train: Dataset[tuple[Tensor, Tensor]]
    test: Dataset[tuple[Tensor, Tensor]]
    classes: int


class ImmunizedBlocks(nn.Module):
    """The immunized part of a model: prefix activations ``a`` → ``body.suffix(a) @ Tᵀ``.

    It holds the whole body (the prefix's parameters get no gradient); ``reset_parameters``
    sets ``T`` to the identity, so an attacker who re-initialises the blocks discards the
    feature map as well."""

    feature_map: Tensor

    def __init__(self, body: SplitBody, feature_map: Tensor) -> None:
        super().__init__()
        self.body = body
        self.register_buffer("feature_map", feature_map.detach().clone())

    def forward(self, a: Tensor) -> Tensor:
        out: Tensor = self.body.suffix(a) @ self.feature_map.mT
        return out

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.feature_map.copy_(torch.eye(self.feature_map.shape[0]))


class _Features(nn.Module):
    """Images → ``model.features(x)``: every parameter of the model (full fine-tuning)."""

    def __init__(self, model: DeepModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model.features(x)


def same_prefix(a: DeepModel, b: DeepModel) -> bool:
    """Whether the frozen prefix of ``a`` and ``b`` hold the same parameters and buffers."""
    sa, sb = a.state_dict(), b.state_dict()
    frozen = [k for k in sa if k.startswith("body.") and not k.startswith(a.trainable_prefixes)]
    return all(k in sb and torch.equal(sa[k], sb[k]) for k in frozen)


@torch.no_grad()
def _stack(
    data: Dataset[tuple[Tensor, Tensor]],
    batch: int,
    run: Callable[[Tensor], Tensor] | None,
    keep_images: bool,
) -> tuple[Tensor | None, Tensor | None, Tensor]:
    """``(images or None, run(images) or None, labels)`` of ``data``, in order."""
    images, outputs, labels = [], [], []
    for x, y in DataLoader(data, batch_size=batch, shuffle=False):
        if keep_images:
            images.append(x)
        if run is not None:
            outputs.append(run(x))
        labels.append(y)
    return (
        torch.cat(images) if keep_images else None,
        torch.cat(outputs) if run is not None else None,
        torch.cat(labels),
    )


def _stack_tasks(
    tasks: Mapping[Task, TaskImages],
    batch_size: int,
    run: Callable[[Tensor], Tensor] | None,
    keep_images: bool,
) -> tuple[dict[Task, TaskTensors], dict[Task, TaskTensors]]:
    """Each task's ``run`` outputs (empty without ``run``) and images (empty without
    ``keep_images``), with its labels."""
    outputs: dict[Task, TaskTensors] = {}
    images: dict[Task, TaskTensors] = {}
    for task, split in tasks.items():
        xi, ai, yi = _stack(split.train, batch_size, run, keep_images)
        xt, at, yt = _stack(split.test, batch_size, run, keep_images)
        if ai is not None and at is not None:
            outputs[task] = TaskTensors(ai, yi, at, yt, split.classes)
        if xi is not None and xt is not None:
            images[task] = TaskTensors(xi, yi, xt, yt, split.classes)
    return outputs, images


def prefix_tensors(
    model: DeepModel,
    tasks: Mapping[Task, TaskImages],
    *,
    batch_size: int = 256,
    keep_images: bool = False,
    prefix_inputs: bool = False,
) -> tuple[dict[Task, TaskTensors], dict[Task, TaskTensors] | None]:
    """Each task's prefix activations (and, with ``keep_images``, its images). With
    ``prefix_inputs`` the datasets already hold prefix outputs (a run's prefix cache,
    :mod:`condimmune.deep.prefix`), so they are only stacked."""
    if keep_images and prefix_inputs:
        raise ValueError("datasets of prefix outputs hold no images to keep")
    model.eval()
    run: Callable[[Tensor], Tensor] = (lambda x: x) if prefix_inputs else model.prefix
    acts, images = _stack_tasks(tasks, batch_size, run, keep_images)
    return acts, (images if keep_images else None)


def task_images(
    tasks: Mapping[Task, TaskImages], *, batch_size: int = 256
) -> dict[Task, TaskTensors]:
    """Each task's images and labels, stacked: what :func:`prefix_tensors` keeps with
    ``keep_images``, without passing them through a model."""
    return _stack_tasks(tasks, batch_size, None, True)[1]


@torch.no_grad()
def stacked_prefix(
    model: DeepModel, images: Mapping[Task, TaskTensors], *, batch_size: int = 256
) -> dict[Task, TaskTensors]:
    """Each task's prefix activations from its stacked images (:func:`task_images`), in
    the batches :func:`prefix_tensors` would use, so the values are the same."""
    model.eval()

    def run(x: Tensor) -> Tensor:
        step = batch_size
        return torch.cat([model.prefix(x[i : i + step]) for i in range(0, len(x), step)])

    return {
        t: TaskTensors(run(d.train_x), d.train_y, run(d.test_x), d.test_y, d.classes)
        for t, d in images.items()
    }


def released_model(
    model: DeepModel,
    prefix: Mapping[Task, TaskTensors],
    images: Mapping[Task, TaskTensors] | None = None,
    *,
    batch_size: int = 256,
    skip_dims: int = 2048,
    taps: bool = True,
    like: ReleasedModel | None = None,
) -> ReleasedModel:
    """What the deep suite attacks in ``model``, from its tasks' prefix activations
    (:func:`prefix_tensors`); the modules are copies, so attacks never touch ``model``.
    Without ``images`` the full fine-tuning attacker cannot run. ``taps=False`` leaves
    :attr:`ReleasedModel.taps` out (a forward pass of every image through the prefix: only
    the tap probe reads them, :func:`~condimmune.attacks.deep_inputs.reads_taps`).
    ``like``: the released form of a model with the same frozen prefix (:func:`same_prefix`,
    the caller's to check); the taps inside the prefix are read from its taps instead of
    passing the images through the prefix again."""
    if skip_dims < 1:
        raise ValueError(f"skip_dims must be ≥ 1, got {skip_dims}")
    model.eval()
    blocks = _trainable_copy(ImmunizedBlocks(model.body, model.feature_map))
    blocks.eval()
    features: dict[Task, TaskTensors] = {}
    skip: dict[Task, TaskTensors] = {}
    for task, t in prefix.items():
        with torch.no_grad():
            f_train, f_test = (
                torch.cat([blocks(a[i : i + batch_size]) for i in range(0, a.shape[0], batch_size)])
                for a in (t.train_x, t.test_x)
            )
        features[task] = TaskTensors(
            f_train.double(), t.train_y, f_test.double(), t.test_y, t.classes
        )
        skip[task] = TaskTensors(
            pool_activations(t.train_x, skip_dims).double(),
            t.train_y,
            pool_activations(t.test_x, skip_dims).double(),
            t.test_y,
            t.classes,
        )
    return ReleasedModel(
        taps=(
            _taps(model, images, prefix, batch_size, like.taps if like is not None else None)
            if taps and images is not None and model.body.TAPS
            else None
        ),
        features=features,
        feature_dim=model.feature_dim,
        skip=skip,
        prefix=dict(prefix),
        images=dict(images) if images is not None else None,
        blocks=blocks,
        network=_trainable_copy(_Features(model)) if images is not None else None,
        extraction=None if images is None else extraction_flops(model, blocks, images),
        network_taps=tuple((t, f"model.body.{t}") for t in model.body.TAPS),
    )


def _taps(
    model: DeepModel,
    images: Mapping[Task, TaskTensors],
    prefix: Mapping[Task, TaskTensors],
    batch_size: int,
    shared: Mapping[Task, TaskTensors] | None,
) -> dict[Task, TaskTensors]:
    """Each task's pooled tap activations, concatenated over the taps in depth order
    (float64). The taps after the prefix are read from the prefix activations through the
    suffix; those inside it from the images through the prefix, or, with ``shared`` (the
    taps of a model with the same frozen prefix), from its first columns."""

    def tapped(run: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
        rows = []
        with torch.no_grad(), record_taps(model) as taps:
            for i in range(0, x.shape[0], batch_size):
                taps.clear()
                batch = x[i : i + batch_size]
                run(batch)
                pooled = [pool_activations(t) for t in taps]
                rows.append(torch.cat(pooled, dim=1) if pooled else batch.new_zeros(len(batch), 0))
        return torch.cat(rows).double()

    body = model.body
    if shared is not None:  # the columns of the taps inside the prefix, from one image
        width = tapped(body.prefix, next(iter(images.values())).train_x[:1]).shape[1]

    def both(task: Task, which: int) -> Tensor:
        x = (images[task].train_x, images[task].test_x)[which]
        a = (prefix[task].train_x, prefix[task].test_x)[which]
        if shared is None:
            inside = tapped(body.prefix, x)
        else:
            inside = (shared[task].train_x, shared[task].test_x)[which][:, :width]
        return torch.cat([inside, tapped(body.suffix, a)], dim=1)

    return {
        task: TaskTensors(both(task, 0), t.train_y, both(task, 1), t.test_y, t.classes)
        for task, t in images.items()
    }


def extraction_flops(
    model: DeepModel, blocks: nn.Module, images: Mapping[Task, TaskTensors]
) -> ExtractionFlops:
    """FLOPs per image of ``model``'s frozen prefix and of its immunized ``blocks``
    (FlopCounterMode on one image of the first task, in eval mode)."""
    one = next(iter(images.values())).train_x[:1]
    model.eval()
    with torch.no_grad():
        activations = model.prefix(one)
    return ExtractionFlops(
        float(forward_flops(model.prefix, one)), float(forward_flops(blocks, activations))
    )


def _trainable_copy(module: nn.Module) -> nn.Module:
    """A deep copy with every parameter trainable (the attacker trains what it wants)."""
    out = copy.deepcopy(module)
    for p in out.parameters():
        p.requires_grad_(True)
    return out
