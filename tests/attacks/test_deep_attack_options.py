"""The deep suite's settings name their own arguments (issue 25): a Python caller of
:class:`DeepAttackOptions` reads the field at fault, the command line the config key that
sets it (the deep pipeline's ``config_keys``)."""

from __future__ import annotations

import pytest

from condimmune.attacks.deep_records import DeepAttackOptions
from condimmune.core.errors import ArgumentError
from condimmune.experiments.config import ConfigError
from condimmune.experiments.errors import user_message
from condimmune.experiments.pipelines.deep import DEEP_PIPELINE

CASES: dict[str, tuple[dict[str, object], str, str]] = {
    "trials-zero": ({"trials": 0}, "trials", "must be a positive int, got 0"),
    "finetune-trials-bool": ({"finetune_trials": True}, "finetune_trials", "got True"),
    "probe-steps-negative": ({"probe_steps": -3}, "probe_steps", "got -3"),
    "finetune-steps-float": ({"finetune_steps": 2.0}, "finetune_steps", "got 2.0"),
    "benign-trials-zero": ({"benign_trials": 0}, "benign_trials", "got 0"),
    "labels-per-class-zero": ({"labels_per_class": 0}, "labels_per_class", "got 0"),
    "weight-free-steps-zero": ({"weight_free_steps": 0}, "weight_free_steps", "got 0"),
    "target-fraction-above-one": (
        {"target_fraction": 1.5},
        "target_fraction",
        "must be in (0, 1], got 1.5",
    ),
    "target-fraction-zero": ({"target_fraction": 0.0}, "target_fraction", "got 0.0"),
    "utility-cap-negative": ({"utility_cap": -1.0}, "utility_cap", "must be ≥ 0 points"),
    "utility-cap-nan": ({"utility_cap": float("nan")}, "utility_cap", "got nan"),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_a_python_caller_reads_the_argument_it_passed(case: tuple[dict, str, str]) -> None:
    kwargs, field, rest = case
    with pytest.raises(ArgumentError) as err:
        DeepAttackOptions(**kwargs)
    message = str(err.value)
    assert message.startswith(f"{field} must be ") and rest in message, message
    assert "attack." not in message
    assert err.value.arguments == (field,)


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_the_command_line_reads_the_config_key_that_sets_it(case: tuple[dict, str, str]) -> None:
    kwargs, field, rest = case
    with pytest.raises(ConfigError) as err, DEEP_PIPELINE.named_by_config():
        DeepAttackOptions(**kwargs)
    message = user_message(err.value)
    assert message is not None and "\n" not in message
    assert message.startswith(f"attack.{field} must be ") and rest in message, message


def test_defaults_and_absent_caps_are_accepted() -> None:
    options = DeepAttackOptions(
        benign_trials=None, labels_per_class=None, weight_free_steps=None, utility_cap=0.0
    )
    assert options.trials == 20 and options.target_fraction == 0.95
