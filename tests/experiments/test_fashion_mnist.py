"""Reading Fashion-MNIST IDX files: every malformed or missing file is named in one line."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

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
