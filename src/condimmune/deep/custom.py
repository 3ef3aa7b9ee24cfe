"""Your own model as a :class:`~condimmune.deep.backbones.DeepModel`: name the module whose
output is released as features, and the modules immunization may train.

:func:`wrap_model` takes any ``nn.Module`` (a torchvision or timm model, your own): the
released features are the output of the module ``features`` (``"avgpool"`` of a torchvision
ResNet, ``"global_pool"`` of a timm model, ...), flattened, and average-pooled over the
spatial axes first when the module returns a ``N × C × H × W`` map (over the tokens for
``N × T × D``). The model runs whole on every call (a forward hook captures that output; the
layers after it are not trained), so nothing is split into a cached prefix; the deep attack
suite then treats the whole model as the immunized blocks. Only the parameters under
``train`` (module names, e.g. ``["layer4"]``) are trained by the immunization; the head is a
new ``k × classes`` linear classifier on the features, copied from your classifier module
(``head``) or fitted to the benign task.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from condimmune.deep.backbones import DeepModel
from condimmune.deep.bodies import SplitBody

__all__ = ["HookedBody", "wrap_model"]


def _pooled(out: object, name: str) -> Tensor:
    if not isinstance(out, Tensor):
        raise TypeError(f"module {name!r} returns {type(out).__name__}, not a tensor of features")
    if out.ndim == 4:
        return out.mean(dim=(2, 3))
    if out.ndim == 3:
        return out.mean(dim=1)
    return out.flatten(1)


class HookedBody(SplitBody):
    """A whole model as a body: images → the pooled output of its module ``features``."""

    def __init__(self, model: nn.Module, features: str) -> None:
        super().__init__()
        names = dict(model.named_modules())
        if features not in names or not features:
            raise ValueError(
                f"the model has no module named {features!r}; name one of its modules, e.g. "
                f"{', '.join(repr(n) for n in list(names)[1:6])}"
            )
        self.model = model
        self.features = features
        self._captured: list[Tensor] = []
        self._hook: RemovableHandle = names[features].register_forward_hook(self._capture)

    def _capture(self, _module: nn.Module, _inputs: object, output: object) -> None:
        self._captured.append(_pooled(output, self.features))

    def prefix(self, x: Tensor) -> Tensor:
        return x  # no frozen prefix is split off: the whole model runs on the images

    def suffix(self, x: Tensor) -> Tensor:
        self._captured.clear()
        self.model(x)
        if not self._captured:
            raise RuntimeError(f"module {self.features!r} did not run in the model's forward")
        return self._captured[-1]

    def __deepcopy__(self, memo: dict[int, object]) -> HookedBody:
        # the hook is bound to this body: copy the model without it, and hook the copy
        self._hook.remove()
        try:
            model = copy.deepcopy(self.model, memo)
        finally:
            self._hook = dict(self.model.named_modules())[self.features].register_forward_hook(
                self._capture
            )
        twin = HookedBody(model, self.features)
        memo[id(self)] = twin
        return twin.train(self.training)


def wrap_model(
    model: nn.Module,
    *,
    features: str,
    example: Tensor,
    num_classes: int,
    train: Sequence[str] | None = None,
    head: str | None = None,
    copy_model: bool = True,
) -> DeepModel:
    """``model`` as a :class:`DeepModel` (module docstring); ``example`` is one batch of
    inputs (it fixes the feature size), ``num_classes`` the benign task's classes. ``train``:
    the module names whose parameters immunization trains (``None``: every parameter).
    ``head``: a ``nn.Linear`` module of ``model`` on the released features whose weights
    become the benign head (``None``: a fresh one, to be fitted). The model is deep-copied
    unless ``copy_model`` is false; it is put in eval mode."""
    if copy_model:
        model = copy.deepcopy(model)
    model.eval()
    modules = dict(model.named_modules())
    for name in [*(train or ()), *([head] if head else [])]:
        if name not in modules or not name:
            raise ValueError(f"the model has no module named {name!r}")
    body = HookedBody(model, features)
    with torch.no_grad():
        feature_dim = int(body(example[:2]).shape[1])
    prefixes = ("body.model.",) if train is None else tuple(f"body.model.{n}." for n in train)
    wrapped = DeepModel(
        body,
        feature_dim=feature_dim,
        num_classes=num_classes,
        trainable=(*prefixes, "head."),
        name=type(model).__name__,
    )
    if head is not None:
        linear = modules[head]
        if not isinstance(linear, nn.Linear) or linear.weight.shape != (num_classes, feature_dim):
            raise ValueError(
                f"head={head!r} must be a nn.Linear from the {feature_dim} features to the "
                f"{num_classes} benign classes, got {linear}"
            )
        with torch.no_grad():
            wrapped.head.weight.copy_(linear.weight)
            if linear.bias is not None:
                wrapped.head.bias.copy_(linear.bias)
            else:
                wrapped.head.bias.zero_()
    return wrapped.eval()
