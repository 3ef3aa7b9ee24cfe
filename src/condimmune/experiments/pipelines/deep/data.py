"""The two tasks of a deep experiment: packaged MNIST digit groups (the harmful group made of
Fashion-MNIST garments with ``data.harmful_images``), local image folders, or Fashion-MNIST
(benign) against MNIST digits (harmful) as grey images for an ImageNet backbone.

Fashion-MNIST is read from its four IDX files (``train-images-idx3-ubyte.gz`` and the
labels, ``t10k-…`` for the test set; ``.gz`` or not) in ``data.root``, by default
:data:`FASHION_MNIST_ROOT`, where Debian's ``dataset-fashion-mnist`` installs them. A missing
or malformed file is a one-line error naming the file (and, when missing, the command that
installs it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from condimmune.core.errors import ArgumentError, UserError
from condimmune.deep.backbones import SPECS
from condimmune.deep.canvas import DIGIT_SIDE, HarmfulImages, cluttered_canvas
from condimmune.deep.images import (
    GreyToRGB,
    ImageDataset,
    ImageSplit,
    KeyedDataset,
    digit_group_tasks,
    folder_dataset,
    image_transform,
    parse_digits,
)
from condimmune.experiments.pipelines.deep.options import DeepDataOptions, ModelOptions
from condimmune.experiments.registry import Experiment, experiment_spec
from condimmune.linear.mnist import mnist_arrays, read_idx

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_ROOT",
    "INSTALL_FASHION_MNIST",
    "DeepTaskData",
    "fashion_mnist_arrays",
    "load_deep_data",
]

INSTALL_FASHION_MNIST = "apt-get install -y dataset-fashion-mnist"
FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
"""Where Debian's ``dataset-fashion-mnist`` puts the four IDX files (``data.root`` unset)."""
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


@dataclass(frozen=True)
class DeepTaskData:
    """Each task's training images twice (train and eval transforms) and held-out images;
    ``preprocessing`` describes the eval transform (part of the prefix cache's key)."""

    benign: ImageSplit
    harmful: ImageSplit
    benign_train_eval: KeyedDataset
    harmful_train_eval: KeyedDataset
    preprocessing: str = ""
    harmful_defence: KeyedDataset | None = None
    """Harmful images only immunization reads, disjoint from every split the attacks read
    (``data.defence_per_class``); ``None``: immunization reads ``harmful.train``."""

    @property
    def harmful_immunize(self) -> KeyedDataset:
        """The harmful images immunization trains on."""
        return self.harmful.train if self.harmful_defence is None else self.harmful_defence


def _idx_file(root: Path, stem: str) -> Path:
    for candidate in (root / f"{stem}.gz", root / stem):
        if candidate.is_file():
            return candidate
    raise UserError(
        "Fashion-MNIST file missing",
        f"{root / stem}.gz (data.root)",
        f"install it with `{INSTALL_FASHION_MNIST}` or point data.root at a folder of the "
        "four IDX files",
    )


def fashion_mnist_arrays(root: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(images n × 28 × 28 uint8, labels n int64)`` of the ``train`` or ``test`` (t10k)
    split; shapes, dtypes (IDX magic) and labels are checked, naming the file at fault."""
    base = Path(root).expanduser()
    prefix = {"train": "train", "test": "t10k"}[split]
    images_path = _idx_file(base, f"{prefix}-images-idx3-ubyte")
    labels_path = _idx_file(base, f"{prefix}-labels-idx1-ubyte")
    images, labels = read_idx(images_path), read_idx(labels_path)
    fix = f"reinstall it with `{INSTALL_FASHION_MNIST}`"
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise UserError(f"images of shape {images.shape}, not n × 28 × 28", images_path, fix)
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise UserError(
            f"{labels.shape} labels for the {images.shape[0]} images of {images_path.name}",
            labels_path,
            fix,
        )
    if labels.size and int(labels.max()) >= len(FASHION_MNIST_CLASSES):
        raise UserError(f"label {int(labels.max())} outside 0–9", labels_path, fix)
    return images, labels.astype(np.int64)


def _subsample(n: int, limit: int, seed: int) -> np.ndarray:
    """Sorted seeded subsample of ``limit`` of ``n`` rows (all when ``limit`` is 0 or ≥ n)."""
    if 0 < limit < n:
        return np.sort(np.random.default_rng(seed).permutation(n)[:limit])
    return np.arange(n)


def _grey_dataset(
    images: np.ndarray, labels: np.ndarray, tf: GreyToRGB, seed: int, classes: list[str]
) -> KeyedDataset:
    return KeyedDataset(
        torch.from_numpy(np.ascontiguousarray(images)),
        torch.from_numpy(labels.astype(np.int64)),
        tf,
        seed=seed,
        classes=classes,
    )


def _fashion_vs_mnist(d: DeepDataOptions, model: ModelOptions, seed: int) -> DeepTaskData:
    """Benign: Fashion-MNIST (``max_train_images`` of 60,000 for training, the test set or
    ``max_test_images`` of it); harmful: MNIST digits, ``test_per_class`` held out per digit,
    ``defence_per_class`` more per digit only immunization reads, ``max_train_images`` of the
    rest for training. Both as grey images for the backbone."""
    root = d.root or FASHION_MNIST_ROOT
    spec = SPECS[model.backbone]
    tf = GreyToRGB(model.image_size, spec.mean, spec.std)
    fashion = list(FASHION_MNIST_CLASSES)
    xb, yb = fashion_mnist_arrays(root, "train")
    keep = _subsample(len(yb), d.max_train_images, seed)
    benign_train = _grey_dataset(xb[keep], yb[keep], tf, seed, fashion)
    xt, yt = fashion_mnist_arrays(root, "test")
    keep = _subsample(len(yt), d.max_test_images, seed + 1)
    benign = ImageSplit(
        benign_train,
        _grey_dataset(xt[keep], yt[keep], tf, seed, fashion),
        len(fashion),
        f"Fashion-MNIST IDX at {root}",
    )
    flat, digits, source = mnist_arrays(d.harmful_root, key="data.harmful_root")
    grey = np.rint(flat * 255.0).astype(np.uint8).reshape(-1, 28, 28)
    rng = np.random.default_rng(seed)
    test_rows, defence_rows, train_rows = [], [], []
    held = d.test_per_class + d.defence_per_class
    for digit in range(10):
        rows = rng.permutation(np.flatnonzero(digits == digit))
        if rows.size <= held:
            raise ArgumentError(
                "{source}: digit {digit} has {have} images, not more than {test_per_class} + "
                "{defence_per_class} = {value}",
                source=source,
                digit=digit,
                have=rows.size,
                value=held,
            )
        test_rows.append(rows[: d.test_per_class])
        defence_rows.append(rows[d.test_per_class : held])
        train_rows.append(rows[held:])
    pool = np.sort(np.concatenate(train_rows))
    pool = pool[_subsample(pool.size, d.max_train_images, seed + 2)]
    test = np.sort(np.concatenate(test_rows))
    names = [str(k) for k in range(10)]
    harmful = ImageSplit(
        _grey_dataset(grey[pool], digits[pool], tf, seed, names),
        _grey_dataset(grey[test], digits[test], tf, seed, names),
        10,
        f"{source}, digits 0–9",
    )
    defence = np.sort(np.concatenate(defence_rows))
    reserved = (
        _grey_dataset(grey[defence], digits[defence], tf, seed, names)
        if held > d.test_per_class
        else None
    )
    return DeepTaskData(
        benign, harmful, benign.train, harmful.train, tf.describe(), harmful_defence=reserved
    )


FASHION_LABEL_OFFSET = 10
"""Fashion-MNIST's labels are shifted past the digits' when both feed one digit-group split."""


def _harmful_garments(
    d: DeepDataOptions, classes: list[int], seed: int
) -> tuple[np.ndarray, np.ndarray, str]:
    """The Fashion-MNIST training images of ``classes``, ``train + test + defence``
    per class drawn by a seeded permutation (the rest never enters the canvas), in [0, 1]
    rows with labels shifted by :data:`FASHION_LABEL_OFFSET`."""
    root = d.harmful_root or FASHION_MNIST_ROOT
    images, labels = fashion_mnist_arrays(root, "train")
    need = d.train_per_class + d.test_per_class + d.defence_per_class
    rng = np.random.default_rng([seed, FASHION_LABEL_OFFSET])
    picked = []
    for c in classes:
        rows = np.flatnonzero(labels == c)
        if rows.size < need:
            raise ArgumentError(
                "Fashion-MNIST class {c} ({name}) has {have} training images in {root}, fewer "
                "than {train_per_class} + {test_per_class} + {defence_per_class} = {need}",
                c=c,
                name=FASHION_MNIST_CLASSES[c],
                have=rows.size,
                root=root,
                need=need,
            )
        picked.append(rng.permutation(rows)[:need])
    rows = np.sort(np.concatenate(picked))
    x = images[rows].reshape(rows.size, -1).astype(np.float32) / 255.0
    return x, labels[rows] + FASHION_LABEL_OFFSET, f"Fashion-MNIST IDX at {root}"


def _digit_groups(d: DeepDataOptions, seed: int) -> DeepTaskData:
    """``mnist-cnn``: a benign and a harmful group of MNIST digits, or (``harmful_images``
    ``fashion-mnist``) Fashion-MNIST garments as the harmful group; each source placed on
    its own canvases (clutter comes from the same source) and normalised like the digits, so
    the network sees one input normalisation."""
    fashion = d.harmful_images is HarmfulImages.FASHION_MNIST
    benign_group = parse_digits(d.benign_digits, "data.benign_digits")
    harmful_classes = parse_digits(d.harmful_digits, "data.harmful_digits")
    sources = [mnist_arrays(d.root, key="data.root")]
    if fashion:
        sources.append(_harmful_garments(d, harmful_classes, seed))
    side = d.canvas or DIGIT_SIDE
    xs, ys, names = [], [], []
    for x, y, source in sources:
        if d.canvas or d.clutter:
            x = cluttered_canvas(
                x.reshape(-1, DIGIT_SIDE, DIGIT_SIDE), side=side, fragments=d.clutter, seed=seed
            ).reshape(len(y), -1)
            source = f"{source}, on {side} × {side} canvases with {d.clutter} fragments"
        xs.append(x)
        ys.append(y)
        names.append(source)
    harmful_group = (
        [FASHION_LABEL_OFFSET + c for c in harmful_classes] if fashion else harmful_classes
    )
    benign, harmful, defence = digit_group_tasks(
        np.concatenate(xs),
        np.concatenate(ys),
        (benign_group, harmful_group),
        train_per_class=d.train_per_class,
        test_per_class=d.test_per_class,
        seed=seed,
        descriptions=(
            f"{names[0]}, digits {''.join(map(str, benign_group))}",
            f"{names[-1]}, "
            + (
                ", ".join(FASHION_MNIST_CLASSES[c] for c in harmful_classes)
                if fashion
                else f"digits {''.join(map(str, harmful_classes))}"
            ),
        ),
        defence_per_class=d.defence_per_class,
        names={FASHION_LABEL_OFFSET + c: n for c, n in enumerate(FASHION_MNIST_CLASSES)},
    )
    return DeepTaskData(
        benign,
        harmful,
        benign.train,
        harmful.train,
        # unchanged for plain digits, so their stored θ0 attack results still match
        f"mnist {side}x{side}"
        + (f" clutter {d.clutter}" if d.clutter else "")
        + (" harmful fashion-mnist" if fashion else ""),
        harmful_defence=defence,
    )


_HARMFUL_DATASET = {
    Experiment.IMAGENET_CARS_RESNET18: ImageDataset.STANFORD_CARS,
    Experiment.IMAGENET_CARS_VIT: ImageDataset.STANFORD_CARS,
    Experiment.IMAGENET_COUNTRY211_RESNET18: ImageDataset.COUNTRY211,
    Experiment.IMAGENET_COUNTRY211_VIT: ImageDataset.COUNTRY211,
}


def load_deep_data(d: DeepDataOptions, model: ModelOptions, seed: int) -> DeepTaskData:
    """The benign (pre-training) and harmful tasks of a deep experiment, as ``model`` reads
    them (its input size and normalisation; its prefix cache turns augmentation off)."""
    exp = d.experiment
    if exp is Experiment.MOBILENET_FASHION_MNIST:
        return _fashion_vs_mnist(d, model, seed)
    if experiment_spec(exp).digit_groups:
        return _digit_groups(d, seed)
    spec = SPECS[model.backbone]
    size = model.image_size
    tf_eval = image_transform(size, spec.mean, spec.std, train=False)
    # a cached prefix is computed once per image, so training images are not augmented
    tf_train = image_transform(size, spec.mean, spec.std, train=True)
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
            return folder_dataset(dataset, root, split, tf, key=key, max_images=limit, seed=seed)

        train_eval = make("train", tf_eval, d.max_train_images)
        train = train_eval if model.cache_prefix else make("train", tf_train, d.max_train_images)
        test = make("test", tf_eval, d.max_test_images)
        splits.append(
            (ImageSplit(train, test, len(train.classes), f"{dataset.value} at {root}"), train_eval)
        )
    (benign, benign_eval), (harmful, harmful_eval) = splits
    described = f"timm eval transform {size} mean={spec.mean} std={spec.std}"
    return DeepTaskData(benign, harmful, benign_eval, harmful_eval, described)
