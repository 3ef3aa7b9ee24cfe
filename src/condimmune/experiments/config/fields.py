"""Field types and the base schema shared by the linear and deep configs."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    ValidationError,
)
from pydantic.config import JsonDict

from condimmune.experiments.config.errors import ConfigError, _kind, _one_line
from condimmune.experiments.registry import (
    experiment_spec,
)
from condimmune.methods.base import MethodOptions, ModelFamily, NoOptions
from condimmune.methods.registry import Method, method_spec, registered_methods

MAX_SEED = 2**32 - 1
"""numpy's seeds are < 2³²."""

WHERE_NOT_WHAT: JsonDict = {"affects_results": False}
"""``json_schema_extra`` of a field that says where or how a run works, not what it
computes (a folder, loader processes, checkpoint spacing, the logger, threads): runs
that differ only in such fields are comparable (:mod:`condimmune.experiments.config.results`)."""


# ----------------------------------------------------------------------------- field types
def _enum_value(value: object) -> object:
    """A ``StrEnum`` member (``Method.NONE``) is stored as its plain ``str`` value."""
    return value.value if isinstance(value, Enum) else value


Choice = Annotated[str, BeforeValidator(_enum_value)]
"""A name checked against a registry (methods, backbones, experiments)."""

Precision = Annotated[
    Literal["32-true", "64-true", "16-mixed", "bf16-mixed"], BeforeValidator(_enum_value)
]
Accelerator = Annotated[Literal["cpu", "gpu", "cuda", "auto"], BeforeValidator(_enum_value)]
Strategy = Annotated[Literal["auto", "ddp", "ddp_spawn"], BeforeValidator(_enum_value)]
Logger = Annotated[Literal["csv", "tensorboard"], BeforeValidator(_enum_value)]


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
            raise ConfigError(_one_line(exc, type(self), self._prefix)) from None


def _check_method(value: str, family: ModelFamily) -> str:
    spec = method_spec(value, key="train.method")
    if not spec.supports(family):
        raise ValueError(
            f"train.method {value!r} has no {family.value} version; "
            f"choose one of {_methods(family)}"
        )
    return value


def _methods(family: ModelFamily) -> str:
    return ", ".join(repr(s.name) for s in registered_methods() if s.supports(family))


def _method_name(data: dict[str, Any]) -> object:
    train = data.get("train", {})
    if isinstance(train, BaseModel):
        return getattr(train, "method", None)
    if isinstance(train, dict):
        return train.get("method", Method.CONDNUM.value)
    return None


def method_options_model(name: object, family: ModelFamily) -> type[MethodOptions] | None:
    """The options model of method ``name`` on ``family`` (``None``: not a usable method)."""
    if isinstance(name, Enum):
        name = name.value
    if not isinstance(name, str):
        return None
    try:
        spec = method_spec(name)
    except ValueError:
        return None
    return spec.options_model(family)


def resolve_method_section(data: Any, family: ModelFamily, default_experiment: str) -> Any:
    """The raw config ``data`` with its ``method`` section validated against the options model
    of ``train.method`` (on ``family``): the experiment's defaults for that method
    (:attr:`~condimmune.experiments.registry.ExperimentSpec.method_defaults`) under the keys
    given. The section of an unusable method is left for ``train.method``'s own error."""
    if not isinstance(data, dict):
        return data
    data = dict(data)
    model = method_options_model(_method_name(data), family)
    if model is None:  # train.method's validator says what is wrong with the name
        data["method"] = NoOptions()
        return data
    section = data.get("method", {})
    if isinstance(section, MethodOptions):
        if type(section) is not model:
            raise ValueError(
                f"the method section holds {type(section).__name__}, but train.method "
                f"{_method_name(data)!r} takes {model.__name__}"
            )
        return data
    if not isinstance(section, dict):
        raise ValueError(f"method must be a mapping, got {_kind(section)}")
    name = str(_method_name(data))
    try:
        spec = experiment_spec(data.get("experiment", default_experiment))
        defaults = dict(spec.method_defaults.get(name, {}))
    except ValueError:  # the experiment's own validator reports it
        defaults = {}
    try:
        data["method"] = model.model_validate({**defaults, **section})
    except ValidationError as exc:
        raise ValueError(_one_line(exc, model, "method")) from None
    return data


def _check_experiment(value: str, family: ModelFamily, other_schema: str) -> str:
    """``value`` names an experiment of ``family``; otherwise say to use ``other_schema``."""
    spec = experiment_spec(value)
    if spec.family is not family:
        raise ValueError(f"{value} is a {spec.family.value} experiment; use {other_schema}")
    return spec.name.value


def attacker_list(value: str, choices: type[Enum]) -> str:
    """``all`` or a comma-separated list of distinct members of ``choices`` (an empty list
    is refused: it used to mean "all")."""
    from condimmune.core._choices import parse_choice

    if value.strip() == "all":
        return "all"
    names = [n.strip() for n in value.split(",")]
    if not any(names):
        raise ValueError("attack.attackers is empty; name attackers or write 'all'")
    for name in names:
        parse_choice(choices, name, "attack.attackers entry")
    if len(set(names)) != len(names):
        raise ValueError(f"attack.attackers names an attacker twice: {value!r}")
    return ",".join(names)
