"""Parsing of closed choices (``str`` Enums) at the API boundary."""

from __future__ import annotations

from enum import Enum
from typing import TypeVar

E = TypeVar("E", bound=Enum)


def parse_choice(enum_cls: type[E], value: object, name: str) -> E:
    """Return ``enum_cls(value)`` or raise a ``ValueError`` listing the valid choices."""
    if isinstance(value, enum_cls):
        return value
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str or {enum_cls.__name__}, got {type(value).__name__}")
    try:
        return enum_cls(value)
    except ValueError:
        valid = ", ".join(repr(m.value) for m in enum_cls)
        raise ValueError(f"unknown {name} {value!r}; choose one of {valid}") from None
