"""The deep family's part of a run plan: data, model, θ0, immunization, Lightning, evaluation
and attack options, typed."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from condimmune._files import default_cache_dir
from condimmune.attacks.registry import DeepAttacker
from condimmune.deep.backbones import Backbone
from condimmune.deep.canvas import HarmfulImages
from condimmune.deep.trainer import FabricOptions, ImmunizeOptions, TrainLogger
from condimmune.experiments.config import DeepExperimentConfig
from condimmune.experiments.registry import Experiment
from condimmune.methods.base import ConfiguredMethod

__all__ = [
    "DeepAttackSettings",
    "DeepDataOptions",
    "DeepEvalOptions",
    "DeepRunOptions",
    "ModelOptions",
    "PretrainOptions",
    "deep_run_options",
]


@dataclass(frozen=True)
class DeepDataOptions:
    """Which images make the two tasks (the experiment picks the loader) and how many."""

    experiment: Experiment
    root: str | None
    harmful_root: str | None
    benign_digits: str
    harmful_digits: str
    harmful_images: HarmfulImages
    """mnist-cnn: the harmful group's images (digits, or Fashion-MNIST from ``harmful_root``)."""
    train_per_class: int
    test_per_class: int
    defence_per_class: int
    canvas: int
    """mnist-cnn: the side of the canvas each digit is placed on (0 = none)."""
    clutter: int
    """mnist-cnn: clutter fragments per image."""
    max_train_images: int
    max_test_images: int
    num_workers: int

    def identity(self) -> dict[str, object]:
        """What the images depend on, for the fingerprints of θ0 and of its stored attacks:
        not the loader processes; ``harmful_images`` only when it is not the digits, so the
        keys of runs made before the option existed still match."""
        fields = {**dataclasses.asdict(self), "num_workers": None}
        if self.harmful_images is HarmfulImages.MNIST:
            del fields["harmful_images"]
        return fields


@dataclass(frozen=True)
class ModelOptions:
    """The backbone, its starting weights (``imagenet``: the installed checkpoint), input
    size, trained blocks (mobilenet-v2), and the frozen prefix's cache."""

    backbone: Backbone
    weights: str | None
    image_size: int
    trainable_blocks: int
    cache_prefix: bool
    cache_dir: Path


@dataclass(frozen=True)
class PretrainOptions:
    """θ0: pre-training epochs in the run (Adam), and the L-BFGS steps of its benign head on
    the frozen features (0: keep the weights file's head)."""

    epochs: int
    lr: float
    batch_size: int
    fit_head_steps: int


@dataclass(frozen=True)
class DeepEvalOptions:
    """RIR_θ0 over ``groups`` random groups of ``group_size`` (Eq. 17–18), the paper's GD
    attacker, the softmax probe, the benign linear probe, and the feature batch size."""

    groups: int
    group_size: int
    attack_target: float
    attack_budget: int
    probe_steps: int
    batch_size: int
    benign_probe_steps: int


@dataclass(frozen=True)
class DeepAttackSettings:
    """The worst-case suite of ``condimmune attack`` (the config's ``attack`` section)."""

    attackers: tuple[DeepAttacker, ...]
    trials: int
    finetune_trials: int
    probe_steps: int
    finetune_steps: int
    weight_free_steps: int | None
    raw_probe_steps: int | None
    finetune_eval_every: int
    batch_size: int
    finetune_benign: bool
    benign_trials: int | None
    seconds: float
    target_fraction: float
    utility_cap: float
    storage: str | None
    theta0_storage: str | None
    skip_dims: int
    labels_per_class: int | None
    prefix_curve: bool
    workers: int


@dataclass(frozen=True)
class DeepRunOptions:
    data: DeepDataOptions
    model: ModelOptions
    pretrain: PretrainOptions
    immunize: ImmunizeOptions
    fabric: FabricOptions
    evaluation: DeepEvalOptions
    attack: DeepAttackSettings


def deep_run_options(config: DeepExperimentConfig, method: ConfiguredMethod) -> DeepRunOptions:
    """The typed options of a deep experiment's validated config."""
    d, m, t, e, a = config.data, config.model, config.train, config.eval, config.attack
    attackers = (
        tuple(DeepAttacker)
        if a.attackers == "all"
        else tuple(DeepAttacker(n) for n in a.attackers.split(","))
    )
    return DeepRunOptions(
        data=DeepDataOptions(
            experiment=Experiment(config.experiment),
            root=d.root,
            harmful_root=d.harmful_root,
            benign_digits=d.benign_digits,
            harmful_digits=d.harmful_digits,
            harmful_images=HarmfulImages(d.harmful_images),
            train_per_class=d.train_per_class,
            test_per_class=d.test_per_class,
            defence_per_class=d.defence_per_class,
            canvas=d.canvas,
            clutter=d.clutter,
            max_train_images=d.max_train_images,
            max_test_images=d.max_test_images,
            num_workers=d.num_workers,
        ),
        model=ModelOptions(
            backbone=Backbone(m.backbone),
            weights=m.weights,
            image_size=m.image_size,
            trainable_blocks=m.trainable_blocks,
            cache_prefix=m.cache_prefix,
            cache_dir=Path(m.cache_dir).expanduser() if m.cache_dir else default_cache_dir(),
        ),
        pretrain=PretrainOptions(
            epochs=t.pretrain_epochs,
            lr=t.pretrain_lr,
            batch_size=t.pretrain_batch_size,
            fit_head_steps=t.fit_head_steps,
        ),
        immunize=ImmunizeOptions(
            method=method,
            epochs=t.epochs,
            batch_size=t.batch_size,
            lr=t.lr,
            momentum=t.momentum,
            weight_decay=t.weight_decay,
            label_smoothing=t.label_smoothing,
            normalize_covariance=t.normalize_covariance,
            max_steps=t.max_steps,
            checkpoint_every=t.checkpoint_every,
        ),
        fabric=FabricOptions(
            accelerator=t.accelerator,
            devices=t.devices,
            strategy=t.strategy,
            precision=t.precision,
            logger=TrainLogger(t.logger),
        ),
        evaluation=DeepEvalOptions(
            groups=e.groups,
            group_size=e.group_size,
            attack_target=e.attack_target,
            attack_budget=e.attack_budget,
            probe_steps=e.probe_steps,
            batch_size=e.batch_size,
            benign_probe_steps=e.benign_probe_steps,
        ),
        attack=DeepAttackSettings(
            attackers=attackers,
            trials=a.trials,
            finetune_trials=a.finetune_trials,
            probe_steps=a.probe_steps,
            finetune_steps=a.finetune_steps,
            weight_free_steps=a.weight_free_steps,
            raw_probe_steps=a.raw_probe_steps,
            finetune_eval_every=a.finetune_eval_every,
            batch_size=a.batch_size,
            finetune_benign=a.finetune_benign,
            benign_trials=a.benign_trials,
            seconds=a.seconds,
            target_fraction=a.target_fraction,
            utility_cap=a.utility_cap,
            storage=a.storage,
            theta0_storage=a.theta0_storage,
            skip_dims=a.skip_dims,
            labels_per_class=a.labels_per_class,
            prefix_curve=a.prefix_curve,
            workers=a.workers,
        ),
    )
