"""The one method registry: name → :class:`~condimmune.methods.base.MethodSpec`.

Config validation and ``condimmune list`` read this table; the run plan resolves the
configured method from it once (:func:`configure_method`), and nothing below looks a name up
again. Adding a method (with its options) = one new module that defines a ``MethodSpec``
plus one line in :data:`_BUILTIN` (or :func:`register_method` from user code);
docs/architecture.md has the recipe.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from condimmune.methods.base import ConfiguredMethod, MethodOptions, MethodSpec, ModelFamily
from condimmune.methods.baselines import IMMA, NONE, OPT_KAPPA
from condimmune.methods.closed_form import CLOSED_FORM
from condimmune.methods.condnum import CONDNUM, R_ILL_ONLY
from condimmune.methods.condnum_leace import CONDNUM_LEACE
from condimmune.methods.full_depth import FULL_DEPTH
from condimmune.methods.leace import LEACE

__all__ = [
    "Method",
    "configure_method",
    "method_spec",
    "register_method",
    "registered_methods",
    "unregister_method",
]


class Method(StrEnum):
    """The built-in methods' names (the registry may hold more, registered at run time)."""

    CONDNUM = "condnum"
    NONE = "none"
    R_ILL_ONLY = "r-ill-only"
    OPT_KAPPA = "opt-kappa"
    IMMA = "imma"
    CLOSED_FORM = "closed-form"
    LEACE = "leace"
    CONDNUM_LEACE = "condnum-leace"
    FULL_DEPTH = "full-depth"


_BUILTIN = (
    CONDNUM,
    NONE,
    R_ILL_ONLY,
    OPT_KAPPA,
    IMMA,
    CLOSED_FORM,
    LEACE,
    CONDNUM_LEACE,
    FULL_DEPTH,
)
_REGISTRY: dict[str, MethodSpec] = {spec.name: spec for spec in _BUILTIN}


def register_method(spec: MethodSpec) -> MethodSpec:
    """Add ``spec`` to the registry; a name that is taken is refused."""
    if not isinstance(spec, MethodSpec):
        raise TypeError(f"register_method takes a MethodSpec, got {type(spec).__name__}")
    if spec.name in _REGISTRY:
        raise ValueError(f"a method named {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def unregister_method(name: str) -> None:
    """Remove a method registered with :func:`register_method` (built-ins stay)."""
    if name in {spec.name for spec in _BUILTIN}:
        raise ValueError(f"{name!r} is a built-in method and cannot be removed")
    _REGISTRY.pop(name, None)


def registered_methods() -> tuple[MethodSpec, ...]:
    """Every registered method, built-ins first, in registration order."""
    return tuple(_REGISTRY.values())


def method_spec(name: str | Method, *, key: str = "train.method") -> MethodSpec:
    """The spec of ``name``; an unknown name raises ``ValueError`` listing the choices."""
    if not isinstance(name, str):
        raise TypeError(f"{key} must be a str, got {type(name).__name__}")
    try:
        return _REGISTRY[str(name)]
    except KeyError:
        valid = ", ".join(repr(n) for n in _REGISTRY)
        raise ValueError(f"unknown {key} {str(name)!r}; choose one of {valid}") from None


def configure_method(
    name: str | Method | MethodSpec,
    family: ModelFamily | str,
    options: MethodOptions | Mapping[str, Any] | None = None,
    /,
    **option_values: Any,
) -> ConfiguredMethod:
    """A registered method on ``family`` with its options, validated against the method's
    own options model: ``configure_method("opt-kappa", "deep", weight=0.1)``."""
    spec = name if isinstance(name, MethodSpec) else method_spec(name, key="method")
    if options is not None and option_values:
        raise TypeError("pass the options as one object or as keywords, not both")
    return spec.configure(family, option_values if options is None else options)
