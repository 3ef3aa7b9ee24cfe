"""Immunize your own model, and attack the pair, from Python (docs/api.md).

:func:`immunize_model` takes any ``nn.Module`` (:func:`~condimmune.deep.custom.wrap_model`
says which parts are released and trained), benign and harmful data as ``(x, y)`` tensors
or a ``torch.utils.data.Dataset`` of ``(x, y)`` pairs, and a registered method with its
options; it returns θ0 (your model, wrapped) and θ_I, writing nothing. :func:`attack_models`
runs the deep attack suite (docs/attacks.md) on such a pair. Both run in this process on
Lightning Fabric's single device (the command line's ``train.devices`` runs DDP).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeAlias

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from condimmune.attacks.deep_headline import DeepAttackSuite
from condimmune.attacks.deep_inputs import reads_taps
from condimmune.attacks.deep_records import DeepAttackOptions
from condimmune.attacks.deep_suite import ReleasedModel, Task, run_deep_suite
from condimmune.attacks.registry import DEEP_ATTACKERS, DeepAttacker, DeepFamily
from condimmune.core.progress import ProgressCallback
from condimmune.deep.backbones import DeepModel
from condimmune.deep.checkpoint import DeepHistory
from condimmune.deep.custom import wrap_model
from condimmune.deep.evaluate import extract_features
from condimmune.deep.feature_maps import apply_feature_map
from condimmune.deep.head import fit_linear_head
from condimmune.deep.images import KeyedDataset
from condimmune.deep.surface import (
    TaskImages,
    released_model,
    same_prefix,
    stacked_prefix,
    task_images,
)
from condimmune.deep.trainer import FabricOptions, ImmunizeOptions, immunize, make_fabric
from condimmune.deep.whole_network import immunize_whole_network
from condimmune.methods.base import (
    ConfiguredMethod,
    DeepSolver,
    FeatureMapInputs,
    MethodOptions,
    ModelFamily,
)
from condimmune.methods.registry import configure_method

__all__ = ["ImmunizedModel", "TaskData", "attack_models", "immunize_model", "keyed"]

TaskData: TypeAlias = tuple[Tensor, Tensor] | Dataset[tuple[Tensor, Tensor]]
"""Samples of a task: ``(inputs, integer labels)`` tensors, or a dataset of such pairs."""


def keyed(data: TaskData, what: str) -> KeyedDataset:
    """``data`` as the trainer's dataset (samples addressed by ``(epoch, index)``); a
    dataset's labels are read once, by indexing every sample."""
    if isinstance(data, tuple):
        if len(data) != 2 or not all(isinstance(t, Tensor) for t in data):
            raise TypeError(f"{what} must be (inputs, labels) tensors or a Dataset")
        x, y = data
        if y.ndim != 1 or y.dtype not in (torch.int64, torch.int32) or len(x) != len(y):
            raise ValueError(
                f"{what}: labels must be one integer per input ({len(x)} inputs), got "
                f"{tuple(y.shape)} {y.dtype}"
            )
        return KeyedDataset(x, y.long())
    if not isinstance(data, Dataset):
        raise TypeError(f"{what} must be (inputs, labels) tensors or a Dataset, got {data!r}")
    n = len(data)  # type: ignore[arg-type]
    labels = torch.tensor([int(data[i][1]) for i in range(n)], dtype=torch.int64)

    def loader(i: int) -> Callable[[], object]:
        return lambda: data[i][0]

    return KeyedDataset([loader(i) for i in range(n)], labels, transform=_as_tensor)


def _as_tensor(sample: object) -> Tensor:
    if not isinstance(sample, Tensor):
        raise TypeError(f"a dataset sample's input must be a tensor, got {type(sample).__name__}")
    return sample


def _classes(data: KeyedDataset, what: str) -> int:
    labels = data.labels
    if labels.numel() == 0 or int(labels.min()) < 0:
        raise ValueError(f"{what} needs samples with labels 0, 1, ..., got {labels.numel()}")
    classes = int(labels.max()) + 1
    if classes < 2:
        raise ValueError(f"{what} must have at least two classes, got {classes}")
    return classes


@dataclass(frozen=True)
class ImmunizedModel:
    """θ0 (your model wrapped, with its benign head) and θ_I (a trained copy), the method they
    were immunized with, and the training history."""

    original: DeepModel
    immunized: DeepModel
    method: ConfiguredMethod
    history: DeepHistory


def immunize_model(
    model: nn.Module,
    *,
    features: str,
    benign: TaskData,
    harmful: TaskData,
    train: Sequence[str] | None = None,
    head: str | None = None,
    method: str | ConfiguredMethod = "condnum",
    options: MethodOptions | Mapping[str, object] | None = None,
    epochs: int = 1,
    batch_size: int = 64,
    lr: float = 1e-3,
    momentum: float = 0.9,
    weight_decay: float = 2e-5,
    label_smoothing: float = 0.1,
    normalize_covariance: bool = True,
    head_steps: int = 100,
    seed: int = 0,
    fabric: FabricOptions | None = None,
    progress: bool = False,
) -> ImmunizedModel:
    """Immunize ``model`` (untouched: it is copied) against ``harmful`` while it keeps
    ``benign``. ``features``, ``train`` and ``head`` are module names of ``model``
    (:func:`~condimmune.deep.custom.wrap_model`); without ``head`` a softmax head is fitted on
    the benign features (``head_steps`` L-BFGS steps). ``method`` is a registered method's
    name with ``options`` (validated against its deep options model) or a
    :class:`ConfiguredMethod`. The training settings are those of
    :class:`~condimmune.deep.trainer.ImmunizeOptions` (SGD with Nesterov momentum, the global
    ``batch_size`` of each task per step, ``epochs`` over the benign data)."""
    if isinstance(method, ConfiguredMethod):
        if options is not None:
            raise TypeError("pass options with a method name, not with a ConfiguredMethod")
        configured = method
    else:
        configured = configure_method(method, ModelFamily.DEEP, options)
    benign_data, harmful_data = keyed(benign, "benign"), keyed(harmful, "harmful")
    classes = _classes(benign_data, "benign")
    example = torch.stack([benign_data[i][0] for i in range(min(2, len(benign_data)))])
    original = wrap_model(
        model, features=features, example=example, num_classes=classes, train=train, head=head
    )
    if head is None:
        phi, _, labels = extract_features(original, benign_data)
        weight, bias = fit_linear_head(phi, labels, classes, steps=head_steps)
        with torch.no_grad():
            original.head.weight.copy_(weight.to(original.head.weight.dtype))
            original.head.bias.copy_(bias.to(original.head.bias.dtype))
    immunized = copy.deepcopy(original)
    history = DeepHistory()
    deep = configured.deep
    training = ImmunizeOptions(
        method=configured,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        label_smoothing=label_smoothing,
        normalize_covariance=normalize_covariance,
    )
    classes = _classes(harmful_data, "harmful")
    if deep.solver is DeepSolver.WHOLE_NETWORK and epochs:
        history = immunize_whole_network(
            make_fabric(fabric or FabricOptions()),
            immunized,
            benign_data,
            harmful_data,
            benign_data,
            training,
            harmful_classes=classes,
            seed=seed,
            progress=progress,
        )
    elif deep.solver is DeepSolver.PENALTY and epochs:
        history = immunize(
            make_fabric(fabric or FabricOptions()),
            immunized,
            benign_data,
            harmful_data,
            training,
            harmful_classes=classes,
            seed=seed,
            progress=progress,
        )
    if deep.feature_map is not None:
        phi_p, _, _ = extract_features(immunized, benign_data)
        phi_h, _, labels = extract_features(immunized, harmful_data)
        inputs = FeatureMapInputs(phi_p, phi_h, labels, _classes(harmful_data, "harmful"))
        apply_feature_map(immunized, deep.feature_map(inputs, configured.options), phi_p)
    return ImmunizedModel(original, immunized.eval(), configured, history)


def attack_models(
    original: DeepModel,
    immunized: DeepModel,
    *,
    harmful: tuple[TaskData, TaskData],
    benign: tuple[TaskData, TaskData],
    attackers: Sequence[DeepAttacker | str] | None = None,
    options: DeepAttackOptions | None = None,
    batch_size: int = 256,
    skip_dims: int = 2048,
    on_progress: ProgressCallback | None = None,
) -> DeepAttackSuite:
    """The deep attack suite (docs/attacks.md) on θ0 and θ_I: each attacker's
    hyperparameters searched with Optuna on each model, on both tasks (each a ``(train,
    held-out)`` pair of :data:`TaskData`); ``attackers``: names of
    :class:`~condimmune.attacks.registry.DeepAttacker` (``None``: all; the tap probe only
    when the model's body names taps). ``options``: the
    search budget, target and utility cap (:class:`DeepAttackOptions`; its defaults keep
    the studies in memory); ``on_progress`` hears the attackers and their trials."""
    tapped = bool(original.body.TAPS)
    chosen: list[DeepAttacker | str] = (
        list(attackers)
        if attackers
        else [a for a in DeepAttacker if tapped or DEEP_ATTACKERS[a].family is not DeepFamily.TAP]
    )
    tasks = {}
    for task, (train, test), what in (
        (Task.HARMFUL, harmful, "harmful"),
        (Task.BENIGN, benign, "benign"),
    ):
        train_data, test_data = keyed(train, what), keyed(test, f"{what} held-out")
        tasks[task] = TaskImages(train_data, test_data, _classes(train_data, what))
    taps = reads_taps(chosen)
    images = task_images(tasks, batch_size=batch_size)  # for the attackers and FLOP counts
    released: list[ReleasedModel] = []
    for model in (original, immunized):
        shared = bool(released) and same_prefix(original, model)
        acts = released[0].prefix if shared else None  # θ0's, when θ_I has its prefix
        released.append(
            released_model(
                model,
                acts if acts is not None else stacked_prefix(model, images, batch_size=batch_size),
                images,
                batch_size=batch_size,
                skip_dims=skip_dims,
                taps=taps,
                like=released[0] if shared else None,
            )
        )
    return run_deep_suite(
        chosen, released[0], released[1], options or DeepAttackOptions(), on_progress=on_progress
    )
