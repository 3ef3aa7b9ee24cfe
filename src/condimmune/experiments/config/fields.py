"""Field types and the base schema shared by the linear and deep configs."""

from __future__ import annotations

import re
from enum import Enum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    ValidationError,
)

from condimmune.experiments.config.errors import _one_line
from condimmune.experiments.registry import (
    experiment_spec,
)
from condimmune.methods.registry import method_spec, registered_methods

MAX_SEED = 2**32 - 1
"""numpy's seeds are < 2³²."""


# ----------------------------------------------------------------------------- field types
def _enum_value(value: object) -> object:
    """A ``StrEnum`` member (``Method.NONE``) is stored as its plain ``str`` value."""
    return value.value if isinstance(value, Enum) else value


def _number_text(value: object) -> object:
    """YAML 1.1 reads ``1e-3`` (no dot) as a string; accept such number literals for floats."""
    if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
        return float(value)
    return value


_FLOAT_TEXT = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_INT_TEXT = re.compile(r"[+-]?\d+", re.ASCII)

Float = Annotated[float, BeforeValidator(_number_text)]
"""A finite float; ints and number literals written as YAML strings are accepted."""
Choice = Annotated[str, BeforeValidator(_enum_value)]
"""A name checked against a registry (methods, backbones, experiments)."""

Precision = Annotated[
    Literal["32-true", "64-true", "16-mixed", "bf16-mixed"], BeforeValidator(_enum_value)
]
Accelerator = Annotated[Literal["cpu", "gpu", "cuda", "auto"], BeforeValidator(_enum_value)]
Strategy = Annotated[Literal["auto", "ddp", "ddp_spawn"], BeforeValidator(_enum_value)]
Logger = Annotated[Literal["csv", "tensorboard"], BeforeValidator(_enum_value)]
StepRule = Annotated[Literal["unit", "monotone"], BeforeValidator(_enum_value)]


class _Schema(BaseModel):
    """Strict types (an int or a number literal in a string is fine for a float; nothing else
    is converted), no extra keys, no NaN/inf, validated assignments."""

    model_config = ConfigDict(
        extra="forbid", strict=True, allow_inf_nan=False, validate_assignment=True
    )

    _prefix: ClassVar[str] = ""
    """The dotted key of this section in a full config (``"train"``), for error messages."""

    def __setattr__(self, name: str, value: Any) -> None:
        try:
            super().__setattr__(name, value)
        except ValidationError as exc:
            raise ValueError(_one_line(exc, type(self), self._prefix)) from None


def _check_method(value: str, *, linear: bool) -> str:
    spec = method_spec(value, key="train.method")
    ok = spec.supports_linear if linear else spec.supports_deep
    if not ok:
        raise ValueError(
            f"train.method {value!r} has no {'linear' if linear else 'deep'} version; "
            f"choose one of {_methods(linear=linear)}"
        )
    return value


def _methods(*, linear: bool) -> str:
    return ", ".join(
        repr(s.name)
        for s in registered_methods()
        if (s.supports_linear if linear else s.supports_deep)
    )


def _check_experiment(value: str, *, deep: bool) -> str:
    spec = experiment_spec(value)
    if spec.is_deep != deep:
        kind, other = ("linear", "ExperimentConfig") if deep else ("deep", "DeepExperimentConfig")
        raise ValueError(f"{value} is a {kind} experiment; use {other}")
    return spec.name.value
