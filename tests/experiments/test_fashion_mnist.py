"""Reading Fashion-MNIST IDX files: every malformed or missing file is named in one line."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from condimmune.core.errors import UserError
from condimmune.experiments.pipelines.deep.data import fashion_mnist_arrays


def _idx(path, array: np.ndarray, *, magic_type: int = 0x08, gz: bool = True) -> None:
    header = bytes([0, 0, magic_type, array.ndim]) + b"".join(
        struct.pack(">I", d) for d in array.shape
    )
    payload = header + array.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)


def _write(root, n=6, side=28, labels=None, split="t10k", gz=True, magic_type=0x08) -> None:
    root.mkdir(exist_ok=True)
    images = np.arange(n * side * side).reshape(n, side, side) % 256
    _idx(root / f"{split}-images-idx3-ubyte", images, gz=gz, magic_type=magic_type)
    lab = np.arange(n) % 10 if labels is None else labels
    _idx(root / f"{split}-labels-idx1-ubyte", lab, gz=gz)


@pytest.mark.parametrize("gz", [True, False])
def test_reads_gzipped_or_plain_idx_files(tmp_path, gz) -> None:
    _write(tmp_path / "f", gz=gz)
    images, labels = fashion_mnist_arrays(tmp_path / "f", "test")
    assert images.shape == (6, 28, 28) and images.dtype == np.uint8
    assert labels.tolist() == [0, 1, 2, 3, 4, 5] and labels.dtype == np.int64


@pytest.mark.parametrize(
    ("kwargs", "match", "file"),
    [
        ({"side": 27}, "not n × 28 × 28", "t10k-images-idx3-ubyte.gz"),
        ({"labels": np.arange(5)}, "labels for the 6 images", "t10k-labels-idx1-ubyte.gz"),
        ({"labels": np.array([0, 1, 2, 3, 4, 12])}, "label 12 outside 0–9", "t10k-labels"),
        ({"magic_type": 0x0D}, "IDX", "t10k-images-idx3-ubyte.gz"),  # float, not bytes
    ],
    ids=["shape", "count", "label", "dtype"],
)
def test_malformed_files_are_named(tmp_path, kwargs, match, file) -> None:
    _write(tmp_path / "f", **kwargs)
    with pytest.raises(ValueError, match=match) as err:
        fashion_mnist_arrays(tmp_path / "f", "test")
    assert file in str(err.value) and "\n" not in str(err.value)


def test_a_missing_file_names_it_and_the_install_command(tmp_path) -> None:
    _write(tmp_path / "f")  # the test split only
    with pytest.raises(UserError) as err:
        fashion_mnist_arrays(tmp_path / "f", "train")
    message = str(err.value)
    assert "train-images-idx3-ubyte.gz" in message
    assert "apt-get install -y dataset-fashion-mnist" in message and "\n" not in message


def test_the_experiment_refuses_a_missing_root_and_too_few_digits(tmp_path) -> None:
    from condimmune.experiments.config import apply_overrides, default_config
    from condimmune.experiments.pipeline import resolve_plan
    from condimmune.experiments.pipelines.deep.data import load_deep_data

    def load(*sets: str) -> object:
        options = resolve_plan(apply_overrides(base, list(sets))).options
        return load_deep_data(options.data, options.model, seed=0)

    base = default_config("mobilenet-fashion-mnist")
    with pytest.raises(UserError, match="dataset-fashion-mnist"):
        load(f"data.root={tmp_path / 'nowhere'}")
    # the packaged subset has 500 images per digit: none would be left for training (the
    # digits are checked after Fashion-MNIST is read: a tiny stand-in of both splits will do)
    for split in ("train", "t10k"):
        _write(tmp_path / "f", split=split)
    with pytest.raises(
        ValueError, match=r"not more than test_per_class \+ defence_per_class = 500"
    ):
        load(f"data.root={tmp_path / 'f'}", "data.test_per_class=500")


# ------------------------------------------- mnist-cnn with Fashion-MNIST as the harmful task
def _load_mnist_cnn(experiment: str, *sets: str):
    from condimmune.experiments.config import apply_overrides, default_config
    from condimmune.experiments.pipeline import resolve_plan
    from condimmune.experiments.pipelines.deep.data import load_deep_data

    options = resolve_plan(apply_overrides(default_config(experiment), list(sets))).options
    return load_deep_data(options.data, options.model, seed=0)


def _garments(root, per_class: int) -> None:
    """A stand-in training split: every image of class c is filled with 10 + 20·c."""
    labels = np.repeat(np.arange(10), per_class)
    images = np.broadcast_to((10 + 20 * labels)[:, None, None], (labels.size, 28, 28))
    root.mkdir()
    _idx(root / "train-images-idx3-ubyte", images)
    _idx(root / "train-labels-idx1-ubyte", labels)


@pytest.mark.parametrize("experiment", ["mnist-cnn", "mnist-cnn-cluttered"])
def test_fashion_mnist_can_be_the_harmful_task_beside_benign_digits(tmp_path, experiment) -> None:
    _garments(tmp_path / "f", per_class=520)
    sets = ("data.harmful_images=fashion-mnist", f"data.harmful_root={tmp_path / 'f'}")
    digits = _load_mnist_cnn(experiment)
    data = _load_mnist_cnn(experiment, *sets, "data.harmful_digits=0,2,9")
    assert data.harmful.train.classes == ["T-shirt/top", "Pullover", "Ankle boot"]
    assert data.harmful.description.endswith("T-shirt/top, Pullover, Ankle boot")
    assert data.harmful.num_classes == 3 and "harmful fashion-mnist" in data.preprocessing
    per_class = len(digits.harmful.train) // 5
    assert len(data.harmful.train) == 3 * per_class
    assert sorted(set(data.harmful.train.labels.tolist())) == [0, 1, 2]
    # the benign digits are the very images they are without Fashion-MNIST
    assert torch.equal(data.benign.train.images, digits.benign.train.images)
    assert data.benign.train.classes == digits.benign.train.classes
    # each garment class is its own stand-in image (where no clutter fell on it): the labels
    # follow the classes asked for
    brightest = data.harmful.train.images.flatten(1).max(1).values
    for label, garment in enumerate((0, 2, 9)):
        level = (10 + 20 * garment) / 255.0
        assert torch.allclose(
            brightest[data.harmful.train.labels == label].min(),
            torch.tensor((level - 0.1307) / 0.3081),
            atol=1e-5,
        )


def test_fashion_mnist_harmful_task_refusals(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"data\.harmful_images=fashion-mnist"):
        _load_mnist_cnn("mnist-cnn", f"data.harmful_root={tmp_path}")
    with pytest.raises(UserError, match="dataset-fashion-mnist") as err:
        _load_mnist_cnn(
            "mnist-cnn",
            "data.harmful_images=fashion-mnist",
            f"data.harmful_root={tmp_path / 'nowhere'}",
        )
    assert "train-images-idx3-ubyte.gz" in str(err.value)
    _garments(tmp_path / "few", per_class=400)
    with pytest.raises(ValueError, match=r"class 5 \(Sandal\) has 400 training images"):
        _load_mnist_cnn(
            "mnist-cnn",
            "data.harmful_images=fashion-mnist",
            f"data.harmful_root={tmp_path / 'few'}",
        )


@pytest.mark.parametrize(
    ("sets", "match"),
    [
        (["data.harmful_images=cifar"], "unknown data.harmful_images 'cifar'; choose one of"),
        (["data.harmful_digits=0123"], "overlap"),
    ],
    ids=["unknown-images", "digit-overlap"],
)
def test_mnist_cnn_harmful_images_config_refusals(sets, match) -> None:
    from condimmune.experiments.config import apply_overrides, default_config

    with pytest.raises(ValueError, match=match):
        apply_overrides(default_config("mnist-cnn"), sets)


def test_garment_classes_may_share_indices_with_the_benign_digits_and_mobilenet_ignores_it() -> (
    None
):
    from condimmune.experiments.config import apply_overrides, default_config

    config = apply_overrides(
        default_config("mnist-cnn"),
        ["data.harmful_images=fashion-mnist", "data.harmful_digits=0123"],
    )
    assert config.data.harmful_images == "fashion-mnist"
    with pytest.raises(ValueError, match=r"data\.harmful_images"):
        apply_overrides(
            default_config("mobilenet-fashion-mnist"), ["data.harmful_images=fashion-mnist"]
        )


@pytest.mark.parametrize(
    ("experiment", "theta0", "attacks"),
    [
        ("mnist-cnn", "9c6dd044d20882a5", "554907f166a1093b"),
        ("mnist-cnn-cluttered", "73785fc9589c2358", "2d0c4a258d037786"),
    ],
)
def test_digit_runs_keep_the_keys_they_had_before_harmful_images_existed(
    experiment, theta0, attacks
) -> None:
    """θ0's fingerprint and its stored attacks' key, as computed by the code before the option
    (commit 962f0ec): saved θ0's and θ0 searches made then are still found."""
    from condimmune.experiments.config import apply_overrides, default_config
    from condimmune.experiments.pipeline import resolve_plan
    from condimmune.experiments.pipelines.deep.attack import _original_tag
    from condimmune.experiments.pipelines.deep.original import original_fingerprint

    plan = resolve_plan(default_config(experiment))
    assert original_fingerprint(plan) == theta0
    assert _original_tag(plan, b"theta0") == attacks
    garments = resolve_plan(
        apply_overrides(default_config(experiment), ["data.harmful_images=fashion-mnist"])
    )
    assert original_fingerprint(garments) != theta0
    assert _original_tag(garments, b"theta0") != attacks
