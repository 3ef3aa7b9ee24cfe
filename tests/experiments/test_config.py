"""The typed experiment configuration: ranges, unknown keys, types, ``--set`` parsing by declared
type, YAML files, round trips, and one-line ``ValueError``s for every bad input."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from condimmune.experiments import config as config_module
from condimmune.experiments.config import (
    Config,
    DeepExperimentConfig,
    DeepTrainConfig,
    Experiment,
    ExperimentConfig,
    TrainConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    default_config,
    load_config,
)
from condimmune.experiments.config.families import FAMILIES
from condimmune.experiments.registry import (
    EXPERIMENT_DEFAULTS,
    EXPERIMENT_DESCRIPTIONS,
    EXPERIMENTS,
    experiment_defaults,
    experiment_spec,
    registered_experiments,
)
from condimmune.methods.base import (
    DeepSolver,
    DeepVersion,
    FeatureMap,
    LinearPlan,
    LinearVersion,
    MethodSpec,
    ModelFamily,
    NoOptions,
)
from condimmune.methods.registry import register_method, unregister_method

LINEAR = "mnist-pair"
HOUSE = "house-price"
DEEP = "mnist-cnn"
FOLDERS = "imagenet-cars-resnet18"


def _get(config: Config, key: str) -> Any:
    value: Any = config
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _error(fn: Any, *args: Any) -> str:
    """The message of the ``ValueError`` that ``fn(*args)`` must raise, checked to be one line."""
    with pytest.raises(ValueError) as info:
        fn(*args)
    message = str(info.value)
    assert message and "\n" not in message, message
    return message


def _with(experiment: str | Config, key: str, value: Any) -> dict[str, Any]:
    """A config (or an experiment's defaults) as a dict, with ``key`` set to ``value``: what a
    YAML file gives :func:`config_from_dict`."""
    config = default_config(experiment) if isinstance(experiment, str) else experiment
    data = config_to_dict(config)
    node = data
    *sections, name = key.split(".")
    for section in sections:
        node = node[section]
    node[name] = value
    return data


# --------------------------------------------------------------------------- range bounds
# (experiment, key, below, lowest, highest, above, other --set needed); None = no such bound.
_BOUNDS: list[tuple[str, str, Any, Any, Any, Any, list[str]]] = [
    (LINEAR, "seed", -1, 0, 2**32 - 1, 2**32, []),
    (LINEAR, "data.per_class", 1, 2, 100_000, 100_001, []),
    (LINEAR, "data.test_per_class", 0, 1, 100_000, 100_001, []),
    (HOUSE, "data.train_rows", 1, 2, 1_000_000, 1_000_001, []),
    (HOUSE, "data.test_rows", 0, 1, 1_000_000, 1_000_001, []),
    (LINEAR, "data.pca_components", -1, 0, 100_000, 100_001, []),
    (LINEAR, "data.benign_digit", -1, 0, 9, 10, []),
    (LINEAR, "data.harmful_digit", -1, 0, 9, 10, []),
    (LINEAR, "train.epochs", 0, 1, 10_000, 10_001, []),
    (LINEAR, "train.batch_size", 0, 1, 1_000_000, 1_000_001, []),
    (LINEAR, "train.lr", 0.0, 1e-300, None, None, []),
    (LINEAR, "method.benign_step", -0.1, 0.0, 0.999, 1.0, []),
    (LINEAR, "method.harmful_step", -0.1, 0.0, 0.999, 1.0, []),
    (LINEAR, "method.benign_ridge", 0.0, 1e-300, None, None, []),
    (LINEAR, "method.harmful_ridge", 0.0, 1e-300, None, None, []),
    (LINEAR, "method.harmful_step", -0.1, 0.0, 0.999, 1.0, ["train.method=r-ill-only"]),
    (LINEAR, "method.weight", -1.0, 0.0, None, None, ["train.method=opt-kappa"]),
    (LINEAR, "method.weight", -1.0, 0.0, None, None, ["train.method=imma"]),
    (LINEAR, "method.inner_steps", 0, 1, 1_000, 1_001, ["train.method=imma"]),
    (LINEAR, "attack.target", 0.0, 1e-12, 0.999, 1.0, []),
    (LINEAR, "attack.budget", 0, 1, 1_000_000, 1_000_001, []),
    (DEEP, "seed", -1, 0, 2**32 - 1, 2**32, []),
    (DEEP, "model.image_size", 3, 4, 1024, 1025, []),
    (DEEP, "data.train_per_class", 0, 1, 100_000, 100_001, []),
    (DEEP, "data.test_per_class", 0, 1, 100_000, 100_001, []),
    (DEEP, "data.defence_per_class", -1, 0, 100_000, 100_001, []),
    (DEEP, "data.canvas", -1, 0, 256, 257, []),
    (DEEP, "attack.weight_free_steps", 0, 1, 1_000_000, 1_000_001, []),
    (DEEP, "attack.workers", -1, 0, 1024, 1025, []),
    (DEEP, "data.clutter", -1, 0, 64, 65, []),
    (FOLDERS, "data.max_train_images", -1, 0, 10_000_000, 10_000_001, []),
    (FOLDERS, "data.max_test_images", -1, 0, 10_000_000, 10_000_001, []),
    (DEEP, "data.num_workers", -1, 0, 256, 257, []),
    (DEEP, "train.pretrain_epochs", -1, 0, 10_000, 10_001, []),
    (DEEP, "train.pretrain_lr", 0.0, 1e-300, None, None, []),
    (DEEP, "train.pretrain_batch_size", 0, 1, 65_536, 65_537, []),
    (DEEP, "train.epochs", -1, 0, 10_000, 10_001, []),
    (DEEP, "train.batch_size", 1, 2, 65_536, 65_537, []),
    (DEEP, "train.lr", 0.0, 1e-300, None, None, []),
    (DEEP, "train.momentum", -0.1, 0.0, 0.999, 1.0, []),
    (DEEP, "train.weight_decay", -1e-9, 0.0, None, None, []),
    (DEEP, "train.label_smoothing", -0.1, 0.0, 0.999, 1.0, []),
    (DEEP, "method.benign_weight", -1.0, 0.0, None, None, []),
    (DEEP, "method.harmful_weight", -1.0, 0.0, None, None, []),
    (DEEP, "method.harmful_weight", -1.0, 0.0, None, None, ["train.method=condnum-leace"]),
    (DEEP, "method.weight", -1.0, 0.0, None, None, ["train.method=opt-kappa"]),
    (DEEP, "method.weight", -1.0, 0.0, None, None, ["train.method=imma"]),
    (DEEP, "method.inner_steps", 0, 1, 1_000, 1_001, ["train.method=imma"]),
    (DEEP, "method.ridge", 0.0, 1e-300, None, None, ["train.method=closed-form"]),
    (DEEP, "train.max_steps", -1, 0, 100_000_000, 100_000_001, []),
    (DEEP, "train.devices", 0, 1, 1024, 1025, ["train.batch_size=65536"]),
    (DEEP, "train.checkpoint_every", 0, 1, 100_000_000, 100_000_001, []),
    (DEEP, "eval.groups", 1, 2, 10_000, 10_001, []),
    (DEEP, "eval.group_size", 2, 3, 1_000_000, 1_000_001, []),
    (DEEP, "eval.attack_target", 0.0, 1e-12, 0.999, 1.0, []),
    (DEEP, "eval.attack_budget", 0, 1, 1_000_000, 1_000_001, []),
    (DEEP, "eval.probe_steps", 0, 1, 1_000_000, 1_000_001, []),
    (DEEP, "eval.batch_size", 0, 1, 65_536, 65_537, []),
]


def _bound_cases() -> Iterator[Any]:
    for experiment, key, below, lowest, highest, above, extra in _BOUNDS:
        for label, value, ok in (
            ("below", below, False),
            ("at-low", lowest, True),
            ("at-high", highest, True),
            ("above", above, False),
        ):
            if value is not None:
                method = "".join(f"[{e.split('=')[1]}]" for e in extra if "method" in e)
                yield pytest.param(
                    experiment,
                    key,
                    value,
                    extra,
                    ok,
                    id=f"{experiment}{method}:{key}={value}:{label}",
                )


@pytest.mark.parametrize(("experiment", "key", "value", "extra", "ok"), list(_bound_cases()))
def test_range_bounds(experiment: str, key: str, value: Any, extra: list[str], ok: bool) -> None:
    base = apply_overrides(default_config(experiment), extra)
    through_set = [*extra, f"{key}={value!r}"]
    through_dict = _with(base, key, value)
    if ok:
        assert _get(apply_overrides(base, through_set), key) == value
        assert _get(config_from_dict(through_dict), key) == value
        return
    for message in (
        _error(apply_overrides, base, through_set),
        _error(config_from_dict, through_dict),
    ):
        assert key in message
        if "digit" in key:
            assert f"{key} must be a digit 0–9, got {value}" == message
        else:
            assert message.startswith(f"invalid value for {key}: {value!r} (must be ")


@pytest.mark.parametrize(
    ("experiment", "assignment", "message"),
    [
        pytest.param(
            LINEAR, "train.epochs=0", "invalid value for train.epochs: 0 (must be ≥ 1)", id="ge"
        ),
        pytest.param(
            LINEAR,
            "train.epochs=10001",
            "invalid value for train.epochs: 10001 (must be ≤ 10000)",
            id="le",
        ),
        pytest.param(
            LINEAR, "train.lr=-1", "invalid value for train.lr: -1.0 (must be > 0)", id="gt"
        ),
        pytest.param(
            LINEAR,
            "method.harmful_step=1.5",
            "invalid value for method.harmful_step: 1.5 (must be < 1)",
            id="lt",
        ),
        pytest.param(
            LINEAR, "train.lr=abc", "train.lr must be of type float, got 'abc'", id="type"
        ),
        pytest.param(
            LINEAR,
            "method.step_rule=newton",
            "invalid value for method.step_rule: 'newton' (choose one of 'unit' or 'monotone')",
            id="choice",
        ),
    ],
)
def test_messages_name_the_key_the_value_and_what_is_allowed(
    experiment: str, assignment: str, message: str
) -> None:
    config = default_config(experiment)
    assert _error(apply_overrides, config, [assignment]) == message


def test_cross_field_checks() -> None:
    linear, deep = default_config(LINEAR), default_config(DEEP)
    assert "choose two different digits" in _error(
        apply_overrides, linear, ["data.harmful_digit=1"]
    )
    assert "divisible" in _error(apply_overrides, deep, ["train.batch_size=63", "train.devices=2"])
    assert apply_overrides(deep, ["train.batch_size=64", "train.devices=2"]).train.devices == 2
    assert "overlap" in _error(
        apply_overrides, deep, ["data.benign_digits=0123", "data.harmful_digits=3456"]
    )
    assert "data.canvas=27 is smaller than a digit" in _error(
        apply_overrides, deep, ["data.canvas=27"]
    )
    assert apply_overrides(deep, ["data.canvas=28"]).data.canvas == 28
    assert "unknown model.backbone 'resnet50'" in _error(
        apply_overrides, deep, ["model.backbone=resnet50"]
    )
    for digits, fragment in (("0", "at least two"), ("0a1", "must list digits"), ("11", "twice")):
        assert fragment in _error(apply_overrides, deep, [f"data.benign_digits={digits}"])
    assert apply_overrides(deep, ["data.benign_digits=0,1,2"]).data.benign_digits == "0,1,2"


# ----------------------------------------------------------------------------- unknown keys
@pytest.mark.parametrize(
    ("experiment", "key", "fragment"),
    [
        pytest.param(LINEAR, "foo", "unknown config key: foo; valid keys: attack.*", id="top"),
        pytest.param(LINEAR, "data.foo", "unknown config key: data.foo; valid keys:", id="data"),
        pytest.param(
            LINEAR, "train.speed", "unknown config key: train.speed; valid keys:", id="train"
        ),
        pytest.param(LINEAR, "attack.foo", "unknown config key: attack.foo", id="attack"),
        pytest.param(DEEP, "model.foo", "unknown config key: model.foo", id="deep-model"),
        pytest.param(DEEP, "eval.foo", "unknown config key: eval.foo", id="deep-eval"),
        pytest.param(DEEP, "train.foo", "unknown config key: train.foo", id="deep-train"),
        pytest.param(
            LINEAR, "data.harmful_root", "unknown config key: data.harmful_root", id="deep-key"
        ),
        pytest.param(LINEAR, "eval.groups", "unknown config key: eval.groups", id="deep-section"),
        pytest.param(
            DEEP, "attack.budget", "unknown config key: attack.budget", id="linear-section"
        ),
        pytest.param(DEEP, "data.per_class", "unknown config key: data.per_class", id="linear-key"),
        pytest.param(LINEAR, "train.lr.x", "unknown config key: train.lr.x", id="too-deep"),
        pytest.param(LINEAR, "data", "unknown config key: data", id="section"),
        pytest.param(LINEAR, "", "unknown config key: ", id="empty"),
    ],
)
def test_unknown_keys_are_named_with_the_valid_ones(
    experiment: str, key: str, fragment: str
) -> None:
    message = _error(apply_overrides, default_config(experiment), [f"{key}=3"])
    assert message.startswith(fragment)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param({"foo": 1}, "unknown config key: foo; valid keys: attack.*", id="top"),
        pytest.param({"data": {"foo": 1}}, "unknown config key: data.foo; valid", id="data"),
        pytest.param(
            {"train": {"a": 1, "b": 2}}, "unknown config keys: train.a, train.b", id="two"
        ),
        pytest.param({"attack": {"foo": 1}}, "unknown config key: attack.foo", id="attack"),
        pytest.param(
            {"experiment": DEEP, "eval": {"foo": 1}}, "unknown config key: eval.foo", id="eval"
        ),
        pytest.param(
            {"experiment": DEEP, "model": {"foo": 1}}, "unknown config key: model.foo", id="model"
        ),
        pytest.param({"versions": {}}, "unknown config key: versions", id="versions"),
        pytest.param({"train": 3}, "train must be a mapping, got int", id="not-a-mapping"),
        pytest.param({"data": None}, "data must be a mapping, got null", id="null-section"),
        pytest.param({"experiment": "mnist"}, "unknown experiment 'mnist'", id="experiment"),
        pytest.param({"experiment": 3}, "experiment must be of type str, got 3", id="exp-type"),
    ],
)
def test_config_from_dict_refuses_unknown_keys_and_shapes(
    data: dict[str, Any], message: str
) -> None:
    assert _error(config_from_dict, data).startswith(message)


def test_config_from_dict_refuses_a_non_mapping() -> None:
    assert _error(config_from_dict, [1, 2]) == "config must be a mapping, got list"


def test_keys_an_experiment_does_not_read_are_refused() -> None:
    for experiment, key in (
        (LINEAR, "data.train_rows"),
        (HOUSE, "data.benign_digit"),
        ("digits", "data.root"),
        (DEEP, "data.max_train_images"),
        (FOLDERS, "data.benign_digits"),
        (FOLDERS, "data.harmful_images"),
    ):
        message = _error(apply_overrides, default_config(experiment), [f"{key}=5"])
        assert message.startswith(f"{key} is not read by experiment {experiment}; remove it")


def test_experiment_cannot_be_set() -> None:
    for value in ("house-price", "mnist-pair"):
        assert "EXPERIMENT argument" in _error(
            apply_overrides, default_config(LINEAR), [f"experiment={value}"]
        )


@pytest.mark.parametrize(
    "assignments",
    [
        pytest.param(["train.epochs"], id="no-equals"),
        pytest.param([3], id="not-a-str"),
        pytest.param("train.epochs=3", id="a-str-not-a-list"),
    ],
)
def test_malformed_assignments(assignments: Any) -> None:
    _error(apply_overrides, default_config(LINEAR), assignments)


# ------------------------------------------------------------------------------ wrong types
@pytest.mark.parametrize(
    ("experiment", "key", "value", "message"),
    [
        pytest.param(LINEAR, "train.epochs", "3", "train.epochs must be of type int", id="int-s"),
        pytest.param(LINEAR, "train.epochs", 3.0, "train.epochs must be of type int", id="int-f"),
        pytest.param(LINEAR, "train.epochs", True, "train.epochs must be of type int", id="int-b"),
        pytest.param(LINEAR, "train.lr", "abc", "train.lr must be of type float", id="float-s"),
        pytest.param(LINEAR, "train.lr", True, "train.lr must be of type float", id="float-b"),
        pytest.param(LINEAR, "train.lr", [1.0], "train.lr must be of type float", id="float-l"),
        pytest.param(
            LINEAR, "data.drop_collinear", 1, "data.drop_collinear must be of type bool", id="b-i"
        ),
        pytest.param(
            LINEAR, "data.drop_collinear", "yes", "data.drop_collinear must be of type", id="b-s"
        ),
        pytest.param(
            LINEAR, "data.root", 5, "data.root must be of type str or null, got 5", id="opt-str"
        ),
        pytest.param(LINEAR, "train.method", 3, "train.method must be of type str", id="method"),
        pytest.param(
            DEEP,
            "data.benign_digits",
            668,
            "data.benign_digits must be of type str, got 668 (quote it in YAML",
            id="octal-in-yaml",
        ),
        pytest.param(DEEP, "train.precision", 32, "invalid value for train.precision", id="lit"),
    ],
)
def test_wrong_types_are_refused_not_converted(
    experiment: str, key: str, value: Any, message: str
) -> None:
    assert _error(config_from_dict, _with(experiment, key, value)).startswith(message)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        pytest.param("train.lr", 1, 1.0, id="int-for-float"),
        pytest.param("train.lr", "1e-3", 1e-3, id="yaml11-exponent-string"),
        pytest.param("train.lr", " 5e-1 ", 0.5, id="number-text-with-spaces"),
    ],
)
def test_lenient_where_harmless(key: str, value: Any, expected: Any) -> None:
    result = _get(config_from_dict(_with(LINEAR, key, value)), key)
    assert result == expected and type(result) is float


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        pytest.param("train.epochs=abc", "train.epochs must be of type int, got 'abc'", id="abc"),
        pytest.param("train.epochs=1.5", "train.epochs must be of type int, got '1.5'", id="f"),
        pytest.param("train.epochs=1e3", "train.epochs must be of type int, got '1e3'", id="e"),
        pytest.param("train.epochs=0x10", "train.epochs must be of type int, got '0x10'", id="x"),
        pytest.param("train.epochs=", "train.epochs must be of type int, got ''", id="empty"),
        pytest.param("train.epochs=٣", "train.epochs must be of type int, got '٣'", id="uni"),
        pytest.param("train.lr=1,5", "train.lr must be of type float, got '1,5'", id="comma"),
        pytest.param("train.lr=", "train.lr must be of type float, got ''", id="float-empty"),
        pytest.param("seed=" + "9" * 5000, "invalid value for seed: ", id="huge-int"),
        pytest.param(
            "train.epochs=012",
            "train.epochs must be of type int, got '012' (write integers without leading zeros)",
            id="leading-zero",
        ),
        pytest.param("seed=007", "seed must be of type int, got '007' (write", id="zero-seed"),
        pytest.param("train.epochs=1_000", "train.epochs must be of type int", id="underscore"),
        pytest.param("train.epochs=1:30", "train.epochs must be of type int", id="sexagesimal"),
        pytest.param("train.epochs=0o12", "train.epochs must be of type int", id="octal"),
        pytest.param("train.epochs=" + "7" * 500, "invalid value for train.epochs", id="long"),
    ],
)
def test_set_values_that_do_not_parse(assignment: str, message: str) -> None:
    assert _error(apply_overrides, default_config(LINEAR), [assignment]).startswith(message)


# ------------------------------------------------------- --set parses by the declared type
@pytest.mark.parametrize(
    ("experiment", "assignments", "key", "expected"),
    [
        pytest.param(
            DEEP,
            ["data.benign_digits=012", "data.harmful_digits=3456"],
            "data.benign_digits",
            "012",
            id="leading-zero-digits-stay-text",
        ),
        pytest.param(DEEP, ["data.benign_digits=01234"], "data.benign_digits", "01234", id="doc"),
        pytest.param(LINEAR, ["train.epochs=+12"], "train.epochs", 12, id="signed-int"),
        pytest.param(LINEAR, ["train.lr=012"], "train.lr", 12.0, id="leading-zero-float"),
        pytest.param(LINEAR, ["train.epochs= 5 "], "train.epochs", 5, id="int-spaces"),
        pytest.param(LINEAR, ["train.lr=1e-2"], "train.lr", 0.01, id="float-exponent"),
        pytest.param(LINEAR, ["train.lr=5"], "train.lr", 5.0, id="int-text-for-float"),
        pytest.param(LINEAR, ["train.lr=.5e-1"], "train.lr", 0.05, id="float-leading-dot"),
        pytest.param(LINEAR, ["data.root=@data/train"], "data.root", "@data/train", id="at"),
        pytest.param(LINEAR, ["data.root=012"], "data.root", "012", id="digits-path"),
        pytest.param(LINEAR, ["data.root=a=b"], "data.root", "a=b", id="equals-in-value"),
        pytest.param(LINEAR, ["data.root=[1, 2]"], "data.root", "[1, 2]", id="no-yaml-list"),
        pytest.param(LINEAR, ["data.root= p "], "data.root", " p ", id="raw-text"),
        pytest.param(LINEAR, ["data.root=true"], "data.root", "true", id="no-yaml-bool"),
        pytest.param(DEEP, ["model.weights=@w.pt"], "model.weights", "@w.pt", id="at-weights"),
        pytest.param(LINEAR, ["train.method=none"], "train.method", "none", id="none-method"),
        pytest.param(LINEAR, ["data.root=none"], "data.root", "none", id="none-is-text"),
        pytest.param(LINEAR, [" train.epochs =3"], "train.epochs", 3, id="key-spaces"),
        pytest.param(LINEAR, ["seed=1", "seed=2"], "seed", 2, id="last-wins"),
    ],
)
def test_set_parses_values_by_the_declared_type(
    experiment: str, assignments: list[str], key: str, expected: Any
) -> None:
    value = _get(apply_overrides(default_config(experiment), assignments), key)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        *(pytest.param(t, True, id=f"true:{t}") for t in ("true", "True", "TRUE")),
        *(pytest.param(t, False, id=f"false:{t}") for t in ("false", "False", "FALSE")),
        *(  # a config file reads these as text, so --set refuses them too
            pytest.param(t, None, id=f"bad:{t or 'empty'}")
            for t in ("1", "0", "yes", "no", "NO", "on", "off", "y", "tRUE", "2", "", "x")
        ),
    ],
)
def test_bool_spellings(text: str, expected: bool | None) -> None:
    config = default_config(LINEAR)
    if expected is None:
        message = _error(apply_overrides, config, [f"data.drop_collinear={text}"])
        assert message == (
            f"data.drop_collinear must be of type bool, got {text!r} (write true or false)"
        )
    else:
        assert apply_overrides(config, [f"data.drop_collinear={text}"]).data.drop_collinear is (
            expected
        )
        assert apply_overrides(config, [f"data.drop_collinear={text} "]).data.drop_collinear is (
            expected
        )


@pytest.mark.parametrize(
    ("experiment", "key", "text"),
    [
        *(
            pytest.param(LINEAR, "data.root", t, id=f"root:{t or 'empty'}")
            for t in ("null", "Null", "NULL", "~", "", " ")
        ),
        pytest.param(DEEP, "model.weights", "null", id="weights"),
        pytest.param(DEEP, "data.root", "~", id="deep-root"),
        pytest.param(FOLDERS, "data.harmful_root", "null", id="harmful-root"),
    ],
)
def test_null_for_optional_fields(experiment: str, key: str, text: str) -> None:
    config = apply_overrides(default_config(experiment), [f"{key}=somewhere"])
    assert _get(config, key) == "somewhere"
    assert _get(apply_overrides(config, [f"{key}={text}"]), key) is None


@pytest.mark.parametrize(
    ("experiment", "assignment", "fragment"),
    [
        pytest.param(DEEP, "data.benign_digits=null", "data.benign_digits must list", id="str"),
        pytest.param(LINEAR, "method.step_rule=null", "method.step_rule", id="choice"),
        pytest.param(LINEAR, "train.epochs=null", "train.epochs must be of type int", id="int"),
        pytest.param(LINEAR, "train.method=null", "unknown train.method 'null'", id="method"),
    ],
)
def test_null_is_text_for_required_fields(experiment: str, assignment: str, fragment: str) -> None:
    assert fragment in _error(apply_overrides, default_config(experiment), [assignment])


# -------------------------------------------------------------------------- non-finite floats
_NON_FINITE_TEXT = ["nan", "NaN", "inf", "-inf", "+Infinity", "1e999", "-1e400"]


@pytest.mark.parametrize(
    ("experiment", "key", "text"),
    [
        *(pytest.param(LINEAR, "train.lr", t, id=f"set-lr:{t}") for t in _NON_FINITE_TEXT),
        pytest.param(LINEAR, "method.benign_ridge", "inf", id="set-ridge"),
        pytest.param(LINEAR, "attack.target", "nan", id="set-target"),
        pytest.param(DEEP, "method.harmful_weight", "inf", id="set-deep-weight"),
        pytest.param(DEEP, "train.weight_decay", "nan", id="set-deep-decay"),
        pytest.param(DEEP, "eval.attack_target", "nan", id="set-eval-target"),
    ],
)
def test_non_finite_floats_are_refused_through_set(experiment: str, key: str, text: str) -> None:
    message = _error(apply_overrides, default_config(experiment), [f"{key}={text}"])
    assert message == f"invalid value for {key}: {text!r} (must be a finite number)"


@pytest.mark.parametrize(
    ("experiment", "key", "value"),
    [
        pytest.param(LINEAR, "train.lr", math.nan, id="lr-nan"),
        pytest.param(LINEAR, "train.lr", math.inf, id="lr-inf"),
        pytest.param(LINEAR, "method.harmful_ridge", -math.inf, id="ridge-minus-inf"),
        pytest.param(DEEP, "method.harmful_weight", math.inf, id="deep-inf"),
        pytest.param(DEEP, "method.benign_weight", math.nan, id="deep-nan"),
    ],
)
def test_non_finite_floats_are_refused_in_dicts(experiment: str, key: str, value: float) -> None:
    message = _error(config_from_dict, _with(experiment, key, value))
    assert message.startswith(f"invalid value for {key}: ")
    assert message.endswith("(must be a finite number)")


# ------------------------------------------------------------------------------ YAML files
@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        pytest.param("train: [1, 2\n", "not valid YAML", id="bad-yaml"),
        pytest.param("train:\n\tepochs: 3\n", "not valid YAML", id="tab"),
        pytest.param("- 1\n- 2\n", "must hold a mapping at the top level, got list", id="list"),
        pytest.param("3\n", "must hold a mapping at the top level, got int", id="scalar"),
        pytest.param("train:\n  foo: 1\n", "unknown config key: train.foo", id="unknown-key"),
        pytest.param("foo: 1\n", "unknown config key: foo", id="unknown-top"),
        pytest.param("train:\n  epochs: 0\n", "invalid value for train.epochs: 0", id="range"),
        pytest.param("train:\n  epochs: '3'\n", "train.epochs must be of type int", id="type"),
        pytest.param("train:\n  lr: .nan\n", "(must be a finite number)", id="nan"),
        pytest.param("train:\n  lr: .inf\n", "(must be a finite number)", id="inf"),
        pytest.param("train: 3\n", "train must be a mapping", id="section-scalar"),
        pytest.param("experiment: mnist\n", "unknown experiment 'mnist'", id="experiment"),
        pytest.param(
            "experiment: mnist-cnn\ndata:\n  benign_digits: 56789\n",
            "data.benign_digits must be of type str, got 56789 (quote it",
            id="unquoted-digits",
        ),
        pytest.param(
            "train:\n  epochs: 012\n",
            "train.epochs must be of type int, got '012' (write integers without leading zeros)",
            id="leading-zero",
        ),
        pytest.param(
            "data:\n  drop_collinear: yes\n",
            "data.drop_collinear must be of type bool, got 'yes' (write true or false)",
            id="yes-is-text",
        ),
        pytest.param(
            "train:\n  epochs: 2\n  epochs: 3\n",
            "duplicate key train.epochs at line 3, column 3 (first at line 2)",
            id="duplicate-key",
        ),
        pytest.param(
            "experiment: house-price\ndata:\n  benign_digit: 3\n",
            "data.benign_digit is not read by experiment house-price",
            id="ignored-key",
        ),
    ],
)
def test_yaml_file_errors_are_one_line_and_name_the_file(
    tmp_path: Path, content: str, fragment: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    message = _error(load_config, path)
    assert str(path) in message and fragment in message


def test_missing_unreadable_and_directory_files(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    assert _error(load_config, missing) == f"config file {missing} does not exist"
    assert _error(load_config, tmp_path) == f"config file {tmp_path} is not a file"
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00")
    assert (
        _error(load_config, binary)
        == f"not UTF-8 text: {binary}; fix the file (README.md, Config files)"
    )


@pytest.mark.parametrize(
    ("content", "experiment", "key", "expected"),
    [
        pytest.param("", None, "experiment", LINEAR, id="empty-file"),
        pytest.param("train:\n  lr: 1e-3\n", None, "train.lr", 1e-3, id="yaml11-exponent"),
        pytest.param("train:\n  lr: 2\n", None, "train.lr", 2.0, id="int-for-float"),
        pytest.param("seed: 4\n", HOUSE, "train.epochs", 100, id="experiment-defaults"),
        pytest.param("experiment: digits\n", HOUSE, "experiment", "digits", id="file-wins"),
        pytest.param(
            "experiment: mnist-cnn\ndata:\n  benign_digits: '012'\n",
            None,
            "data.benign_digits",
            "012",
            id="quoted-digits",
        ),
        pytest.param(
            "experiment: mnist-cnn\ndata:\n  benign_digits: 0123\n",
            None,
            "data.benign_digits",
            "0123",
            id="leading-zero-digits-are-text",
        ),
        pytest.param("train:\n  lr: 012\n", None, "train.lr", 12.0, id="leading-zero-float"),
        pytest.param(
            "experiment: house-price\ndata:\n  benign_digit: 1\n",
            None,
            "data.benign_digit",
            1,
            id="ignored-key-at-default",
        ),
    ],
)
def test_yaml_files_load_over_the_experiment_defaults(
    tmp_path: Path, content: str, experiment: str | None, key: str, expected: Any
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(content)
    assert _get(load_config(path, experiment), key) == expected


@pytest.mark.parametrize("experiment", [e.value for e in Experiment])
def test_a_runs_config_yaml_loads_back(tmp_path: Path, experiment: str) -> None:
    """What the runners write: config_to_dict + a ``versions`` mapping, dumped by PyYAML."""
    config = apply_overrides(default_config(experiment), ["seed=3"])
    resolved = config_to_dict(config)
    resolved["versions"] = {"python": "3.11", "torch": "2.x"}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(resolved, sort_keys=False))
    assert load_config(path) == config
    raw = yaml.safe_load(path.read_text())
    raw.pop("versions")
    assert config_from_dict(raw) == config


# ------------------------------------------------------------------------------ round trips
_DEFAULT_LINEAR = {
    "experiment": "mnist-pair",
    "seed": 0,
    "threads": 1,
    "data": {
        "root": None,
        "benign_digit": 1,
        "harmful_digit": 7,
        "per_class": 300,
        "test_per_class": 100,
        "train_rows": 200,
        "test_rows": 100,
        "pca_components": 64,
        "drop_collinear": False,
    },
    "train": {
        "method": "condnum",
        "epochs": 30,
        "batch_size": 64,
        "lr": 1e-3,
    },
    "method": {
        "benign_step": 0.5,
        "harmful_step": 0.2,
        "benign_ridge": 1.0,
        "harmful_ridge": 1e-7,
        "step_rule": "unit",
    },
    "attack": {
        "target": 1e-3,
        "budget": 2000,
        "attackers": "all",
        "suite_budget": 500,
        "full_curves": False,
    },
}
_DEFAULT_DEEP = {
    "experiment": "mnist-cnn",
    "seed": 0,
    "threads": 0,
    "model": {
        "backbone": "small-cnn",
        "weights": None,
        "image_size": 28,
        "trainable_blocks": 2,
        "cache_prefix": False,
        "cache_dir": None,
    },
    "data": {
        "root": None,
        "harmful_root": None,
        "benign_digits": "01234",
        "harmful_digits": "56789",
        "harmful_images": "mnist",
        "train_per_class": 400,
        "test_per_class": 100,
        "defence_per_class": 0,
        "canvas": 0,
        "clutter": 0,
        "max_train_images": 0,
        "max_test_images": 0,
        "num_workers": 0,
    },
    "train": {
        "method": "condnum",
        "pretrain_epochs": 4,
        "pretrain_lr": 1e-3,
        "pretrain_batch_size": 64,
        "fit_head_steps": 0,
        "epochs": 16,
        "batch_size": 256,
        "lr": 1e-3,
        "momentum": 0.9,
        "weight_decay": 2e-5,
        "label_smoothing": 0.1,
        "normalize_covariance": True,
        "max_steps": 0,
        "precision": "32-true",
        "accelerator": "cpu",
        "devices": 1,
        "strategy": "auto",
        "checkpoint_every": 50,
        "logger": "csv",
    },
    "method": {"benign_weight": 1e-3, "harmful_weight": 100.0, "benign_guard": True},
    "eval": {
        "groups": 20,
        "group_size": 256,
        "attack_target": 1e-3,
        "attack_budget": 2000,
        "probe_steps": 300,
        "batch_size": 256,
        "benign_probe_steps": 0,
    },
    "attack": {
        "attackers": "all",
        "trials": 20,
        "finetune_trials": 4,
        "probe_steps": 50,
        "finetune_steps": 40,
        "finetune_eval_every": 10,
        "weight_free_steps": None,
        "raw_probe_steps": None,
        "batch_size": 64,
        "finetune_benign": False,
        "benign_trials": 5,
        "seconds": 300.0,
        "target_fraction": 0.95,
        "utility_cap": 5.0,
        "storage": None,
        "theta0_storage": None,
        "skip_dims": 2048,
        "labels_per_class": None,
        "prefix_curve": False,
        "workers": 1,
    },
}


def _shape(data: Any) -> Any:
    """Keys in order and value types: what config.yaml (and the deep run's hash) depends on."""
    if isinstance(data, dict):
        return [(k, _shape(v)) for k, v in data.items()]
    return (type(data).__name__, data)


@pytest.mark.parametrize(
    ("experiment", "expected"),
    [pytest.param(LINEAR, _DEFAULT_LINEAR, id=LINEAR), pytest.param(DEEP, _DEFAULT_DEEP, id=DEEP)],
)
def test_config_to_dict_keeps_the_keys_order_and_types(
    experiment: str, expected: dict[str, Any]
) -> None:
    assert _shape(config_to_dict(default_config(experiment))) == _shape(expected)


@pytest.mark.parametrize("experiment", [spec.name.value for spec in registered_experiments()])
def test_round_trip_for_every_experiment(experiment: str) -> None:
    config = default_config(experiment)
    data = config_to_dict(config)
    assert config_from_dict(data) == config
    assert config_from_dict(yaml.safe_load(yaml.safe_dump(data, sort_keys=False))) == config
    assert _shape(config_to_dict(config_from_dict(data))) == _shape(data)
    assert type(config) is FAMILIES[experiment_spec(experiment).family].config
    for section, values in EXPERIMENT_DEFAULTS[Experiment(experiment)].items():
        for key, value in values.items():
            assert data[section][key] == value


def test_default_config_refuses_unknown_experiments() -> None:
    message = _error(default_config, "mnist")
    assert message.startswith("unknown experiment 'mnist'; choose one of 'mnist-pair'")


# ---------------------------------------------------------------------------- the registries
def test_experiment_registry() -> None:
    assert list(EXPERIMENTS) == list(Experiment)
    assert set(EXPERIMENT_DESCRIPTIONS) == set(Experiment)
    linear = {Experiment.MNIST_PAIR, Experiment.HOUSE_PRICE, Experiment.DIGITS}
    deep = {name for name, spec in EXPERIMENTS.items() if spec.family is ModelFamily.DEEP}
    assert set(Experiment) - linear == deep
    assert {FAMILIES[spec.family].config for spec in EXPERIMENTS.values()} == {
        ExperimentConfig,
        DeepExperimentConfig,
    }
    assert config_module.Experiment is Experiment
    assert experiment_spec("digits").name is Experiment.DIGITS
    with pytest.raises(TypeError):
        EXPERIMENT_DEFAULTS[Experiment.DIGITS]["train"]["epochs"] = 1  # type: ignore[index]
    copy = experiment_defaults("digits")
    copy["train"]["epochs"] = 1
    assert default_config("digits").train.epochs == 30


_REGISTERED = [spec.name.value for spec in registered_experiments()]


@pytest.mark.parametrize("experiment", _REGISTERED)
def test_ignored_keys_are_real_config_keys_left_at_their_defaults(experiment: str) -> None:
    spec = experiment_spec(experiment)
    config = default_config(experiment)
    assert type(config) is FAMILIES[spec.family].config
    leaf_keys = set(_leaf_keys(type(config)))
    for key in spec.ignores:
        assert key in leaf_keys, key
        section, name = key.split(".")
        section_model = getattr(config, section)
        assert isinstance(section_model, BaseModel)
        default = type(section_model).model_fields[name].default
        assert getattr(section_model, name) == default
        other = "2" if default == 1 else "1"  # at its default it is accepted (test_recipe.py)
        assert f"{key} is not read" in _error(apply_overrides, config, [f"{key}={other}"])


def test_method_lives_only_in_the_method_registry() -> None:
    package = Path(config_module.__file__).parent
    for module in package.glob("*.py"):
        source = module.read_text()
        assert "class Method" not in source and "METHOD_DESCRIPTIONS" not in source, module
    assert not hasattr(config_module, "Method")


def _toy_linear(problem: Any, options: Any) -> LinearPlan:  # pragma: no cover - never run
    raise AssertionError


def _toy_map(inputs: Any, options: Any) -> FeatureMap:  # pragma: no cover - never run
    raise AssertionError


@pytest.fixture
def toy_methods() -> Iterator[tuple[str, str]]:
    linear_only = MethodSpec(
        "toy-cfg-linear", "test only", linear=LinearVersion(NoOptions, _toy_linear)
    )
    deep_only = MethodSpec(
        "toy-cfg-deep",
        "test only",
        deep=DeepVersion(NoOptions, DeepSolver.CLOSED_FORM, feature_map=_toy_map),
    )
    register_method(linear_only)
    register_method(deep_only)
    try:
        yield linear_only.name, deep_only.name
    finally:
        unregister_method(linear_only.name)
        unregister_method(deep_only.name)


def test_methods_registered_at_run_time_are_validated(toy_methods: tuple[str, str]) -> None:
    linear_only, deep_only = toy_methods
    linear, deep = default_config(LINEAR), default_config(DEEP)
    assert apply_overrides(linear, [f"train.method={linear_only}"]).train.method == linear_only
    assert apply_overrides(deep, [f"train.method={deep_only}"]).train.method == deep_only
    message = _error(apply_overrides, deep, [f"train.method={linear_only}"])
    assert message.startswith(f"train.method '{linear_only}' has no deep version; choose one of")
    assert deep_only in message and linear_only not in message.split("choose")[1]
    message = _error(apply_overrides, linear, [f"train.method={deep_only}"])
    assert message.startswith(f"train.method '{deep_only}' has no linear version")
    assert TrainConfig(method=linear_only).method == linear_only
    with pytest.raises(ValueError, match=r"train\.method"):
        DeepTrainConfig(method=linear_only)


def test_unknown_methods_list_the_choices() -> None:
    message = _error(apply_overrides, default_config(LINEAR), ["train.method=magic"])
    assert message.startswith("unknown train.method 'magic'; choose one of 'condnum'")


def test_assignments_are_validated_and_one_line() -> None:
    config = default_config(LINEAR)
    config.data.root = "/data/mnist"
    config.train.method = "none"
    assert config.train.method == "none"
    with pytest.raises(ValueError) as info:
        config.train.lr = -1
    assert str(info.value) == "invalid value for train.lr: -1 (must be > 0)"
    assert config.train.lr == 1e-3
    with pytest.raises(ValueError, match=r"unknown config key: train\.speed; valid keys"):
        config.train.speed = 3


def test_apply_overrides_returns_a_copy() -> None:
    config = default_config(LINEAR)
    changed = apply_overrides(config, ["train.epochs=5"])
    assert changed.train.epochs == 5 and config.train.epochs == 30
    assert apply_overrides(config, []) == config and apply_overrides(config, []) is not config


# ------------------------------------------------------------------------ property: no crash
def _leaf_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, info in model.model_fields.items():
        nested = info.annotation
        if isinstance(nested, type) and issubclass(nested, BaseModel):
            keys.extend(_leaf_keys(nested, f"{prefix}{name}."))
        else:
            keys.append(prefix + name)
    return keys


_KEYS = sorted(
    {*_leaf_keys(ExperimentConfig), *_leaf_keys(DeepExperimentConfig)}
    | {"data", "train", "eval", "model", "attack", "train.lr.x", "nope", "", "data.", ".data"}
)
_VALUES = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        [
            "0",
            "1",
            "012",
            "-1",
            "1e-3",
            "nan",
            "inf",
            "null",
            "none",
            "true",
            "no",
            "@x",
            "10001",
            "99999999999999999999",
            "0.5",
            "unit",
            "condnum",
            "resnet18",
            "ddp",
            "0,1",
        ]
    ),
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)
_ASSIGNMENT = st.one_of(
    st.tuples(st.sampled_from(_KEYS), _VALUES).map(lambda kv: f"{kv[0]}={kv[1]}"),
    st.text(max_size=20),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    experiment=st.sampled_from([e.value for e in Experiment]),
    assignments=st.lists(_ASSIGNMENT, min_size=1, max_size=3),
)
def test_random_overrides_give_a_valid_config_or_a_one_line_value_error(
    experiment: str, assignments: list[str]
) -> None:
    base = default_config(experiment)
    try:
        config = apply_overrides(base, assignments)
    except ValueError as exc:
        message = str(exc)
        assert message and "\n" not in message and "Traceback" not in message
        assert not re.search(r"validation errors? for", message)
        return
    assert type(config) is type(base)
    assert config_from_dict(config_to_dict(config)) == config


# ----------------------------------------------------------------------- the method section
def test_the_method_section_follows_train_method_through_set() -> None:
    house = default_config(HOUSE)
    assert config_to_dict(house)["method"]["harmful_ridge"] == 1.0  # the experiment's default
    r_ill = apply_overrides(house, ["train.method=r-ill-only"])
    assert config_to_dict(r_ill)["method"] == {
        "harmful_step": 0.1,
        "harmful_ridge": 1.0,
        "step_rule": "unit",
    }
    tuned = apply_overrides(house, ["method.benign_step=0.3"])
    opt = apply_overrides(tuned, ["train.method=opt-kappa"])
    assert config_to_dict(opt)["method"] == {"weight": 1.0}  # a new method starts afresh
    # method.* keys are the options of the method the config ends with, in any order
    both = apply_overrides(house, ["method.weight=0.25", "train.method=opt-kappa"])
    assert config_to_dict(both)["method"] == {"weight": 0.25}
    message = _error(apply_overrides, house, ["method.benign_step=0.3", "train.method=none"])
    assert message == "unknown config key: method.benign_step; method takes no keys"


@pytest.mark.parametrize(
    ("text", "method"),
    [
        pytest.param("train: {method: opt-kappa}\n", {"weight": 1.0}, id="defaults"),
        pytest.param(
            "train: {method: imma}\nmethod: {inner_steps: 3}\n",
            {"weight": 1.0, "inner_steps": 3},
            id="partial-section",
        ),
        pytest.param(
            "experiment: mnist-cnn\ntrain: {method: r-ill-only}\n",
            {"harmful_weight": 100.0},
            id="experiment-default",
        ),
    ],
)
def test_a_config_file_names_a_method_and_its_options(
    tmp_path: Path, text: str, method: dict[str, Any]
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    assert config_to_dict(load_config(path))["method"] == method


def test_a_config_file_with_options_of_another_method_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("train: {method: none}\nmethod: {benign_step: 0.1}\n")
    message = _error(load_config, path)
    assert message == (
        f"config file {path}: unknown config key: method.benign_step; method takes no keys"
    )


def test_the_prefix_curve_option_reaches_the_suite_and_leaves_theta0_studies_named_alike(
    tmp_path,
):
    """``attack.prefix_curve`` adds a measurement and changes no other search: θ0's and θ_I's
    study names (what runs share) are the same with it on or off."""
    from condimmune.experiments.pipeline import resolve_plan
    from condimmune.experiments.pipelines.deep.attack import attack_options

    digests = (b"theta0", b"theta_i")
    off, on = (
        attack_options(
            resolve_plan(apply_overrides(default_config("mnist-cnn"), sets)), tmp_path, digests
        )
        for sets in ([], ["attack.prefix_curve=true"])
    )
    assert (off.prefix_curve, on.prefix_curve) == (False, True)
    assert (on.study_name, on.original_study_name) == (off.study_name, off.original_study_name)
