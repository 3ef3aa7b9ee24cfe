r"""Folding a method's feature map (:class:`~condimmune.methods.base.FeatureMap`) into a
:class:`~condimmune.deep.backbones.DeepModel`.

The model's features become ``T φ`` (``T`` multiplies the model's current map). An
invertible ``T`` is absorbed by the benign head exactly (``W T⁻¹``,
:meth:`DeepModel.set_feature_map`). A singular one (an erasure) cannot be: the head
``(W', b')`` is refitted by least squares to the benign logits the model had before, on the
benign training features ``Φ`` (rows ``φ_i``),

.. math:: (W', b') = \arg\min \sum_i \| W' T\varphi_i + b' - (W\varphi_i + b) \|^2
   \quad\text{(Eq. A7)}

(minimum-norm solution), which equals ``(W T⁻¹, b)`` whenever ``T`` is invertible.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from condimmune.deep.backbones import DeepModel
from condimmune.methods.base import FeatureMap

__all__ = ["apply_feature_map"]


def apply_feature_map(model: DeepModel, fmap: FeatureMap, benign_features: Tensor) -> None:
    """Insert ``fmap.transform`` after the model's features; ``benign_features`` (n × k) are
    the model's current features of the benign training images (used when ``T`` is
    singular, Eq. A7)."""
    k = model.feature_dim
    t = fmap.transform.to(torch.float64)
    if t.shape != (k, k):
        raise ValueError(f"the feature map must be {k} × {k}, got {tuple(t.shape)}")
    if fmap.invertible:
        model.set_feature_map(t)
        return
    phi = benign_features.to(torch.float64)
    if phi.ndim != 2 or phi.shape[1] != k:
        raise ValueError(f"benign_features must be n × {k}, got {tuple(phi.shape)}")
    with torch.no_grad():
        weight = model.head.weight.to(torch.float64)
        bias = model.head.bias.to(torch.float64)
        logits = phi @ weight.mT + bias
        design = F.pad(phi @ t.mT, (0, 1), value=1.0)
        solution: Tensor = torch.linalg.lstsq(design, logits, driver="gelsd").solution
        model.head.weight.copy_(solution[:k].mT.to(model.head.weight.dtype))
        model.head.bias.copy_(solution[k].to(model.head.bias.dtype))
        old = model.feature_map.to(torch.float64)
        model.feature_map.copy_((t @ old).to(model.feature_map.dtype))
