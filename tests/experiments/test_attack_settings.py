"""``condimmune attack`` names the run's attack settings that differ from its experiment's
defaults as they are now (experiments/attack.py: attack_settings_unlike_defaults)."""

from __future__ import annotations

import pytest
import yaml

from condimmune.experiments.attack import attack_settings_note, attack_settings_unlike_defaults
from condimmune.experiments.config import resolve_config


@pytest.mark.parametrize(
    ("made_with", "overrides", "expected"),
    [
        pytest.param([], [], [], id="made-with-todays-defaults"),
        pytest.param(
            ["attack.probe_steps=200", "attack.batch_size=128"],
            [],
            ["probe_steps=200 (default now: 50)", "batch_size=128 (default now: 64)"],
            id="made-before-the-defaults-changed",
        ),
        pytest.param(
            ["attack.probe_steps=200", "attack.batch_size=128"],
            ["attack.probe_steps=50", " attack.batch_size = 64"],
            [],
            id="every-difference-overridden",
        ),
        pytest.param(["attack.seconds=60"], [], ["seconds=60.0 (default now: 300.0)"], id="float"),
    ],
)
def test_the_run_settings_unlike_the_defaults_are_named(tmp_path, made_with, overrides, expected):
    config = resolve_config("mnist-cnn", None, made_with)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json")))
    assert attack_settings_unlike_defaults(tmp_path, overrides) == expected
    note = attack_settings_note(tmp_path, overrides)
    assert (note is None) == (not expected)
    assert note is None or all(f"attack.{e}" in note for e in expected)


def test_a_directory_without_a_loadable_config_names_nothing(tmp_path):
    assert attack_settings_unlike_defaults(tmp_path) == []  # reading the run reports it
    (tmp_path / "config.yaml").write_text("experiment: [")
    assert attack_settings_unlike_defaults(tmp_path) == []
