"""Deep feature extractors with the paper's trainable parts, behind one explicit registry.

===============  ==========================================  ===============================
backbone         architecture                                trained during immunization
===============  ==========================================  ===============================
``small-cnn``    3 conv blocks (1 → 16 → 32 → 128 channels)  the last conv block and head
                 + global average pool, 128 features         (the CPU experiment)
``resnet18``     torchvision ``resnet18``, 512 features      ``layer4`` (the last two basic
                                                             blocks) and ``fc`` (Table 3)
``vit-b16``      timm ``vit_base_patch16_224``, 768          ``blocks.11`` (with its norms),
                 features                                    the final ``norm``, ``head`` (Table 3)
===============  ==========================================  ===============================

Weights never come from the network: ``weights=None`` is a seeded random initialisation,
otherwise a local file, either safetensors or a torchvision/timm ``state_dict`` saved with
``torch.save`` (read with ``weights_only=True``, which refuses arbitrary pickled code).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch
from torch import Tensor, nn

from condimmune.core._choices import parse_choice

if TYPE_CHECKING:
    from timm.models.vision_transformer import VisionTransformer

__all__ = ["Backbone", "BackboneSpec", "DeepModel", "build_model", "load_weights"]


class Backbone(StrEnum):
    SMALL_CNN = "small-cnn"
    RESNET18 = "resnet18"
    VIT_B16 = "vit-b16"


@dataclass(frozen=True)
class BackboneSpec:
    """Static facts of a backbone: feature size, input channels, normalisation, trainable parts."""

    feature_dim: int
    in_channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    trainable: tuple[str, ...]
    """Prefixes of the parameter names trained during immunization (the rest is frozen)."""


_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

SPECS: dict[Backbone, BackboneSpec] = {
    Backbone.SMALL_CNN: BackboneSpec(128, 1, (0.1307,), (0.3081,), ("body.block3.", "head.")),
    Backbone.RESNET18: BackboneSpec(
        512, 3, _IMAGENET_MEAN, _IMAGENET_STD, ("body.layer4.", "head.")
    ),
    # timm's vit_base_patch16_224 (augreg weights) normalises with mean = std = 0.5
    Backbone.VIT_B16: BackboneSpec(
        768,
        3,
        (0.5, 0.5, 0.5),
        (0.5, 0.5, 0.5),
        ("body.blocks.11.", "body.norm.", "head."),
    ),
}


class _SmallCNN(nn.Module):
    def __init__(self, in_channels: int) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
                nn.Conv2d(cout, cout, 3, padding=1),
                nn.BatchNorm2d(cout),
            )

        self.block1 = block(in_channels, 16)
        self.block2 = block(16, 32)
        self.block3 = block(32, 128)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(torch.relu(self.block1(x)))
        x = self.pool(torch.relu(self.block2(x)))
        # pooled after batch norm and before any final ReLU: no dead or tiny feature
        # channels, so the feature covariance is not ill-conditioned for a trivial reason
        features: Tensor = self.block3(x)
        return features.mean(dim=(2, 3))


class _ResNet18Body(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        from torchvision.models import resnet18

        net = resnet18(weights=None)
        net.fc = nn.Identity()
        for name, child in net.named_children():
            self.add_module(name, child)

    def forward(self, x: Tensor) -> Tensor:
        for child in self.children():
            x = child(x)
            if isinstance(child, nn.AdaptiveAvgPool2d):
                x = torch.flatten(x, 1)
        return x


class _ViTBody(nn.Module):
    def __init__(self, image_size: int) -> None:
        super().__init__()
        import timm

        vit = timm.create_model(
            "vit_base_patch16_224", pretrained=False, num_classes=0, img_size=image_size
        )
        for name, child in vit.named_children():
            self.add_module(name, child)
        # a list, so the wrapper is not registered twice
        self._vit: list[VisionTransformer] = [cast("VisionTransformer", vit)]

    def forward(self, x: Tensor) -> Tensor:
        vit = self._vit[0]
        return vit.forward_head(vit.forward_features(x), pre_logits=True)


class DeepModel(nn.Module):
    r"""A backbone ``f_θ`` (pooled features), an optional invertible feature map ``T``, and a
    linear classifier: ``logits = head(T f_θ(x))``.

    ``forward`` returns ``(features, logits)`` in one call so that distributed data
    parallel sees exactly one forward pass per step.
    """

    feature_map: Tensor  # a buffer (registered in __init__), ``T`` (k × k)

    def __init__(self, backbone: Backbone, num_classes: int, image_size: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.spec = SPECS[backbone]
        if backbone is Backbone.SMALL_CNN:
            self.body: nn.Module = _SmallCNN(self.spec.in_channels)
        elif backbone is Backbone.RESNET18:
            self.body = _ResNet18Body()
        else:
            self.body = _ViTBody(image_size)
        self.head = nn.Linear(self.spec.feature_dim, num_classes)
        self.register_buffer("feature_map", torch.eye(self.spec.feature_dim), persistent=True)

    def features(self, x: Tensor) -> Tensor:
        pooled: Tensor = self.body(x)
        return pooled @ self.feature_map.mT

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        phi = self.features(x)
        return phi, self.head(phi)

    def trainable_names(self) -> Iterator[str]:
        for name, _ in self.named_parameters():
            if name.startswith(self.spec.trainable):
                yield name

    def freeze_for_immunization(self) -> None:
        """Train only the paper's last blocks and head; everything else is frozen."""
        trainable = set(self.trainable_names())
        for name, param in self.named_parameters():
            param.requires_grad_(name in trainable)

    def set_feature_map(self, transform: Tensor) -> None:
        r"""Insert an invertible ``T`` after the pooled features and fold ``T^{-1}`` into the
        head, so the classifier's logits are unchanged: ``W T^{-1} (T φ) = W φ``."""
        k = self.spec.feature_dim
        if transform.shape != (k, k):
            raise ValueError(f"the feature map must be {k} × {k}, got {tuple(transform.shape)}")
        old = self.feature_map.to(torch.float64)
        new = transform.to(torch.float64)
        with torch.no_grad():
            # head(old φ) = W old φ = (W old new⁻¹)(new φ)
            folded = torch.linalg.solve(new.mT, (self.head.weight.to(torch.float64) @ old).mT).mT
            self.head.weight.copy_(folded.to(self.head.weight.dtype))
            self.feature_map.copy_((new @ old).to(self.feature_map.dtype))


def build_model(
    backbone: Backbone | str,
    *,
    num_classes: int,
    image_size: int,
    weights: str | Path | None = None,
    seed: int = 0,
) -> DeepModel:
    """A :class:`DeepModel`, randomly initialised from ``seed`` or loaded from ``weights``."""
    backbone = parse_choice(Backbone, backbone, "model.backbone")
    if num_classes < 1:
        raise ValueError(f"num_classes must be ≥ 1, got {num_classes}")
    if backbone is Backbone.VIT_B16 and image_size % 16:
        raise ValueError(f"vit-b16 needs an image size divisible by 16, got {image_size}")
    if backbone is Backbone.SMALL_CNN and image_size < 4:
        raise ValueError(f"small-cnn needs images of at least 4 × 4 pixels, got {image_size}")
    with torch.random.fork_rng(devices=[]):  # seeded init without touching global state
        torch.manual_seed(seed)
        model = DeepModel(backbone, num_classes, image_size)
    if weights is not None:
        load_weights(model, weights)
    return model


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for non-checkpoint files
        raise ValueError(
            f"model.weights={path} is neither safetensors nor a torch state_dict: {exc}"
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"model.weights={path} does not hold a mapping of names to tensors")
    return state


def _to_model_keys(state: dict[str, Tensor], model: DeepModel) -> dict[str, Tensor]:
    """Map torchvision/timm names (top-level ``fc.``/``head.``) onto ``body.``/``head.``."""
    own = model.state_dict()
    if any(key.startswith("body.") for key in state):
        return state
    head_prefix = "fc." if model.backbone is Backbone.RESNET18 else "head."
    mapped = {}
    for key, value in state.items():
        if key.startswith(head_prefix):
            mapped["head." + key[len(head_prefix) :]] = value
        elif "body." + key in own:
            mapped["body." + key] = value
        else:
            mapped[key] = value
    return mapped


def load_weights(model: DeepModel, weights: str | Path) -> None:
    """Load a local weights file into ``model``; raise with the path and the key mismatch.

    A classifier head of a different size (e.g. 1,000 ImageNet classes vs the task's) is an
    error, not silently re-initialised: the benign accuracy depends on it.
    """
    path = Path(weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"model.weights: no file at {path.resolve()}; nothing is downloaded, so save the "
            f"{model.backbone.value} weights there (safetensors or a torch state_dict) or drop "
            "model.weights for a random initialisation"
        )
    state = _to_model_keys(_read_state_dict(path), model)
    own = model.state_dict()
    missing = sorted(set(own) - set(state) - {"feature_map"})
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape", wrong)):
            if keys:
                parts.append(f"{len(keys)} {label} (e.g. {', '.join(keys[:3])})")
        raise ValueError(
            f"model.weights={path} does not fit backbone {model.backbone.value}: "
            + "; ".join(parts)
        )
    model.load_state_dict(state, strict=False)
