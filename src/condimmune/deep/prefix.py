"""The frozen prefix of a backbone, computed once per image and cached.

Immunization trains only the last blocks (:mod:`condimmune.deep.bodies`); everything before
them is frozen, so its output for an image never changes during a run, and is the same for
θ0 and θ_I. :func:`prefix_dataset` runs the prefix once over a dataset (eval mode, no
gradient) and returns a dataset of those outputs; a :class:`~condimmune.deep.backbones.DeepModel`
switched with ``read_prefix()`` then runs only its trained suffix on them. That is exact: the
test checks ``suffix(prefix(x)) == model(x)``.

On disk (``cache_dir``) each result is one safetensors file named by a fingerprint of what
determines it: the prefix's parameters and buffers (so the weights *and* the split point),
the dataset's stored images and labels (the data selection), and a caller's description of
the preprocessing (e.g. the resize). A file whose recorded fingerprint differs is recomputed.
The file also records the sha256 of its tensor (:mod:`condimmune.core.cache_files`), checked
on every read by hashing the tensor read (the model's fingerprint is not computed again): a
file that cannot be read or fails the check is recomputed and rewritten with a
:class:`~condimmune.core.errors.DamagedCacheWarning`. Temporaries that a killed writer left
in ``cache_dir/prefix/`` are removed on the way
(:func:`~condimmune.core.cache_files.clear_abandoned_temporaries`).

Only datasets without random augmentation may be cached (the caller's responsibility: a
:class:`~condimmune.deep.images.KeyedDataset` is read with key ``(-1, i)``, the eval key).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from condimmune.core.cache_files import (
    clear_abandoned_temporaries,
    read_cache_file,
    update_with_tensor,
    warn_damaged,
    write_cache_file,
)
from condimmune.deep.backbones import DeepModel
from condimmune.deep.images import KeyedDataset

__all__ = ["prefix_dataset", "prefix_fingerprint"]


def prefix_fingerprint(model: DeepModel, data: KeyedDataset, preprocessing: str) -> str:
    """sha256 of the prefix's state (weights and split point), the stored samples, the
    labels and ``preprocessing`` (a description of the dataset's deterministic transform)."""
    digest = hashlib.sha256(preprocessing.encode())
    digest.update(type(model.body).__name__.encode())
    for name, tensor in model.state_dict().items():  # the names fix the split point
        if name == "feature_map" or name.startswith(model.trainable_prefixes):
            continue
        digest.update(name.encode())
        update_with_tensor(digest, tensor)
    if isinstance(data.images, Tensor):
        update_with_tensor(digest, data.images)
    else:  # lazily loaded files: their paths stand for them
        digest.update(repr([getattr(item, "path", item) for item in data.images]).encode())
    update_with_tensor(digest, data.labels)
    return digest.hexdigest()


@torch.no_grad()
def _compute(
    model: DeepModel, data: KeyedDataset, batch_size: int, device: torch.device, progress: bool
) -> Tensor:
    model.eval()
    outputs = []
    loader = DataLoader(data, batch_size=batch_size, shuffle=False)
    for x, _ in tqdm(loader, disable=not progress, desc="frozen prefix", leave=False):
        outputs.append(model.prefix(x.to(device)).float().cpu())
    return torch.cat(outputs)


def _read_cached(path: Path, fingerprint: str, count: int) -> Tensor | None:
    found = read_cache_file(path, {"fingerprint": fingerprint})
    if found.damage is not None:
        warn_damaged(path, found.damage, "computing the prefix again")
    cached = (found.tensors or {}).get("prefix")
    return cached if cached is not None and cached.shape[0] == count else None


def prefix_dataset(
    model: DeepModel,
    data: KeyedDataset,
    *,
    preprocessing: str,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    cache_dir: Path | None = None,
    progress: bool = False,
) -> KeyedDataset:
    """A dataset of the frozen prefix's outputs (float32) for every sample of ``data``, with
    the same labels and classes; read from / written to ``cache_dir/prefix/`` when given."""
    fingerprint = prefix_fingerprint(model, data, preprocessing)
    path = cache_dir / "prefix" / f"{fingerprint[:32]}.safetensors" if cache_dir else None
    cached = None
    if path is not None:
        clear_abandoned_temporaries(path.parent)
        cached = _read_cached(path, fingerprint, len(data))
    if cached is not None:
        outputs = cached
    else:
        outputs = _compute(model, data, batch_size, torch.device(device), progress)
        if path is not None:
            write_cache_file(path, {"prefix": outputs}, {"fingerprint": fingerprint})
    return KeyedDataset(outputs, data.labels, classes=data.classes)
