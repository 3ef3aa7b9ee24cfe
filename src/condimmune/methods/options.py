"""A method's options: the pydantic base every method's hyperparameters derive from, and
how a run names the options it changed (``metrics.json``'s ``method_options``)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict

__all__ = ["Float", "MethodOptions", "NoOptions", "OptionValue", "method_label"]

_FLOAT_TEXT = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)


def _number_text(value: object) -> object:
    """YAML 1.1 reads ``1e-3`` (no dot) as a string; accept such number literals for floats."""
    if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
        return float(value)
    return value


Float = Annotated[float, BeforeValidator(_number_text)]
"""A finite float option; ints and number literals written as YAML strings are accepted."""


class MethodOptions(BaseModel):
    """Base of every method's options: a frozen pydantic model with strict types (an int is
    fine for a float, nothing else is converted), no extra keys and finite floats. Give each
    field a default and a ``description`` (``condimmune config`` and errors show it), e.g.
    ``weight: Float = Field(default=1.0, ge=0, description="λ, ≥ 0")``."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)


OptionValue = bool | int | float | str
"""A method option's value as ``metrics.json`` records it."""


class NoOptions(MethodOptions):
    """The options of a method without hyperparameters."""


def method_label(name: str, changed: Mapping[str, OptionValue] | None) -> str:
    """``name``, followed by the changed options in parentheses, sorted by key (``%g``)."""
    if not changed:
        return name
    shown = (
        f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(changed.items())
    )
    return f"{name} ({', '.join(shown)})"
