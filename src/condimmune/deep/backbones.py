"""Deep feature extractors with the paper's trainable parts, behind one explicit registry.

================  ==========================================  ===============================
backbone          architecture                                trained during immunization
================  ==========================================  ===============================
``small-cnn``     3 conv blocks (1 → 16 → 32 → 128 channels)  the last conv block and head
                  + global average pool, 128 features         (the CPU experiment)
``resnet18``      torchvision ``resnet18``, 512 features      ``layer4`` (the last two basic
                                                              blocks) and ``fc`` (Table 3)
``vit-b16``       timm ``vit_base_patch16_224``, 768          ``blocks.11`` (with its norms),
                  features                                    the final ``norm``, ``head`` (Table 3)
``mobilenet-v2``  torchvision ``mobilenet_v2``, 1280          the last ``trainable_blocks``
                  features                                    inverted-residual blocks, the final
                                                              1×1 conv ``features.18``, ``head``
================  ==========================================  ===============================

Every body is split into a frozen prefix and the trained suffix
(:mod:`condimmune.deep.bodies`); :meth:`DeepModel.read_prefix` makes the model take cached
prefix outputs instead of images (:mod:`condimmune.deep.prefix`).

Weights never come from the network: ``weights=None`` is a seeded random initialisation,
otherwise a local file, either safetensors or a torchvision/timm ``state_dict`` saved with
``torch.save`` (read with ``weights_only=True``, which refuses arbitrary pickled code).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import torch
from torch import Tensor, nn

from condimmune.core._choices import parse_choice
from condimmune.core.errors import UserError
from condimmune.core.seeding import cpu_seeded
from condimmune.core.user_files import check_finite, read_tensor_file, user_path
from condimmune.deep.bodies import (
    MOBILENET_V2_BLOCKS,
    MobileNetV2Body,
    ResNet18Body,
    SmallCNN,
    SplitBody,
    ViTBody,
)
from condimmune.deep.images import MNIST_MEAN, MNIST_STD

__all__ = ["Backbone", "BackboneSpec", "DeepModel", "build_model", "load_weights"]


class Backbone(StrEnum):
    SMALL_CNN = "small-cnn"
    RESNET18 = "resnet18"
    VIT_B16 = "vit-b16"
    MOBILENET_V2 = "mobilenet-v2"


@dataclass(frozen=True)
class BackboneSpec:
    """Static facts of a backbone: feature size, input channels, normalisation, trainable parts."""

    feature_dim: int
    in_channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    trainable: tuple[str, ...]
    """Prefixes of the parameter names trained during immunization (the rest is frozen);
    for ``mobilenet-v2`` the blocks come from ``trainable_blocks``, see
    :meth:`DeepModel.trainable_names`."""


_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

SPECS: dict[Backbone, BackboneSpec] = {
    Backbone.SMALL_CNN: BackboneSpec(
        128, 1, (MNIST_MEAN,), (MNIST_STD,), ("body.block3.", "head.")
    ),
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
    Backbone.MOBILENET_V2: BackboneSpec(
        1280,
        3,
        _IMAGENET_MEAN,
        _IMAGENET_STD,
        (f"body.features.{MOBILENET_V2_BLOCKS + 1}.", "head."),
    ),
}
DEFAULT_TRAINABLE_BLOCKS = 2
"""MobileNetV2's default number of trained inverted-residual blocks (docs/deep.md)."""


class DeepModel(nn.Module):
    r"""A backbone ``f_θ`` (pooled features), an optional invertible feature map ``T``, and a
    linear classifier: ``logits = head(T f_θ(x))``.

    ``forward`` returns ``(features, logits)`` in one call so that distributed data
    parallel sees exactly one forward pass per step.
    """

    feature_map: Tensor  # a buffer (registered in __init__), ``T`` (k × k)

    def __init__(
        self,
        body: SplitBody,
        *,
        feature_dim: int,
        num_classes: int,
        trainable: tuple[str, ...],
        name: str,
        backbone: Backbone | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        """The registered backbone, or ``None`` for a model wrapped from user code
        (:func:`condimmune.deep.custom.wrap_model`)."""
        self.name = name
        self.feature_dim = feature_dim
        self.prefix_inputs = False
        """``True``: ``forward`` takes the frozen prefix's outputs (:meth:`read_prefix`)."""
        self.body = body
        self.trainable_prefixes = trainable
        """Prefixes of the parameter names trained during immunization (the rest is frozen)."""
        self.head = nn.Linear(feature_dim, num_classes)
        self.register_buffer("feature_map", torch.eye(feature_dim), persistent=True)

    def read_prefix(self, on: bool = True) -> None:
        """From now on ``forward`` takes the outputs of :meth:`prefix` (cached once per
        image) instead of images; only the trained suffix runs."""
        self.prefix_inputs = on

    @torch.no_grad()
    def prefix(self, x: Tensor) -> Tensor:
        """The frozen part's output for images ``x`` (no gradient)."""
        return self.body.prefix(x)

    def features(self, x: Tensor) -> Tensor:
        pooled: Tensor = self.body.suffix(x) if self.prefix_inputs else self.body(x)
        return pooled @ self.feature_map.mT

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        phi = self.features(x)
        return phi, self.head(phi)

    def trainable_names(self) -> Iterator[str]:
        for name, _ in self.named_parameters():
            if name.startswith(self.trainable_prefixes):
                yield name

    def freeze_for_immunization(self) -> None:
        """Train only the paper's last blocks and head; everything else is frozen."""
        trainable = set(self.trainable_names())
        for name, param in self.named_parameters():
            param.requires_grad_(name in trainable)

    def set_feature_map(self, transform: Tensor) -> None:
        r"""Insert an invertible ``T`` after the pooled features and fold ``T^{-1}`` into the
        head, so the classifier's logits are unchanged: ``W T^{-1} (T φ) = W φ``."""
        k = self.feature_dim
        if transform.shape != (k, k):
            raise ValueError(f"the feature map must be {k} × {k}, got {tuple(transform.shape)}")
        old = self.feature_map.to(torch.float64)
        new = transform.to(torch.float64)
        with torch.no_grad():
            # head(old φ) = W old φ = (W old new⁻¹)(new φ)
            folded = torch.linalg.solve(new.mT, (self.head.weight.to(torch.float64) @ old).mT).mT
            self.head.weight.copy_(folded.to(self.head.weight.dtype))
            self.feature_map.copy_((new @ old).to(self.feature_map.dtype))


def _body(
    backbone: Backbone, image_size: int, trainable_blocks: int
) -> tuple[SplitBody, tuple[str, ...]]:
    """The body of a registered backbone and the prefixes of its trained parameters."""
    spec = SPECS[backbone]
    if backbone is Backbone.SMALL_CNN:
        return SmallCNN(spec.in_channels), spec.trainable
    if backbone is Backbone.RESNET18:
        return ResNet18Body(), spec.trainable
    if backbone is Backbone.VIT_B16:
        return ViTBody(image_size), spec.trainable
    mobilenet = MobileNetV2Body(trainable_blocks)
    blocks = range(mobilenet.start, MOBILENET_V2_BLOCKS + 1)
    return mobilenet, (*(f"body.features.{i}." for i in blocks), *spec.trainable)


def build_model(
    backbone: Backbone | str,
    *,
    num_classes: int,
    image_size: int,
    weights: str | Path | None = None,
    seed: int = 0,
    trainable_blocks: int = DEFAULT_TRAINABLE_BLOCKS,
    load_head: bool = True,
    weights_key: str = "weights",
) -> DeepModel:
    """A :class:`DeepModel`, randomly initialised from ``seed`` or loaded from ``weights``
    (without the file's classifier when ``load_head`` is false: the head is then fitted to
    the task, :func:`condimmune.deep.head.fit_linear_head`). ``trainable_blocks`` is read by
    ``mobilenet-v2`` only; ``weights_key`` names ``weights`` in messages (a config key)."""
    backbone = parse_choice(Backbone, backbone, "backbone")
    if num_classes < 1:
        raise ValueError(f"num_classes must be ≥ 1, got {num_classes}")
    if backbone is Backbone.VIT_B16 and image_size % 16:
        raise ValueError(f"vit-b16 needs an image size divisible by 16, got {image_size}")
    if backbone is Backbone.SMALL_CNN and image_size < 4:
        raise ValueError(f"small-cnn needs images of at least 4 × 4 pixels, got {image_size}")
    spec = SPECS[backbone]
    with cpu_seeded(seed):  # seeded init without touching global state
        body, trainable = _body(backbone, image_size, trainable_blocks)
        model = DeepModel(
            body,
            feature_dim=spec.feature_dim,
            num_classes=num_classes,
            trainable=trainable,
            name=backbone.value,
            backbone=backbone,
        )
    if weights is not None:
        load_weights(model, weights, load_head=load_head, key=weights_key)
    return model


_WEIGHTS_FIX = "save the weights with safetensors.torch.save_file or torch.save(state_dict)"


def _read_state_dict(path: Path, key: str) -> dict[str, Tensor]:
    """The tensors of a weights file (safetensors or a torch state_dict), all finite."""
    if path.suffix == ".safetensors":
        return read_tensor_file(path, where=f"{key}={path}", fix=_WEIGHTS_FIX).tensors
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # torch raises several types for non-checkpoint files
        raise UserError(
            "neither safetensors nor a torch state_dict of tensors (torch.load with "
            "weights_only=True, which refuses pickled code, cannot read it)",
            f"{key}={path}",
            _WEIGHTS_FIX,
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise UserError(
            "does not hold a mapping of names to tensors", f"{key}={path}", _WEIGHTS_FIX
        )
    check_finite(state, f"{key}={path}", _WEIGHTS_FIX)
    return state


def _to_model_keys(state: dict[str, Tensor], model: DeepModel) -> dict[str, Tensor]:
    """Map torchvision/timm names (top-level ``fc.``/``head.``/``classifier.1.``) onto
    ``body.``/``head.``."""
    own = model.state_dict()
    if any(key.startswith("body.") for key in state):
        return state
    heads = {Backbone.RESNET18: "fc.", Backbone.MOBILENET_V2: "classifier.1."}
    head_prefix = heads.get(model.backbone, "head.") if model.backbone else "head."
    mapped = {}
    for key, value in state.items():
        if key.startswith(head_prefix):
            mapped["head." + key[len(head_prefix) :]] = value
        elif "body." + key in own:
            mapped["body." + key] = value
        else:
            mapped[key] = value
    return mapped


def load_weights(
    model: DeepModel, weights: str | Path, *, load_head: bool = True, key: str = "weights"
) -> None:
    """Load a local weights file into ``model``; raise with the path and the key mismatch.

    With ``load_head`` a classifier head of a different size (e.g. 1,000 ImageNet classes vs
    the task's) is an error, not silently re-initialised: the benign accuracy depends on it.
    Without it the file's head is ignored and the model's head is left as it is (to be
    fitted on the task).
    """
    path = user_path(weights, key)
    if not path.is_file():
        raise FileNotFoundError(
            f"{key}: no file at {path.resolve()}; nothing is downloaded, so save the "
            f"{model.name} weights there (safetensors or a torch state_dict) or drop "
            f"{key} for a random initialisation"
        )
    state = _to_model_keys(_read_state_dict(path, key), model)
    own = model.state_dict()
    if not load_head:
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
        own = {k: v for k, v in own.items() if not k.startswith("head.")}
    missing = sorted(set(own) - set(state) - {"feature_map"})
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape", wrong)):
            if keys:
                parts.append(f"{len(keys)} {label} (e.g. {', '.join(keys[:3])})")
        raise UserError(
            f"does not fit backbone {model.name}: " + "; ".join(parts),
            f"{key}={path}",
            _WEIGHTS_FIX,
        )
    model.load_state_dict(state, strict=False)
