"""Local image folders (ImageNet, Stanford Cars, Country211 layouts) and keyed augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _helpers import make_folder

from condimmune.deep.images import (
    digit_group_tasks,
    folder_dataset,
    image_transform,
    parse_digits,
)

LAYOUTS = [
    pytest.param("imagenet", ("train", "val"), {"train": "train", "test": "val"}, id="imagenet"),
    pytest.param(
        "stanford-cars", ("train", "test"), {"train": "train", "test": "test"}, id="stanford-cars"
    ),
    pytest.param(
        "country211",
        ("train", "valid", "test"),
        {"train": "train", "test": "test"},
        id="country211",
    ),
]


def _expected_image(path, tf) -> torch.Tensor:
    from PIL import Image

    with Image.open(path) as img:
        return tf(img.convert("RGB"))


@pytest.mark.parametrize(("dataset", "splits", "folders"), LAYOUTS)
def test_usual_layouts_load(tmp_path, dataset, splits, folders) -> None:
    """Each split reads its own folder (make_folder draws different pixels per split), in
    sorted class order, every image exactly as the transform makes it from its file."""
    root = make_folder(tmp_path / dataset, splits)
    tf = image_transform(8, (0.5,) * 3, (0.5,) * 3, train=False)
    for split in ("train", "test"):
        ds = folder_dataset(dataset, root, split, tf, key="data.root")
        assert len(ds) == 6 and ds.classes == ["a", "b"]
        assert ds.labels.tolist() == [0, 0, 0, 1, 1, 1]
        for index, (cls, name) in enumerate((c, f"{i}.jpg") for c in "ab" for i in range(3)):
            x, y = ds[index]
            assert x.shape == (3, 8, 8) and int(y) == "ab".index(cls)
            expected = _expected_image(root / folders[split] / cls / name, tf)
            torch.testing.assert_close(x, expected, rtol=0, atol=0)


def _selected(ds) -> list:
    return [item.path for item in ds.images]


def test_subsample_is_seeded(tmp_path) -> None:
    root = make_folder(tmp_path / "c", ("train", "test"), per_class=5)
    tf = image_transform(8, (0.5,) * 3, (0.5,) * 3, train=False)

    def subsample(seed, max_images=4):
        return folder_dataset(
            "country211", root, "train", tf, key="k", max_images=max_images, seed=seed
        )

    everything = _selected(subsample(0, max_images=0))
    assert len(everything) == 10
    a, b = subsample(1), subsample(1)
    assert _selected(a) == _selected(b) and torch.equal(a.labels, b.labels)
    picked = _selected(a)
    assert len(picked) == 4 == len(set(picked))
    # a subset of all images, kept in the folder order, each with its folder's label
    assert picked == [p for p in everything if p in picked]
    assert a.labels.tolist() == [["a", "b"].index(p.parent.name) for p in picked]
    # the seed decides the subset: five seeds do not all draw the same 4 of 10 images
    assert len({tuple(_selected(subsample(seed))) for seed in range(5)}) > 1
    # max_images ≥ the number of images keeps them all
    assert _selected(subsample(1, max_images=10)) == everything


def test_augmentation_is_reproducible_per_epoch_and_index(tmp_path) -> None:
    root = make_folder(tmp_path / "i", ("train", "val"), size=40)
    tf = image_transform(16, (0.5,) * 3, (0.5,) * 3, train=True)
    ds = folder_dataset("imagenet", root, "train", tf, key="data.root", seed=3)
    state = torch.random.get_rng_state()
    assert torch.equal(ds[(2, 1)][0], ds[(2, 1)][0])
    # a fresh dataset (a resumed run) draws the very same augmentation for the same key
    again = folder_dataset("imagenet", root, "train", tf, key="data.root", seed=3)
    assert torch.equal(again[(2, 1)][0], ds[(2, 1)][0])
    # the key changes the draw: four epochs of one image are not all the same crop
    epochs = [ds[(epoch, 1)][0] for epoch in range(4)]
    assert any(not torch.equal(epochs[0], other) for other in epochs[1:])
    assert torch.equal(torch.random.get_rng_state(), state)
    # without randomness in the transform, the epoch is irrelevant
    plain = image_transform(16, (0.5,) * 3, (0.5,) * 3, train=False)
    fixed = folder_dataset("imagenet", root, "train", plain, key="data.root", seed=3)
    assert torch.equal(fixed[(0, 1)][0], fixed[(5, 1)][0])
    assert torch.equal(fixed[1][0], fixed[(0, 1)][0])


ERRORS = [
    pytest.param("unset", lambda p: None, ValueError, "not set", id="unset"),
    pytest.param(
        "missing-root",
        lambda p: p / "absent",
        FileNotFoundError,
        "no such directory",
        id="missing-root",
    ),
    pytest.param(
        "missing-split",
        lambda p: make_folder(p / "x", ("train",)),
        FileNotFoundError,
        "val",
        id="missing-split",
    ),
    pytest.param(
        "no-classes",
        lambda p: _mkdirs(p / "y", "train", "val"),
        ValueError,
        "no class folders",
        id="no-classes",
    ),
    pytest.param(
        "no-images",
        lambda p: _mkdirs(p / "z", "train/a", "val/a"),
        ValueError,
        "no images",
        id="no-images",
    ),
]


def _mkdirs(root, *dirs):
    for d in dirs:
        (root / d).mkdir(parents=True)
    return root


@pytest.mark.parametrize(("case", "make", "exc", "match"), ERRORS)
def test_clear_errors_for_missing_or_malformed_folders(tmp_path, case, make, exc, match) -> None:
    tf = image_transform(8, (0.5,) * 3, (0.5,) * 3, train=False)
    split = "train" if case in ("unset", "missing-root") else "test"
    with pytest.raises(exc, match=match):
        folder_dataset("imagenet", make(tmp_path), split, tf, key="data.root")


@pytest.mark.parametrize(
    ("text", "digits"),
    [
        pytest.param("01234", [0, 1, 2, 3, 4], id="plain"),
        pytest.param("5,6,7", [5, 6, 7], id="commas"),
        pytest.param("9, 3", [9, 3], id="comma-space-keeps-order"),
    ],
)
def test_parse_digits(text, digits) -> None:
    assert parse_digits(text, "data.benign_digits") == digits


@pytest.mark.parametrize(
    ("text", "match"),
    [
        pytest.param("11", "lists a digit twice", id="repeat"),
        pytest.param("a1", "must list digits", id="letter"),
        pytest.param("", "must list digits", id="empty"),
        pytest.param("3", "at least two digits", id="single"),
    ],
)
def test_parse_digits_refuses(text, match) -> None:
    with pytest.raises(ValueError, match=match) as err:
        parse_digits(text, "data.benign_digits")
    assert str(err.value).startswith("data.benign_digits ")  # names the config key


def test_the_defence_split_is_disjoint_and_leaves_the_other_splits_as_they_were() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 12)
    images = rng.integers(0, 256, size=(48, 16)).astype(np.uint8)
    images[:, 0] = np.arange(48)  # each image tells its row
    kwargs = {"train_per_class": 5, "test_per_class": 3, "seed": 1, "descriptions": ("toy", "toy")}
    plain = digit_group_tasks(images, labels, ([0, 1], [2, 3]), **kwargs)
    benign, harmful, defence = digit_group_tasks(
        images, labels, ([0, 1], [2, 3]), defence_per_class=4, **kwargs
    )
    assert plain[2] is None and defence is not None and len(defence) == 8
    for a, b in ((plain[0], benign), (plain[1], harmful)):
        assert torch.equal(a.train.images, b.train.images)
        assert torch.equal(a.test.images, b.test.images)

    def rows(ds) -> set[float]:
        return {float(v) for v in ds.images[:, 0, 0, 0]}

    used = rows(harmful.train) | rows(harmful.test)
    assert not rows(defence) & used and len(rows(defence)) == 8
    assert sorted(defence.labels.tolist()) == [0] * 4 + [1] * 4
    with pytest.raises(ValueError, match="fewer than"):
        digit_group_tasks(images, labels, ([0, 1], [2, 3]), defence_per_class=5, **kwargs)
