"""Local image folders (ImageNet, Stanford Cars, Country211 layouts) and keyed augmentation."""

from __future__ import annotations

import pytest
import torch
from _helpers import make_folder

from condimmune.deep.images import folder_dataset, image_transform, parse_digits

LAYOUTS = [
    ("imagenet", ("train", "val")),
    ("stanford-cars", ("train", "test")),
    ("country211", ("train", "valid", "test")),
]


@pytest.mark.parametrize(("dataset", "splits"), LAYOUTS, ids=[x[0] for x in LAYOUTS])
def test_usual_layouts_load(tmp_path, dataset, splits) -> None:
    root = make_folder(tmp_path / dataset, splits)
    tf = image_transform(8, (0.5,) * 3, (0.5,) * 3, train=False)
    for split in ("train", "test"):
        ds = folder_dataset(dataset, root, split, tf, key="data.root")
        assert len(ds) == 6 and ds.classes == ["a", "b"]
        x, y = ds[0]
        assert x.shape == (3, 8, 8) and int(y) == 0


def test_subsample_is_seeded(tmp_path) -> None:
    root = make_folder(tmp_path / "c", ("train", "test"), per_class=5)
    tf = image_transform(8, (0.5,) * 3, (0.5,) * 3, train=False)
    a = folder_dataset("country211", root, "train", tf, key="k", max_images=4, seed=1)
    b = folder_dataset("country211", root, "train", tf, key="k", max_images=4, seed=1)
    assert len(a) == 4 and torch.equal(a.labels, b.labels)


def test_augmentation_is_reproducible_per_epoch_and_index(tmp_path) -> None:
    root = make_folder(tmp_path / "i", ("train", "val"), size=40)
    tf = image_transform(16, (0.5,) * 3, (0.5,) * 3, train=True)
    ds = folder_dataset("imagenet", root, "train", tf, key="data.root", seed=3)
    state = torch.random.get_rng_state()
    assert torch.equal(ds[(2, 1)][0], ds[(2, 1)][0])
    assert not torch.equal(ds[(2, 1)][0], ds[(3, 1)][0])
    assert torch.equal(torch.random.get_rng_state(), state)


ERRORS = [
    ("unset", lambda p: None, ValueError, "not set"),
    ("missing-root", lambda p: p / "absent", FileNotFoundError, "no such directory"),
    ("missing-split", lambda p: make_folder(p / "x", ("train",)), FileNotFoundError, "val"),
    ("no-classes", lambda p: _mkdirs(p / "y", "train", "val"), ValueError, "no class folders"),
    ("no-images", lambda p: _mkdirs(p / "z", "train/a", "val/a"), ValueError, "no images"),
]


def _mkdirs(root, *dirs):
    for d in dirs:
        (root / d).mkdir(parents=True)
    return root


@pytest.mark.parametrize(("case", "make", "exc", "match"), ERRORS, ids=[e[0] for e in ERRORS])
def test_clear_errors_for_missing_or_malformed_folders(tmp_path, case, make, exc, match) -> None:
    tf = image_transform(8, (0.5,) * 3, (0.5,) * 3, train=False)
    split = "train" if case in ("unset", "missing-root") else "test"
    with pytest.raises(exc, match=match):
        folder_dataset("imagenet", make(tmp_path), split, tf, key="data.root")


@pytest.mark.parametrize(
    ("text", "ok"),
    [("01234", [0, 1, 2, 3, 4]), ("5,6,7", [5, 6, 7]), ("11", None), ("a1", None), ("3", None)],
    ids=["plain", "commas", "repeat", "letter", "single"],
)
def test_parse_digits(text, ok) -> None:
    if ok is None:
        with pytest.raises(ValueError):
            parse_digits(text, "data.benign_digits")
    else:
        assert parse_digits(text, "data.benign_digits") == ok
