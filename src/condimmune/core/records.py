"""One JSON form for every result record: frozen dataclasses with ``to_json``/``from_json``.

A record's fields are JSON scalars (``bool``, ``int``, ``float``, ``str``, ``None``),
``str`` Enums, other records, and ``list``/``tuple``/``dict[str, ...]`` of those. Reading is
strict: a missing key, an extra key or a value of the wrong type raises ``ValueError``
naming the dotted field, so a damaged ``metrics.json`` is never half-read. Non-finite
floats are written as JSON's ``Infinity``/``NaN`` tokens (what :func:`json.dumps` does).
A field whose default is ``None`` is left out while it is ``None`` (an optional section,
such as the attack suite's results before ``condimmune attack`` ran).
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from typing import Any, Self, TypeAlias

__all__ = ["JsonRecord", "JsonValue", "RecordError"]

JsonValue: TypeAlias = bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"] | None


class RecordError(ValueError):
    """A JSON document does not match the record it is read as (names the field)."""


class JsonRecord:
    """Mixin for frozen dataclasses: ``to_json()`` and the strict inverse ``from_json()``."""

    def to_json(self) -> dict[str, JsonValue]:
        """The record as plain JSON values (nested records become objects)."""
        if not dataclasses.is_dataclass(self):
            raise TypeError(f"{type(self).__name__} must be a dataclass to be a JsonRecord")
        return {
            f.name: _dump(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if not (f.default is None and getattr(self, f.name) is None)
        }

    @classmethod
    def from_json(cls, data: object, *, where: str = "") -> Self:
        """Read a record back; raise :class:`RecordError` naming the first mismatched field."""
        return typing.cast(Self, _load_record(cls, data, where))


def _dump(value: object) -> JsonValue:
    if isinstance(value, JsonRecord):
        return value.to_json()
    if isinstance(value, enum.Enum):
        return typing.cast(JsonValue, value.value)
    if isinstance(value, list | tuple):
        return [_dump(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _dump(v) for k, v in value.items()}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"{type(value).__name__} is not a JSON record value")


def _load_record(cls: type, data: object, where: str) -> object:
    name = where or cls.__name__
    if not isinstance(data, dict):
        raise RecordError(f"{name} must be a JSON object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    missing = [
        k
        for k, f in fields.items()
        if k not in data
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise RecordError(f"{name}: missing field {_join(where, missing[0])}")
    extra = sorted(set(data) - set(fields))
    if extra:
        raise RecordError(f"{name}: unexpected field {_join(where, extra[0])}")
    kwargs = {k: _load(hints[k], v, _join(where, k)) for k, v in data.items()}
    return cls(**kwargs)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _load(annotation: Any, value: object, where: str) -> object:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union or isinstance(annotation, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _load(arg, value, where)
            except RecordError as exc:
                errors.append(str(exc))
        raise RecordError(errors[0] if errors else f"{where} must not be null")
    if isinstance(annotation, type) and issubclass(annotation, JsonRecord):
        return _load_record(annotation, value, where)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        try:
            return annotation(value)
        except ValueError:
            valid = ", ".join(repr(m.value) for m in annotation)
            raise RecordError(f"{where} must be one of {valid}, got {value!r}") from None
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise RecordError(f"{where} must be a list, got {type(value).__name__}")
        item = args[0] if args else Any
        items = [_load(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise RecordError(f"{where} must be an object, got {type(value).__name__}")
        return {k: _load(args[1], v, f"{where}.{k}") for k, v in value.items()}
    return _scalar(annotation, value, where)


def _scalar(annotation: Any, value: object, where: str) -> object:
    if annotation is Any:
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif annotation is str:
        if isinstance(value, str):
            return value
    elif annotation is type(None):
        if value is None:
            return None
    else:
        raise TypeError(f"{where}: unsupported record field type {annotation!r}")
    expected = getattr(annotation, "__name__", str(annotation))
    raise RecordError(f"{where} must be {expected}, got {value!r}")
