"""Pooled activations at several depths of a body (its :attr:`SplitBody.TAPS`).

A convolutional output ``n × c × h × w`` is averaged over ``h, w``; a token sequence
``n × t × c`` over its tokens; ``n × c`` is kept. Forward hooks record the outputs while a
forward pass runs (with or without :func:`torch.func.functional_call`), so a caller gets
the taps and the logits from one pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import Tensor, nn

from condimmune.core.errors import ArgumentError
from condimmune.deep.backbones import DeepModel

__all__ = ["pool_tap", "record_taps", "tap_names"]


def pool_tap(output: Tensor) -> Tensor:
    """``n × c`` from a tap's output: spatial mean (4-D), token mean (3-D), or itself."""
    if output.dim() == 4:
        return output.mean(dim=(2, 3))
    if output.dim() == 3:
        return output.mean(dim=1)
    if output.dim() == 2:
        return output
    raise ValueError(f"a tap's output must have 2–4 dimensions, got shape {tuple(output.shape)}")


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
    """Within the block, every forward pass of ``model`` appends its pooled taps, in depth
    order, to the yielded list (cleared by the caller between passes)."""
    found: list[Tensor] = []
    handles = []

    def hook(_module: nn.Module, _inputs: object, output: Tensor) -> None:
        found.append(pool_tap(output))

    try:
        for name in tap_names(model):
            handles.append(model.body.get_submodule(name).register_forward_hook(hook))
        yield found
    finally:
        for handle in handles:
            handle.remove()
