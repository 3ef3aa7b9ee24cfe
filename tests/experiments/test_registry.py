"""The experiment registry: every named experiment is complete and reachable.

A new experiment (docs/architecture.md, "Add an experiment") is picked up here without
editing this file: its defaults must validate, its ignored keys must be real keys of its
schema, and ``condimmune list`` must show it.
"""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from condimmune.cli import app
from condimmune.experiments.config import (
    apply_overrides,
    config_from_dict,
    config_to_dict,
    default_config,
)
from condimmune.experiments.config.families import FAMILIES
from condimmune.experiments.registry import (
    Experiment,
    ExperimentSpec,
    experiment_spec,
    registered_experiments,
)

SPECS = registered_experiments()


def _keys(tree: dict[str, Any], prefix: str = "") -> set[str]:
    out: set[str] = set()
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        out |= _keys(value, f"{dotted}.") if isinstance(value, dict) else {dotted}
    return out


def test_every_enum_member_has_exactly_one_spec() -> None:
    assert [spec.name for spec in SPECS] == list(Experiment)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name.value)
def test_defaults_validate_and_round_trip(spec: ExperimentSpec) -> None:
    config = default_config(spec.name)
    assert type(config) is FAMILIES[spec.family].config
    assert config.experiment == spec.name.value
    assert config_from_dict(config_to_dict(config)) == config


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name.value)
def test_ignored_and_default_keys_are_keys_of_the_schema(spec: ExperimentSpec) -> None:
    keys = _keys(config_to_dict(default_config(spec.name)))
    assert spec.ignores <= keys, sorted(spec.ignores - keys)
    assert _keys({k: dict(v) for k, v in spec.defaults.items()}) <= keys


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name.value)
def test_list_shows_every_experiment(spec: ExperimentSpec) -> None:
    result = CliRunner().invoke(app, ["list"])
    assert result.exit_code == 0
    assert spec.name.value in result.output


def test_unknown_experiment_lists_the_choices() -> None:
    with pytest.raises(ValueError, match="mnist-pair"):
        experiment_spec("no-such-experiment")


CHANGED_OPTIONS = {
    # an experiment's own defaults for a method are not changes (house price sets ρ_H = 1)
    "experiment-defaults": ("house-price", [], {}),
    "one-set": ("house-price", ["method.harmful_step=0.5"], {"harmful_step": 0.5}),
    "set-back-to-the-default": ("house-price", ["method.harmful_ridge=1"], {}),
    "the-class-default-elsewhere": (
        "mnist-pair",
        ["method.harmful_ridge=1"],
        {"harmful_ridge": 1.0},
    ),
}


@pytest.mark.parametrize("case", CHANGED_OPTIONS.values(), ids=CHANGED_OPTIONS.keys())
def test_a_plan_names_the_method_options_its_run_changed(case: tuple[str, list[str], dict]) -> None:
    """What metrics.json records as ``method_options`` (and the matrix combines apart)."""
    from condimmune.experiments.pipeline import resolve_plan

    name, sets, changed = case
    plan = resolve_plan(apply_overrides(default_config(name), ["train.method=condnum", *sets]))
    assert plan.method_changes() == changed


def test_a_method_label_lists_the_changed_options_sorted() -> None:
    from condimmune.methods.base import method_label

    assert method_label("full-depth", None) == "full-depth"
    assert method_label("full-depth", {}) == "full-depth"
    assert (
        method_label("full-depth", {"union_weight": 1.0, "anchor_weight": 0.0, "steer": True})
        == "full-depth (anchor_weight=0, steer=True, union_weight=1)"
    )
