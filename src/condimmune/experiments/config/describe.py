"""``condimmune config``: a resolved config as commented YAML that reads back as ``--config``.

Every key is preceded by one comment: its type, the experiment's default (the experiment's
operating point for the config's ``train.method``, before ``--config``/``--set``) and the
field's description. The keys and values are exactly those of ``config.yaml``
(:func:`~condimmune.experiments.config.config_to_dict`), so the text is a recipe:
``condimmune run --config FILE`` runs this config, and editing a value changes it.
"""

from __future__ import annotations

import enum
import textwrap
import types
import typing
from collections.abc import Iterator, Mapping
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from condimmune.experiments.config.api import apply_overrides, config_to_dict, default_config
from condimmune.experiments.config.schema import Config

__all__ = ["describe_config", "type_name"]

_WIDTH = 92
_BOUNDS = (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"))


def type_name(annotation: Any) -> str:
    """A reader's name for a field's type: ``int``, ``float or null``, ``one of 'a', 'b'``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        named = [type_name(a) for a in args if a is not type(None)]
        return " or ".join(named) + (" or null" if type(None) in args else "")
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return "one of " + ", ".join(repr(m.value) for m in annotation)
    return getattr(annotation, "__name__", str(annotation))


def _bounds(info: FieldInfo) -> str:
    found = [
        f"{sign} {getattr(m, name)}"
        for m in info.metadata
        for name, sign in _BOUNDS
        if getattr(m, name, None) is not None
    ]
    return f" {', '.join(found)}" if found else ""


def _value(value: object) -> str:
    """``value`` as the safe dumper writes it (quoted where YAML would misread text; a list
    on one line)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6)
    return text.removesuffix("\n...\n").rstrip("\n")


def _comment(info: FieldInfo | None, default: object, indent: str) -> Iterator[str]:
    if info is None:
        return
    head = f"{type_name(info.annotation)}{_bounds(info)}; default {_value(default)}"
    text = f"{head}: {info.description}" if info.description else head
    for line in textwrap.wrap(text, _WIDTH - len(indent) - 2, break_on_hyphens=False):
        yield f"{indent}# {line}"


def _lines(
    values: Mapping[str, Any], defaults: Mapping[str, Any], model: BaseModel, depth: int
) -> Iterator[str]:
    indent = "  " * depth
    fields = type(model).model_fields
    for key, value in values.items():
        info = fields.get(key)
        if isinstance(value, dict):
            if info is not None and info.description:
                yield f"{indent}# {info.description}"
            yield f"{indent}{key}:"
            section = getattr(model, key)
            yield from _lines(value, defaults.get(key, {}), section, depth + 1)
        else:
            yield from _comment(info, defaults.get(key), indent)
            yield f"{indent}{key}: {_value(value)}"


def describe_config(config: Config) -> str:
    """The YAML text of ``config`` with each key's type, default and description (module
    docstring); :func:`~condimmune.experiments.config.load_config` reads it back to
    ``config``."""
    defaults = default_config(config.experiment)
    if defaults.train.method != config.train.method:  # that method's own operating point
        defaults = apply_overrides(defaults, [f"train.method={config.train.method}"])
    head = (
        f"# condimmune config of {config.experiment} (train.method: {config.train.method}); "
        "run it with: condimmune run --config FILE"
    )
    body = _lines(config_to_dict(config), config_to_dict(defaults), config, 0)
    return "\n".join([head, *body]) + "\n"
