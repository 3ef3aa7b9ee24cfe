"""The activations at several depths of a body (its :attr:`SplitBody.TAPS`).

Forward hooks record the outputs while a forward pass runs (with or without
:func:`torch.func.functional_call`), so a caller gets the taps and the logits from one
pass; the caller pools them into features
(:func:`condimmune.methods.tap_adversary.pool_activations`: the spatial or token mean, or a
coarse spatial grid).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import Tensor, nn

from condimmune.core.errors import ArgumentError
from condimmune.deep.backbones import DeepModel

__all__ = ["record_taps", "tap_names"]


def tap_names(model: DeepModel) -> tuple[str, ...]:
    """The model's taps (``body.TAPS``); a body that names none cannot be tapped."""
    names = tuple(getattr(model.body, "TAPS", ()))
    if not names:
        raise ArgumentError(
            "the model {name} names no taps (its body's TAPS is empty); whole-network "
            "immunization and tap probes need the registered backbones",
            name=repr(model.name),
        )
    return names


@contextmanager
def record_taps(model: DeepModel) -> Iterator[list[Tensor]]:
    """Within the block, every forward pass of ``model`` appends its taps' outputs, as they
    are, in depth order, to the yielded list (cleared by the caller between passes)."""
    found: list[Tensor] = []
    handles = []

    def hook(_module: nn.Module, _inputs: object, output: Tensor) -> None:
        found.append(output)

    try:
        for name in tap_names(model):
            handles.append(model.body.get_submodule(name).register_forward_hook(hook))
        yield found
    finally:
        for handle in handles:
            handle.remove()
