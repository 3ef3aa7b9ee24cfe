"""The two tasks of a deep experiment: packaged MNIST digit groups or local image folders."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from condimmune.deep.backbones import SPECS, Backbone
from condimmune.deep.images import (
    ImageDataset,
    ImageSplit,
    KeyedDataset,
    digit_group_tasks,
    folder_dataset,
    image_transform,
    parse_digits,
)
from condimmune.experiments.config import DeepExperimentConfig
from condimmune.experiments.registry import Experiment
from condimmune.linear.mnist import mnist_arrays

__all__ = ["DeepTaskData", "load_deep_data"]


@dataclass(frozen=True)
class DeepTaskData:
    """Each task's training images twice (train and eval transforms) and held-out images."""

    benign: ImageSplit
    harmful: ImageSplit
    benign_train_eval: KeyedDataset
    harmful_train_eval: KeyedDataset


_HARMFUL_DATASET = {
    Experiment.IMAGENET_CARS_RESNET18: ImageDataset.STANFORD_CARS,
    Experiment.IMAGENET_CARS_VIT: ImageDataset.STANFORD_CARS,
    Experiment.IMAGENET_COUNTRY211_RESNET18: ImageDataset.COUNTRY211,
    Experiment.IMAGENET_COUNTRY211_VIT: ImageDataset.COUNTRY211,
}


def load_deep_data(config: DeepExperimentConfig) -> DeepTaskData:
    """The benign (pre-training) and harmful tasks of a deep experiment."""
    exp = Experiment(config.experiment)
    d = config.data
    if exp is Experiment.MNIST_CNN:
        x, y, source = mnist_arrays(d.root)
        benign, harmful = digit_group_tasks(
            x,
            y,
            (
                parse_digits(d.benign_digits, "data.benign_digits"),
                parse_digits(d.harmful_digits, "data.harmful_digits"),
            ),
            train_per_class=d.train_per_class,
            test_per_class=d.test_per_class,
            seed=config.seed,
            description=source,
        )
        return DeepTaskData(benign, harmful, benign.train, harmful.train)
    spec = SPECS[Backbone(config.model.backbone)]
    size = config.model.image_size
    tf_train = image_transform(size, spec.mean, spec.std, train=True)
    tf_eval = image_transform(size, spec.mean, spec.std, train=False)
    splits = []
    for dataset, root, key in (
        (ImageDataset.IMAGENET, d.root, "data.root"),
        (_HARMFUL_DATASET[exp], d.harmful_root, "data.harmful_root"),
    ):

        def make(
            split: str,
            tf: Callable[[object], Tensor],
            limit: int,
            dataset: ImageDataset = dataset,
            root: str | None = root,
            key: str = key,
        ) -> KeyedDataset:
            return folder_dataset(
                dataset, root, split, tf, key=key, max_images=limit, seed=config.seed
            )

        train = make("train", tf_train, d.max_train_images)
        test = make("test", tf_eval, d.max_test_images)
        train_eval = make("train", tf_eval, d.max_train_images)
        splits.append(
            (ImageSplit(train, test, len(train.classes), f"{dataset.value} at {root}"), train_eval)
        )
    (benign, benign_eval), (harmful, harmful_eval) = splits
    return DeepTaskData(benign, harmful, benign_eval, harmful_eval)
