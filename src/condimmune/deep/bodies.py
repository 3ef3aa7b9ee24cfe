"""The backbone bodies, each split into a frozen ``prefix`` and a trainable ``suffix``.

``body(x) == body.suffix(body.prefix(x))`` for every body: the prefix is everything before
the parts that immunization trains (:mod:`condimmune.deep.backbones`), so its output can be
computed once per image and cached (:mod:`condimmune.deep.prefix`), and only the suffix runs
in each training step.

===============  ==========================================  ==================================
body             prefix (frozen)                             suffix (trained, then pooled)
===============  ==========================================  ==================================
``small-cnn``    ``block1``, ``block2`` (with pooling)       ``block3``, global average pool
``resnet18``     ``conv1`` … ``layer3``                      ``layer4``, average pool
``vit-b16``      patch embedding, ``blocks.0`` … ``blocks.10``  ``blocks.11``, ``norm``, class token
``mobilenet-v2`` ``features.0`` … ``features.{17-N}``        the last ``N`` inverted-residual
                                                             blocks, ``features.18`` (the final
                                                             1×1 conv), global average pool
===============  ==========================================  ==================================
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import torch
from torch import Tensor, nn

from condimmune.core.errors import ArgumentError

if TYPE_CHECKING:
    from timm.models.vision_transformer import VisionTransformer

__all__ = [
    "MOBILENET_V2_BLOCKS",
    "MobileNetV2Body",
    "ResNet18Body",
    "SmallCNN",
    "SplitBody",
    "ViTBody",
]

MOBILENET_V2_BLOCKS = 17
"""Inverted-residual blocks of MobileNetV2 (``features.1`` … ``features.17``)."""


class SplitBody(nn.Module):
    """A body whose forward is ``suffix(prefix(x))`` (pooled features, ``n × k``).

    ``TAPS``: names of submodules at increasing depth whose outputs, pooled, are the
    activations a whole-network defence watches and a tap probe reads
    (:mod:`condimmune.deep.taps`); the last one feeds the pooled features."""

    TAPS: tuple[str, ...] = ()

    def prefix(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def suffix(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return self.suffix(self.prefix(x))


class SmallCNN(SplitBody):
    TAPS = ("block1", "block2", "block3")

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

    def prefix(self, x: Tensor) -> Tensor:
        x = self.pool(torch.relu(self.block1(x)))
        out: Tensor = self.pool(torch.relu(self.block2(x)))
        return out

    def suffix(self, x: Tensor) -> Tensor:
        # pooled after batch norm and before any final ReLU: no dead or tiny feature
        # channels, so the feature covariance is not ill-conditioned for a trivial reason
        features: Tensor = self.block3(x)
        return features.mean(dim=(2, 3))


class ResNet18Body(SplitBody):
    TAPS = ("layer1", "layer2", "layer3", "layer4")
    _SUFFIX = ("layer4", "avgpool")

    def __init__(self) -> None:
        super().__init__()
        from torchvision.models import resnet18

        net = resnet18(weights=None)
        net.fc = nn.Identity()
        for name, child in net.named_children():
            if name != "fc":
                self.add_module(name, child)

    def prefix(self, x: Tensor) -> Tensor:
        for name, child in self.named_children():
            if name not in self._SUFFIX:
                x = child(x)
        return x

    def suffix(self, x: Tensor) -> Tensor:
        x = self.get_submodule("layer4")(x)
        return torch.flatten(self.get_submodule("avgpool")(x), 1)


class ViTBody(SplitBody):
    TAPS = ("blocks.2", "blocks.5", "blocks.8", "blocks.11")

    def __init__(self, image_size: int) -> None:
        super().__init__()
        import timm

        vit = timm.create_model(
            "vit_base_patch16_224", pretrained=False, num_classes=0, img_size=image_size
        )
        for name, child in vit.named_children():
            self.add_module(name, child)
        # the tokens and position embedding are the wrapper's own parameters, not a child's:
        # registered here under timm's names, so that they are loaded, saved, trained and
        # re-initialised with the rest (the same tensors the wrapper reads)
        for name, param in vit.named_parameters(recurse=False):
            self.register_parameter(name, param)
        # a list, so the wrapper is not registered twice
        self._vit: list[VisionTransformer] = [cast("VisionTransformer", vit)]

    def prefix(self, x: Tensor) -> Tensor:
        """timm's ``forward_features`` up to (not including) the last block."""
        vit = self._vit[0]
        x = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(x))))
        for block in list(vit.blocks)[:-1]:
            x = block(x)
        return x

    def suffix(self, x: Tensor) -> Tensor:
        vit = self._vit[0]
        x = vit.norm(list(vit.blocks)[-1](x))
        out: Tensor = vit.forward_head(x, pre_logits=True)
        return out


class MobileNetV2Body(SplitBody):
    """torchvision's ``mobilenet_v2`` feature extractor (1280 pooled features); the last
    ``trainable_blocks`` inverted-residual blocks and the final 1×1 conv form the suffix."""

    TAPS = ("features.3", "features.6", "features.10", "features.13", "features.16", "features.18")

    def __init__(self, trainable_blocks: int) -> None:
        super().__init__()
        from torchvision.models import mobilenet_v2

        if not 0 <= trainable_blocks <= MOBILENET_V2_BLOCKS:
            raise ArgumentError(
                "{trainable_blocks} must be 0–{blocks}, got {value}",
                blocks=MOBILENET_V2_BLOCKS,
                value=trainable_blocks,
            )
        self.features = mobilenet_v2(weights=None).features
        self.start = MOBILENET_V2_BLOCKS + 1 - trainable_blocks
        """Index of the first trained module of ``features`` (``features.18`` is the last)."""

    def prefix(self, x: Tensor) -> Tensor:
        out: Tensor = self.features[: self.start](x)
        return out

    def suffix(self, x: Tensor) -> Tensor:
        out: Tensor = self.features[self.start :](x)
        return out.mean(dim=(2, 3))
