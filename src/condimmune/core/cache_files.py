"""Cache files: safetensors files whose tensors carry a content checksum, checked on read.

A cache file (the frozen prefix's outputs, the copy of installed weights) is written by
:func:`write_cache_file`: atomically (:func:`~condimmune._files.replace_atomically`), with
the caller's metadata (what the content was computed from) and ``content_sha256``, the
sha256 of its tensors (:func:`tensors_sha256`: each tensor's name, dtype, shape and bytes,
in name order). :func:`read_cache_file` reads every tensor and hashes it again, so damage
anywhere in the data is found, not only in the header. Hashing the loaded tensors rather
than the file keeps the check independent of the safetensors layout and checks exactly
what the caller uses; it costs one pass of sha256 (about 1 GB/s) over bytes read anyway.

What a read finds:

* no file, a file computed from something else (its metadata differs) or a file without a
  checksum (written by an older condimmune): nothing, and the caller computes and writes it;
* a file that cannot be read (truncated, not safetensors) or whose tensors do not match
  their checksum: damage, which the caller reports (:func:`warn_damaged`, a
  :class:`~condimmune.core.errors.DamagedCacheWarning`) and rebuilds, or refuses with a
  :class:`~condimmune.core.errors.UserError` where it cannot rebuild.

:func:`clear_abandoned_temporaries` removes the temporaries that killed writers left in a
cache directory, with a :class:`~condimmune.core.errors.StaleFilesWarning`; a temporary
that a live process may still be writing is kept
(:func:`~condimmune._files.remove_abandoned_temporaries` says how it is told apart).
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from condimmune._files import remove_abandoned_temporaries, replace_atomically
from condimmune.core.errors import DamagedCacheWarning, StaleFilesWarning

if TYPE_CHECKING:  # the MNIST loader uses this module's helpers without torch (issue #30)
    from torch import Tensor

__all__ = [
    "CONTENT_SHA256",
    "CacheRead",
    "clear_abandoned_temporaries",
    "read_cache_file",
    "tensors_sha256",
    "unreadable",
    "update_with_tensor",
    "warn_damaged",
    "write_cache_file",
]

CONTENT_SHA256 = "content_sha256"
"""The metadata key of a cache file's :func:`tensors_sha256`."""

_REASON_CHARS = 200
"""At most this much of a reader's error message goes into a warning."""


def update_with_tensor(digest: hashlib._Hash, tensor: Tensor) -> None:
    """Feed ``tensor``'s dtype, shape and bytes (as a contiguous CPU tensor) to ``digest``."""
    import torch

    t = tensor.detach().cpu().contiguous()
    digest.update(f"{t.dtype}{tuple(t.shape)}".encode())
    digest.update(t.reshape(-1).view(torch.uint8).numpy().data)  # the bytes, not a copy


def tensors_sha256(tensors: Mapping[str, Tensor]) -> str:
    """sha256 (hex) of every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode() + b"\0")
        update_with_tensor(digest, tensors[name])
    return digest.hexdigest()


def write_cache_file(
    path: Path, tensors: Mapping[str, Tensor], metadata: Mapping[str, str]
) -> None:
    """Write ``tensors`` to ``path`` (and its missing folders) atomically as safetensors,
    with ``metadata`` and their :data:`CONTENT_SHA256`."""
    from safetensors.torch import save_file

    contiguous = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    recorded = {**metadata, CONTENT_SHA256: tensors_sha256(contiguous)}
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_atomically(path, lambda tmp: save_file(contiguous, tmp, metadata=recorded))


@dataclass(frozen=True)
class CacheRead:
    """What :func:`read_cache_file` found: the tensors of a sound file with the expected
    metadata (else ``None``), and why the file is damaged (``None`` when it is not)."""

    tensors: dict[str, Tensor] | None
    damage: str | None = None


def read_cache_file(path: Path, metadata: Mapping[str, str]) -> CacheRead:
    """The tensors of the cache file ``path`` if its metadata holds ``metadata`` and its
    tensors match their checksum (module docstring); nothing for a missing, foreign or
    older file; the damage of one that cannot be read or fails its checksum."""
    from safetensors import safe_open

    if not path.is_file():
        return CacheRead(None)
    try:
        with safe_open(path, framework="pt") as f:
            found = f.metadata() or {}
            expected = all(found.get(key) == value for key, value in metadata.items())
            if not expected or CONTENT_SHA256 not in found:
                return CacheRead(None)
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 - safe_open API
    except Exception as exc:  # safetensors, torch and the OS each have their own types
        return CacheRead(None, unreadable(exc))
    if tensors_sha256(tensors) != found[CONTENT_SHA256]:
        return CacheRead(None, "its tensors do not match their content checksum")
    return CacheRead(tensors)


def unreadable(exc: BaseException) -> str:
    """The damage of a file whose reader raised ``exc``, in one short line."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"cannot be read: {exc.strerror}"
    reason = " ".join(str(exc).split())[:_REASON_CHARS] or type(exc).__name__
    return f"cannot be read: {reason}"


def warn_damaged(path: Path, damage: str, remedy: str) -> None:
    """Tell the user that the cache file ``path`` is damaged and what is done about it."""
    warnings.warn(
        f"damaged cache file ({damage}): {path}; {remedy}", DamagedCacheWarning, stacklevel=3
    )


def clear_abandoned_temporaries(folder: Path) -> None:
    """Remove the temporaries that interrupted writers left in the cache directory
    ``folder`` (module docstring), with a warning naming them."""
    removed = remove_abandoned_temporaries(folder)
    if removed:
        names = ", ".join(p.name for p in removed[:3]) + (" …" if len(removed) > 3 else "")
        warnings.warn(
            f"removed {len(removed)} temporary file(s) left by an interrupted write in "
            f"{folder}: {names}",
            StaleFilesWarning,
            stacklevel=3,
        )
