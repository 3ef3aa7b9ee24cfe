"""Which config keys a run's numbers depend on, for aggregates that must not mix runs.

Every key does, except those whose field is marked
:data:`~condimmune.experiments.config.fields.WHERE_NOT_WHAT` (where the data, weights and
caches are, data-loader processes, checkpoint spacing, the logger, threads: they
change where or how fast a run works, not what it computes). An aggregate compares the
:func:`result_settings` of its runs with the keys it groups by (seed, method, ...) left
out, and refuses or groups runs whose settings differ (:func:`first_difference`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from enum import Enum

from pydantic import BaseModel

from condimmune.experiments.config.fields import WHERE_NOT_WHAT
from condimmune.experiments.config.schema import Config

__all__ = ["first_difference", "result_settings"]


def _walk(model: BaseModel, prefix: str, leave_out: Collection[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for name, field in type(model).model_fields.items():
        key = f"{prefix}{name}"
        if key in leave_out or field.json_schema_extra == WHERE_NOT_WHAT:
            continue
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            out.update(_walk(value, f"{key}.", leave_out))
        else:
            out[key] = value.value if isinstance(value, Enum) else value
    return out


def result_settings(config: Config, *, leave_out: Collection[str] = ()) -> dict[str, object]:
    """The dotted keys of ``config`` that its run's numbers depend on, with their values;
    ``leave_out``: keys or whole sections (``"method"``) the caller compares otherwise."""
    return _walk(config, "", frozenset(leave_out))


def first_difference(
    have: Mapping[str, object], want: Mapping[str, object]
) -> tuple[str, object, object] | None:
    """The first key (in ``want``'s order, then ``have``'s) whose value differs between two
    :func:`result_settings`, with both values (``None`` for a missing key); ``None`` if
    they are the same."""
    for key in [*want, *(k for k in have if k not in want)]:
        if key not in have or key not in want or have[key] != want[key]:
            return key, have.get(key), want.get(key)
    return None
