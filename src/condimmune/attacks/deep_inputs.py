"""What a deep attacker reads from a released model: :class:`ReleasedModel` (tensors and
modules per :class:`Task`) and, per attacker family, the data it trains on and the module
it fine-tunes (:func:`attacker_inputs`)."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

import torch
import torch.nn.functional as F
from torch import nn

from condimmune.attacks.deep_cost import ExtractionFlops
from condimmune.attacks.deep_train import TaskTensors, zero_head
from condimmune.attacks.probes import AttackerTransform, fit_transform
from condimmune.attacks.registry import DEEP_ATTACKERS, DeepAttacker, DeepAttackerSpec, DeepFamily
from condimmune.core._choices import parse_choice

__all__ = [
    "SCRATCH_GRID",
    "SCRATCH_WIDTH",
    "ReleasedModel",
    "Task",
    "attacker_inputs",
    "fit_task_transform",
    "raw_pixels",
    "reads_taps",
    "scratch_network",
]

SCRATCH_WIDTH = 128
"""Features of the from-scratch network (:func:`scratch_network`)."""
SCRATCH_GRID = 7
"""The from-scratch network's spatial grid before its dense layer: a 28-px image's after two
2×2 poolings, so larger images keep the same number of weights."""


class Task(StrEnum):
    HARMFUL = "harmful"
    BENIGN = "benign"


def reads_taps(attackers: Iterable[DeepAttacker | str]) -> bool:
    """Whether one of ``attackers`` (members or names) reads :attr:`ReleasedModel.taps` (a
    forward pass of every image through each model: worth skipping when no tap probe is
    attacked)."""
    chosen = (parse_choice(DeepAttacker, a, "attacker") for a in attackers)
    return any(DEEP_ATTACKERS[a].family is DeepFamily.TAP for a in chosen)


@dataclass(frozen=True)
class ReleasedModel:
    """What an attacker takes from one released model, per task: the released features,
    the (pooled) activations entering the immunized blocks (``skip``), the activations
    themselves (``prefix``), the images, and the pooled activations of every tap
    concatenated (``taps``, :mod:`condimmune.deep.taps`); ``blocks`` maps ``prefix``
    activations to the released features, ``network`` maps images to them; ``extraction``
    the FLOPs of the two parts per example (the yardstick's fixed costs). Families an
    attacker list does not use may be left ``None``."""

    features: Mapping[Task, TaskTensors]
    feature_dim: int
    skip: Mapping[Task, TaskTensors] | None = None
    prefix: Mapping[Task, TaskTensors] | None = None
    images: Mapping[Task, TaskTensors] | None = None
    blocks: nn.Module | None = None
    network: nn.Module | None = None
    extraction: ExtractionFlops | None = None
    taps: Mapping[Task, TaskTensors] | None = None
    network_taps: tuple[tuple[str, str], ...] = ()
    """The taps in ``network``, from the input: (name, path of its submodule in
    ``network``), what the prefix ceilings keep through (:mod:`condimmune.attacks.
    prefix_curve`)."""
    _transformed: dict[tuple[DeepFamily, Task, AttackerTransform], TaskTensors] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    """Eq. A1's transforms of the features or taps, fitted once per model and shared by
    the attackers that read them (the four whitened probes: an SVD each otherwise). Not an
    init field, so a :func:`dataclasses.replace` copy (other rows) starts without them."""

    def transformed(
        self, family: DeepFamily, task: Task, kind: AttackerTransform
    ) -> TaskTensors | None:
        """:func:`fit_task_transform` of ``kind`` on the features (family ``PROBE``) or the
        taps (``TAP``) of ``task``, fitted at the first request; ``None`` if missing."""
        source = self.features if family is DeepFamily.PROBE else self.taps
        if source is None:
            return None
        key = (family, task, kind)
        if key not in self._transformed:
            self._transformed[key] = fit_task_transform(kind, source[task])
        return self._transformed[key]


def fit_task_transform(kind: AttackerTransform, tensors: TaskTensors) -> TaskTensors:
    """Eq. A1: :func:`~condimmune.attacks.probes.fit_transform` fitted on the training rows
    (centred: these probes have a bias) and applied to both splits."""
    if kind is AttackerTransform.NONE:
        return tensors
    fitted = fit_transform(tensors.train_x, kind, centre=True)
    return TaskTensors(
        fitted.train, tensors.train_y, fitted.apply(tensors.test_x), tensors.test_y, tensors.classes
    )


def raw_pixels(images: TaskTensors) -> TaskTensors:
    """The images as flat pixel vectors: the inputs of the weight-free probes."""
    return TaskTensors(
        images.train_x.flatten(1),
        images.train_y,
        images.test_x.flatten(1),
        images.test_y,
        images.classes,
    )


def scratch_network(example_shape: tuple[int, ...]) -> nn.Module:
    """The weight-free network attacker's model, for inputs of ``example_shape`` (one
    example, no batch axis), with :data:`SCRATCH_WIDTH` output features. Images
    ``(C, H, W)``: two 3×3 conv layers (32 and 64 channels), each with ReLU and 2×2 max
    pooling, average pooling to a :data:`SCRATCH_GRID` × :data:`SCRATCH_GRID` grid (the
    identity on 28-px inputs), then a dense ReLU layer. Anything else: flattened, then a
    ReLU MLP of widths 128 and ``SCRATCH_WIDTH``.

    Revision 1 (:attr:`~condimmune.attacks.registry.DeepAttackerSpec.revision`). Revision 0
    pooled globally after the second convolution, so it saw 8 × 8 pixels: 0.43–0.58 on
    2,000 MNIST digits after 300 steps, where this network reaches 0.94–0.96
    (docs/attacks.md)."""
    if len(example_shape) == 3:
        return nn.Sequential(
            nn.Conv2d(example_shape[0], 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(SCRATCH_GRID),
            nn.Flatten(),
            nn.Linear(64 * SCRATCH_GRID**2, SCRATCH_WIDTH),
            nn.ReLU(),
        )
    inputs = math.prod(example_shape)
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(inputs, 128),
        nn.ReLU(),
        nn.Linear(128, SCRATCH_WIDTH),
        nn.ReLU(),
    )


def _missing(attacker: DeepAttacker, field: str) -> ValueError:
    return ValueError(f"attacker {attacker.value} needs the model's {field}, which is missing")


HEAL_LR = 1e-4
"""AdamW's learning rate in the heal phase of an attacker that heals first (fixed: the
benign task's own fine-tuning, not part of the search)."""


def healed_network(
    network: nn.Module, benign: TaskTensors, width: int, steps: int, batch: int, seed: int
) -> nn.Module:
    """A copy of ``network`` fine-tuned on the benign task first ("heal, then attack"):
    ``steps`` AdamW steps (lr :data:`HEAL_LR`) of every parameter and a new zero head on
    seeded minibatches of ``batch`` benign training images, in train mode; returned in eval
    mode, without the head."""
    net = copy.deepcopy(network)
    model = nn.Sequential(net, zero_head(width, benign.classes)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=HEAL_LR)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        rows = torch.randperm(benign.train_x.shape[0], generator=gen)[:batch]
        loss = F.cross_entropy(model(benign.train_x[rows]), benign.train_y[rows])
        optimizer.zero_grad()
        torch.autograd.backward(loss)
        optimizer.step()
    return net.eval()


def attacker_inputs(
    attacker: DeepAttacker,
    spec: DeepAttackerSpec,
    model: ReleasedModel,
    task: Task,
    *,
    heal: tuple[int, int, int] = (0, 128, 0),
) -> tuple[TaskTensors, Callable[[], nn.Module] | None, int]:
    """What one attacker trains on in ``model``: its data, and for the network families a
    factory of the module it trains (a fresh copy each call) and that module's width.
    ``heal``: (steps, minibatch, seed) of the benign phase of an attacker that heals first
    (:func:`healed_network`, once per call)."""
    family = spec.family
    if family in (DeepFamily.PROBE, DeepFamily.TAP):
        data = model.transformed(family, task, spec.transform)
        if data is None:
            raise _missing(attacker, "tap activations")
        return data, None, 0
    if family is DeepFamily.SKIP:
        if model.skip is None:
            raise _missing(attacker, "skip features")
        return model.skip[task], None, 0
    if family in (DeepFamily.RAW, DeepFamily.SCRATCH):
        if model.images is None:
            raise _missing(attacker, "images")
        images = model.images[task]
        if family is DeepFamily.RAW:
            return raw_pixels(images), None, 0
        shape = tuple(images.train_x.shape[1:])
        return images, lambda: scratch_network(shape), SCRATCH_WIDTH
    blocks = family is DeepFamily.BLOCKS
    inputs = model.prefix if blocks else model.images
    module = model.blocks if blocks else model.network
    if inputs is None or module is None:
        raise _missing(attacker, "prefix activations" if blocks else "images")
    trained = module
    if spec.heal:
        if model.images is None or Task.BENIGN not in model.images:
            raise _missing(attacker, "benign images")
        trained = healed_network(module, model.images[Task.BENIGN], model.feature_dim, *heal)
    return inputs[task], lambda: copy.deepcopy(trained), model.feature_dim
