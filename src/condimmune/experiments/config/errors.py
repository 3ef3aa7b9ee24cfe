"""pydantic's validation errors as one-line messages naming the dotted key, and
:class:`ConfigError`, the one type of every problem with a config."""

from __future__ import annotations

import re
import typing
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ValidationError,
)
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from condimmune.experiments.yaml_reading import shorten


class ConfigError(ValueError):
    """A config that cannot be built: an unknown key or name, a value of the wrong type or out
    of range, a file that is not a config; the message names the dotted key (or the file).
    The command line shows it as the user's error (exit code 2)."""


# ------------------------------------------------------------------------ error messages
def _type_name(annotation: Any) -> str:
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is Literal:
        return "str"
    if args and type(None) in args:
        return " or ".join([_type_name(a) for a in args if a is not type(None)] + ["null"])
    return getattr(annotation, "__name__", str(annotation))


def _show(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


_LEADING_ZERO = re.compile(r"\s*[-+]?0[0-9]+\s*\Z")


def _echo(value: Any) -> str:
    """``repr(value)`` as a message quotes it (a file may hold megabytes)."""
    return shorten(repr(value))


def _type_hint(declared: str, value: Any) -> str:
    """How to write ``value`` as the ``declared`` type, where a common slip explains it."""
    if declared.startswith("str") and isinstance(value, int | float) and type(value) is not bool:
        return " (quote it in YAML: unquoted numbers are read as numbers)"
    if declared.startswith("int") and isinstance(value, str) and _LEADING_ZERO.match(value):
        return " (write integers without leading zeros)"
    if declared.startswith("bool") and isinstance(value, str | int):
        return " (write true or false)"
    return ""


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _resolve(root: type[BaseModel], loc: Sequence[int | str]) -> tuple[Any, FieldInfo | None]:
    """The section class holding ``loc`` and the field it names (``None`` past the schema)."""
    owner: Any = root
    info: FieldInfo | None = None
    for part in loc:
        if not (isinstance(owner, type) and issubclass(owner, BaseModel)):
            return owner, None
        info = owner.model_fields.get(str(part))
        if info is None:
            return owner, None
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            owner = info.annotation
            info = None
        else:
            return owner, info
    return owner, info


def _dotted(prefix: str, loc: Sequence[int | str]) -> str:
    return ".".join([prefix] * bool(prefix) + [str(p) for p in loc])


def _valid_keys(section: type[BaseModel], prefix: str) -> str:
    keys = []
    for name, info in section.model_fields.items():
        nested = isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)
        keys.append(_dotted(prefix, [name]) + (".*" if nested else ""))
    return ", ".join(sorted(keys))


def _unknown(prefix: str, keys: list[str], section: Any) -> str:
    noun = "key" if len(keys) == 1 else "keys"
    message = f"unknown config {noun}: {', '.join(_printable(k) for k in keys)}"
    if isinstance(section, type) and issubclass(section, BaseModel):
        valid = _valid_keys(section, prefix)
        message += f"; valid keys: {valid}" if valid else f"; {prefix} takes no keys"
    return message


def _printable(key: str) -> str:
    """``key`` as a message shows it: quoted if it is not printable, cut if it is long."""
    return shorten(key if key.isprintable() else repr(key))


def _describe(error: ErrorDetails, root: type[BaseModel], prefix: str) -> str:
    loc = error["loc"]
    key = _dotted(prefix, loc) or "config"
    kind, value = error["type"], error["input"]
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    if kind == "value_error" and "error" in ctx:
        return str(ctx["error"])
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"{key} must be a mapping, got {_kind(value)}"
    if kind == "finite_number":
        return f"invalid value for {key}: {_echo(value)} (must be a finite number)"
    bounds = {
        "greater_than": ("gt", ">"),
        "greater_than_equal": ("ge", "≥"),
        "less_than": ("lt", "<"),
        "less_than_equal": ("le", "≤"),
    }
    if kind in bounds:
        name, sign = bounds[kind]
        return f"invalid value for {key}: {_echo(value)} (must be {sign} {_show(ctx[name])})"
    if kind == "literal_error":
        return f"invalid value for {key}: {_echo(value)} (choose one of {ctx['expected']})"
    if kind.endswith("_type") or kind.endswith("_parsing"):
        _, info = _resolve(root, loc)
        declared = _type_name(info.annotation) if info is not None else kind.removesuffix("_type")
        return f"{key} must be of type {declared}, got {_echo(value)}{_type_hint(declared, value)}"
    return f"invalid value for {key}: {_echo(value)} ({error['msg']})"


def _one_line(exc: ValidationError, root: type[BaseModel], prefix: str = "") -> str:
    """The most useful problem of ``exc`` as one line naming the dotted key."""
    errors = exc.errors()
    extra = [e for e in errors if e["type"] in ("extra_forbidden", "no_such_attribute")]
    if extra:
        parent = extra[0]["loc"][:-1]
        keys = [_dotted(prefix, e["loc"]) for e in extra if e["loc"][:-1] == parent]
        section, _ = _resolve(root, parent)
        return _unknown(_dotted(prefix, parent), keys, section)
    mapping = [e for e in errors if e["type"] in ("model_type", "model_attributes_type")]
    message = _describe((mapping or errors)[0], root, prefix)
    return " ".join(message.split()) if "\n" in message else message
