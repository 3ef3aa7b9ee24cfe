"""Image data for the deep experiments: packaged MNIST digit groups and local image folders.

Nothing is downloaded. Folder datasets are read from a path in their usual layouts:

=================  ======================================================================
dataset            layout under ``root``
=================  ======================================================================
``imagenet``       ``train/<wnid>/*.JPEG`` and ``val/<wnid>/*.JPEG`` (validation images
                   sorted into class folders, as the usual ``valprep.sh`` leaves them)
``stanford-cars``  ``train/<class>/*.jpg`` and ``test/<class>/*.jpg``, or the original
                   release: ``cars_train/``, ``cars_test/`` and ``devkit/cars_train_annos.mat``
                   with ``cars_test_annos_withlabels.mat`` (beside ``devkit/`` or inside it)
``country211``     ``train/<CC>/*.jpg``, ``valid/<CC>/*.jpg``, ``test/<CC>/*.jpg``
                   (torchvision's ``country211`` folder)
=================  ======================================================================

Transforms follow timm's defaults for both backbones: training images get
``RandomResizedCrop(size)`` and a horizontal flip, evaluation images
``Resize(size / 0.875)`` and ``CenterCrop(size)``, then the backbone's normalisation.
Random augmentations are drawn from a generator seeded by (seed, epoch, index), so an
interrupted run resumes with the very same images.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import cast

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from condimmune.core._choices import parse_choice
from condimmune.core.errors import ArgumentError, UserError
from condimmune.core.seeding import cpu_seeded

__all__ = [
    "GreyToRGB",
    "ImageDataset",
    "ImageSplit",
    "KeyedDataset",
    "digit_group_tasks",
    "folder_dataset",
    "image_transform",
    "parse_digits",
]

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
"""The mean and standard deviation of MNIST's training pixels in [0, 1] (torchvision's)."""

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


class ImageDataset(StrEnum):
    IMAGENET = "imagenet"
    STANFORD_CARS = "stanford-cars"
    COUNTRY211 = "country211"


_SPLIT_DIRS: dict[ImageDataset, dict[str, str]] = {
    ImageDataset.IMAGENET: {"train": "train", "test": "val"},
    ImageDataset.STANFORD_CARS: {"train": "train", "test": "test"},
    ImageDataset.COUNTRY211: {"train": "train", "test": "test"},
}


class KeyedDataset(Dataset[tuple[Tensor, Tensor]]):
    """Samples addressed by ``(epoch, index)`` keys, so augmentations are reproducible.

    ``items`` are ``(load, label)`` pairs or a tensor of images; ``transform`` receives the
    loaded sample and must draw its randomness from torch's default generator, which is
    re-seeded from ``(seed, epoch, index)`` inside a forked RNG (global state untouched).
    """

    def __init__(
        self,
        images: Tensor | Sequence[Callable[[], object]],
        labels: Tensor,
        transform: Callable[[object], Tensor] | None = None,
        seed: int = 0,
        classes: Sequence[str] = (),
    ) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = labels
        self.transform = transform
        self.seed = seed
        self.classes = list(classes)

    def __len__(self) -> int:
        return len(self.labels)

    def _sample(self, index: int) -> object:
        item = self.images[index]
        return item if isinstance(self.images, Tensor) else cast(Callable[[], object], item)()

    def __getitem__(self, key: tuple[int, int] | int) -> tuple[Tensor, Tensor]:
        epoch, index = key if isinstance(key, tuple) else (-1, key)
        sample = self._sample(index)
        if self.transform is None:  # the stored images are the tensors (digit_group_tasks)
            return cast(Tensor, sample), self.labels[index]
        digest = hashlib.blake2b(f"{self.seed}/{epoch}/{index}".encode(), digest_size=8)
        with cpu_seeded(int.from_bytes(digest.digest(), "little") & (2**63 - 1)):
            return self.transform(sample), self.labels[index]


@dataclass(frozen=True)
class ImageSplit:
    """Training and held-out images of one task."""

    train: KeyedDataset
    test: KeyedDataset
    num_classes: int
    description: str


def parse_digits(text: str, key: str) -> list[int]:
    """``"01234"`` or ``"0,1,2"`` → ``[0, 1, 2, ...]``; each digit once."""
    digits, named = [int(c) for c in text if c.isdigit()], {"key": key, "text": repr(text)}
    if not digits or any(c not in "0123456789, " for c in text):
        raise ArgumentError("{key} must list digits, e.g. '01234' or '0,1,2', got {text}", **named)
    if len(set(digits)) != len(digits):
        raise ArgumentError("{key} lists a digit twice: {text}", **named)
    if len(digits) < 2:
        raise ArgumentError(
            "{key} needs at least two digits (a classification task), got {text}", **named
        )
    return digits


def digit_group_tasks(
    images: np.ndarray,
    labels: np.ndarray,
    groups: tuple[list[int], list[int]],
    *,
    train_per_class: int,
    test_per_class: int,
    seed: int,
    descriptions: tuple[str, str],
    defence_per_class: int = 0,
    names: Mapping[int, str] | None = None,
) -> tuple[ImageSplit, ImageSplit, KeyedDataset | None]:
    """Two classification tasks on disjoint digit groups (benign, harmful), 28 × 28 images
    normalised with MNIST's mean and std; per digit ``train_per_class`` training and
    ``test_per_class`` held-out images, drawn without overlap by a seeded permutation; and,
    with ``defence_per_class``, that many more harmful images per digit, disjoint from both,
    that only immunization reads (``None`` without). ``descriptions``: each task's;
    ``names``: names of labels that are not digits."""
    benign, harmful = groups
    if set(benign) & set(harmful):
        raise ArgumentError("{groups} overlap: {both}", both=sorted(set(benign) & set(harmful)))
    rng = np.random.default_rng(seed)
    side = round(images.shape[1] ** 0.5)
    x = torch.from_numpy(np.asarray(images, dtype=np.float32).reshape(-1, 1, side, side))
    x = (x - MNIST_MEAN) / MNIST_STD
    out = []
    defence: KeyedDataset | None = None
    for group, extra, about in zip(groups, (0, defence_per_class), descriptions, strict=True):
        parts: dict[str, tuple[list[Tensor], list[Tensor]]] = {
            split: ([], []) for split in ("train", "test", "defence")
        }
        for new_label, digit in enumerate(group):
            rows = np.flatnonzero(labels == digit)
            need = train_per_class + test_per_class
            if rows.size < need + extra:
                raise ArgumentError(
                    "digit {digit} has {have} images, fewer than {train_per_class} + "
                    "{test_per_class} + {defence_per_class} = {need}",
                    digit=digit,
                    have=rows.size,
                    need=need + extra,
                )
            rows = rng.permutation(rows)
            for split, sel in (
                ("train", rows[:train_per_class]),
                ("test", rows[train_per_class:need]),
                ("defence", rows[need : need + extra]),
            ):
                parts[split][0].append(x[sel])
                parts[split][1].append(torch.full((sel.size,), new_label, dtype=torch.long))
        classes = [(names or {}).get(d, str(d)) for d in group]
        train, test, reserved = (
            KeyedDataset(torch.cat(a), torch.cat(b), classes=classes) for a, b in parts.values()
        )
        out.append(ImageSplit(train, test, len(group), about))
        defence = reserved if extra else defence
    return out[0], out[1], defence


@dataclass(frozen=True)
class GreyToRGB:
    """A grey image (``h × w`` uint8, 0–255) → bilinearly resized to ``size × size``,
    replicated to 3 channels and normalised with ``mean``/``std`` (ImageNet's for the
    ImageNet backbones). Deterministic, so its outputs may be cached."""

    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __call__(self, sample: object) -> Tensor:
        grey = cast(Tensor, sample).to(torch.float32).div(255.0)
        x = torch.nn.functional.interpolate(
            grey.reshape(1, 1, *grey.shape[-2:]),
            size=(self.size, self.size),
            mode="bilinear",
            align_corners=False,
        ).expand(1, 3, self.size, self.size)
        mean = torch.tensor(self.mean).reshape(1, 3, 1, 1)
        std = torch.tensor(self.std).reshape(1, 3, 1, 1)
        return ((x - mean) / std)[0]

    def describe(self) -> str:
        return f"grey→rgb bilinear {self.size}x{self.size} mean={self.mean} std={self.std}"


def image_transform(
    image_size: int, mean: Sequence[float], std: Sequence[float], *, train: bool
) -> Callable[[object], Tensor]:
    """timm's default train / eval transform for ``image_size`` (see the module docstring)."""
    from torchvision import transforms as T

    if train:
        head = [T.RandomResizedCrop(image_size), T.RandomHorizontalFlip()]
    else:
        head = [T.Resize(round(image_size / 0.875)), T.CenterCrop(image_size)]
    transform: Callable[[object], Tensor] = T.Compose(
        [*head, T.ToTensor(), T.Normalize(list(mean), list(std))]
    )
    return transform


@dataclass(frozen=True)
class _ImageFile:
    """Loads one image as RGB when called (picklable, for worker and spawned processes)."""

    path: Path

    def __call__(self) -> object:
        from PIL import Image

        try:
            with Image.open(self.path) as img:
                return img.convert("RGB")
        except (OSError, ValueError, SyntaxError) as exc:  # PIL's errors for damaged files
            raise UserError(
                f"not a readable image ({' '.join(str(exc).split())[:200]})",
                self.path,
                "remove or replace that file",
            ) from None


def _class_folders(split_dir: Path, dataset: ImageDataset) -> list[tuple[Path, str]]:
    classes = sorted(p for p in split_dir.iterdir() if p.is_dir())
    if not classes:
        raise UserError(
            "has no class folders",
            split_dir,
            f"{dataset.value} expects {split_dir.name}/<class>/<image> "
            "(see condimmune.deep.images)",
        )
    return [(p, p.name) for p in classes]


def _scan(split_dir: Path, dataset: ImageDataset) -> tuple[list[Path], list[int], list[str]]:
    paths, labels, names = [], [], []
    for label, (folder, name) in enumerate(_class_folders(split_dir, dataset)):
        files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        paths += files
        labels += [label] * len(files)
        names.append(name)
    if not paths:
        raise UserError(
            "has class folders but no images",
            split_dir,
            f"put images ({', '.join(sorted(IMAGE_SUFFIXES))}) in its class folders",
        )
    return paths, labels, names


def _cars_devkit(root: Path, split: str) -> tuple[list[Path], list[int], list[str]]:
    """The original Stanford Cars release: .mat annotations with 1-based class ids."""
    from scipy.io import loadmat

    devkit = root / "devkit"
    meta = loadmat(devkit / "cars_meta.mat", squeeze_me=True)
    names = [str(n) for n in np.atleast_1d(meta["class_names"])]
    if split == "train":
        annos, images = devkit / "cars_train_annos.mat", root / "cars_train"
    else:
        beside, inside = (d / "cars_test_annos_withlabels.mat" for d in (root, devkit))
        annos = inside if not beside.is_file() and inside.is_file() else beside
        images = root / "cars_test"
    if not annos.is_file() or not images.is_dir():
        raise FileNotFoundError(f"stanford-cars: expected {annos} and the folder {images}")
    rows = np.atleast_1d(loadmat(annos, squeeze_me=True)["annotations"])
    paths = [images / str(r["fname"]) for r in rows]
    labels = [int(r["class"]) - 1 for r in rows]
    return paths, labels, names


def folder_dataset(
    dataset: ImageDataset | str,
    root: str | Path | None,
    split: str,
    transform: Callable[[object], Tensor],
    *,
    key: str,
    max_images: int = 0,
    seed: int = 0,
) -> KeyedDataset:
    """A local folder dataset (layouts in the module docstring), optionally subsampled to
    ``max_images`` by a seeded permutation (0 = all)."""
    dataset = parse_choice(ImageDataset, dataset, key)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if root is None:
        hint = "(layouts: condimmune.deep.images; nothing is downloaded)"
        raise ArgumentError(
            f"{{key}} is not set; point it at a local {dataset.value} folder {hint}", key=key
        )
    if not (base := Path(root).expanduser()).is_dir():
        raise FileNotFoundError(
            f"{key}={root}: no such directory; expected a {dataset.value} folder"
        )
    if dataset is ImageDataset.STANFORD_CARS and (base / "devkit" / "cars_meta.mat").is_file():
        paths, labels, names = _cars_devkit(base, split)
    else:
        split_dir = base / _SPLIT_DIRS[dataset][split]
        if not split_dir.is_dir():
            raise FileNotFoundError(
                f"{key}={root}: expected the folder {split_dir} ({dataset.value} layout: "
                f"{'/'.join(_SPLIT_DIRS[dataset].values())} with one sub-folder per class)"
            )
        paths, labels, names = _scan(split_dir, dataset)
    order = np.arange(len(paths))
    if 0 < max_images < len(paths):
        order = np.sort(np.random.default_rng(seed).permutation(len(paths))[:max_images])
    return KeyedDataset(
        [_ImageFile(paths[i]) for i in order],
        torch.tensor([labels[i] for i in order], dtype=torch.long),
        transform,
        seed=seed,
        classes=names,
    )
