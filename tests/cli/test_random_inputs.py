"""Property tests: random ``--set`` strings, and random bytes as a config file or as data
files (MNIST IDX, Ames CSV, weights), never end in a traceback or a partial output: the
command exits 0 with a complete run directory, or 2 with one ``error:`` line and nothing
left on disk.

``--set`` keys are drawn from the real keys (and from random text); keys whose valid values
make a run long (epochs, budgets, sizes, batch sizes) are left out, so that a valid draw
costs a tiny run, not hours.
"""

from __future__ import annotations

import struct
import tempfile
from pathlib import Path

from _cli_support import TINY_LINEAR, error_line, idx, invoke, leftovers, mnist_arrays, sets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import Result

from condimmune.experiments.config import config_to_dict, default_config

RUN_FILES = ("config.yaml", "metrics.json", "extractor.safetensors", "report.md")


def _keys(data: dict[str, object], prefix: str = "") -> list[str]:
    out: list[str] = []
    for key, value in data.items():
        out += _keys(value, f"{prefix}{key}.") if isinstance(value, dict) else [prefix + key]
    return out


COSTLY = ("epochs", "budget", "per_class", "rows", "batch_size", "inner_steps")
KEYS = [k for k in _keys(config_to_dict(default_config("digits"))) if not k.endswith(COSTLY)] + [
    "data.root",
    "train",
    "seed.x",
    "",
]

PROPERTY = settings(
    max_examples=12,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

values = st.one_of(
    st.text(max_size=12),
    st.from_regex(r"[-+]?[0-9]{0,4}(\.[0-9]{0,3})?([eE][-+]?[0-9]{1,3})?", fullmatch=True),
    st.sampled_from(["nan", "-inf", "1e400", "0x10", "1_0", "٣", "１", "true", "null", "~", " 5 "]),
)


def check(result: Result, folder: Path, out: Path) -> None:
    """Exit 0 with a complete run directory, or 2 with one error line and no output."""
    assert "Traceback" not in result.output, result.output
    assert result.exit_code in (0, 2), result.output
    if result.exit_code == 0:
        assert all((out / name).is_file() for name in RUN_FILES), result.output
    else:
        error_line(result)
        assert not out.exists(), result.output
    assert leftovers(folder) == [], result.output


@PROPERTY
@given(key=st.one_of(st.sampled_from(KEYS), st.text(max_size=12)), value=values)
def test_random_set_strings(key: str, value: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "out"
        args = ["run", "digits", "--out", out, "--no-progress", *sets(TINY_LINEAR)]
        check(invoke(*args, "--set", f"{key}={value}"), Path(folder), out)


@PROPERTY
@given(content=st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode)))
def test_random_bytes_as_the_config_file(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        config, out = Path(folder) / "config.yaml", Path(folder) / "out"
        config.write_bytes(content)
        args = ["run", "digits", "--out", out, "--no-progress", "--config", config]
        check(invoke(*args, *sets(TINY_LINEAR)), Path(folder), out)


X, Y = mnist_arrays()
IMAGES, LABELS = idx(X), idx(Y)


def idx_like(dims: list[int], payload: bytes) -> bytes:
    """An IDX header of unsigned bytes with ``dims``, then ``payload``."""
    return struct.pack(">BBBB", 0, 0, 8, len(dims)) + struct.pack(f">{len(dims)}I", *dims) + payload


idx_files = st.one_of(
    st.binary(max_size=300),
    st.builds(idx_like, st.lists(st.integers(0, 2**32 - 1), max_size=4), st.binary(max_size=64)),
    st.integers(0, len(IMAGES) - 1).map(lambda n: IMAGES[:n]),
)


@PROPERTY
@given(images=idx_files, labels=st.one_of(idx_files, st.just(LABELS)), gz=st.booleans())
def test_random_bytes_as_mnist_files(images: bytes, labels: bytes, gz: bool) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root, out = Path(folder) / "mnist", Path(folder) / "out"
        root.mkdir()
        suffix = ".gz" if gz else ""
        (root / f"train-images-idx3-ubyte{suffix}").write_bytes(images)
        (root / "train-labels-idx1-ubyte").write_bytes(labels)
        args = ["run", "mnist-pair", "--out", out, "--no-progress", *sets(TINY_LINEAR)]
        check(invoke(*args, "--set", f"data.root={root}"), Path(folder), out)


@PROPERTY
@given(
    content=st.one_of(
        st.binary(max_size=300),
        st.text(alphabet="MSZoningLotAreaSalePriceRLRM0123456789,.\n-inf", max_size=300).map(
            str.encode
        ),
    )
)
def test_random_bytes_as_the_house_price_csv(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        csv, out = Path(folder) / "train.csv", Path(folder) / "out"
        csv.write_bytes(content)
        args = ["run", "house-price", "--out", out, "--no-progress", "--set", f"data.root={csv}"]
        check(invoke(*args, "--set", "train.epochs=1"), Path(folder), out)


@PROPERTY
@given(content=st.binary(max_size=300), name=st.sampled_from(["w.safetensors", "w.pt"]))
def test_random_bytes_as_deep_weights(content: bytes, name: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        weights, out = Path(folder) / name, Path(folder) / "out"
        weights.write_bytes(content)
        args = ["run", "mnist-cnn", "--out", out, "--no-progress"]
        check(invoke(*args, "--set", f"model.weights={weights}"), Path(folder), out)
