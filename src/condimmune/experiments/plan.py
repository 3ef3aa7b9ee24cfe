"""The run plan: a validated config resolved once into frozen, typed options.

The command line and the Python API (:func:`condimmune.run`) validate a config
(:mod:`condimmune.experiments.config`) and call
:func:`~condimmune.experiments.pipeline.resolve_plan`; from there on nothing
reads the config or looks a name up again. A :class:`RunPlan` holds the experiment's
registry entry, the seed, the CPU threads the run asks for, the method with its typed
options (:class:`~condimmune.methods.base.ConfiguredMethod`), the family's typed options
(data, model, training, evaluation, attack: one frozen dataclass per family, made by its
pipeline, :mod:`condimmune.experiments.pipeline`) and the recipe: the resolved config as
plain data, which is what ``config.yaml`` holds and what fingerprints are taken of.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from condimmune.experiments.registry import ExperimentSpec
from condimmune.methods.base import ConfiguredMethod, ModelFamily, OptionValue

__all__ = ["RunPlan", "fingerprint", "recipe_mismatch"]

OptionsT = TypeVar("OptionsT")


def fingerprint(data: object) -> str:
    """A short, stable digest of JSON-able ``data`` (sorted keys; 16 hex digits)."""
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RunPlan(Generic[OptionsT]):
    """One run, resolved: see the module docstring. ``options`` is the family's typed
    options (``LinearRunOptions`` or ``DeepRunOptions``)."""

    experiment: ExperimentSpec
    seed: int
    threads: int
    method: ConfiguredMethod
    options: OptionsT
    recipe: str
    """The resolved config as JSON text (in the config's key order; every value finite)."""

    @property
    def family(self) -> ModelFamily:
        return self.experiment.family

    @property
    def name(self) -> str:
        """The experiment's name (``mnist-pair``)."""
        return self.experiment.name.value

    def method_changes(self) -> dict[str, OptionValue]:
        """The method's options that differ from the experiment's defaults for it (what a
        ``--set method.*`` changed); ``metrics.json`` records them as ``method_options``."""
        return self.method.changed_options(self.experiment.method_defaults.get(self.method.name))

    def recipe_dict(self) -> dict[str, Any]:
        """The resolved config as nested plain dicts (a new copy), for ``config.yaml``."""
        data: dict[str, Any] = json.loads(self.recipe)
        return data

    def fingerprint(self) -> str:
        """The digest of the whole recipe: a checkpoint written under another is refused."""
        return fingerprint(self.recipe_dict())


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    return a == b


def _show(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def recipe_mismatch(run_dir: Path, saved: dict[str, Any], wanted: dict[str, Any]) -> str | None:
    """The error for the first key (in config order) where the recipe ``saved`` in
    ``run_dir`` differs from ``wanted`` (``None``: they are the same)."""
    have, want = _flatten(saved), _flatten(wanted)
    hint = "use a new --out or delete it"
    for key in [*want, *sorted(set(have) - set(want))]:
        if key not in have:
            return (
                f"{run_dir} was run without {key}, this sweep asks for {_show(want[key])}; {hint}"
            )
        if key not in want:
            return (
                f"{run_dir} was run with {key}={_show(have[key])}, this sweep does not set it; "
                f"{hint}"
            )
        if not _same(have[key], want[key]):
            return (
                f"{run_dir} was run with {key}={_show(have[key])}, this sweep asks for "
                f"{_show(want[key])}; {hint}"
            )
    return None
