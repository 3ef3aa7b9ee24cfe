"""`condimmune config`: the resolved config as commented YAML that reads back as --config."""

from __future__ import annotations

import itertools
import typing
from enum import Enum
from pathlib import Path

import pytest
import yaml
from _cli_support import invoke

from condimmune.experiments.config import (
    apply_overrides,
    config_to_dict,
    default_config,
    load_config,
)
from condimmune.experiments.config.describe import describe_config, type_name
from condimmune.experiments.registry import registered_experiments

EXPERIMENTS = [spec.name.value for spec in registered_experiments()]


class _Colour(Enum):
    RED = "red"
    BLUE = "blue"


@pytest.mark.parametrize(
    ("annotation", "name"),
    [
        pytest.param(int, "int", id="int"),
        pytest.param(float | None, "float or null", id="optional-float"),
        pytest.param(typing.Optional[str], "str or null", id="typing-optional"),  # noqa: UP045
        pytest.param(typing.Literal["a", "b"], "one of 'a', 'b'", id="literal"),
        pytest.param(_Colour, "one of 'red', 'blue'", id="enum"),
        pytest.param(typing.Annotated[int, "meta"], "int", id="annotated"),
    ],
)
def test_type_names(annotation: object, name: str) -> None:
    assert type_name(annotation) == name


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_the_text_reads_back_to_the_config_with_a_comment_on_every_key(experiment, tmp_path):
    config = default_config(experiment)
    text = describe_config(config)
    path = tmp_path / "config.yaml"
    path.write_text(text)
    assert config_to_dict(load_config(path)) == config_to_dict(config)
    assert yaml.safe_load(text) == config_to_dict(config)
    lines = text.splitlines()
    for before, line in itertools.pairwise(lines):
        if line.lstrip().startswith("#") or line.endswith(":"):
            continue  # a comment, or a section header
        assert before.lstrip().startswith("#"), f"no comment above {line!r}"


def test_a_changed_value_shows_its_default_and_another_method_its_own_options(tmp_path):
    base = default_config("mnist-pair")
    config = apply_overrides(base, ["train.epochs=5", "train.method=opt-kappa"])
    text = describe_config(config)
    lines = text.splitlines()
    epochs = lines.index("  epochs: 5")
    assert "int ≥ 1, ≤ 10000; default 30: passes over the data" in lines[epochs - 1]
    assert "method:" in lines and all("harmful_step" not in line for line in lines)
    weight = next(i for i, line in enumerate(lines) if line.startswith("  weight: "))
    assert "default" in lines[weight - 1]
    (tmp_path / "c.yaml").write_text(text)
    assert config_to_dict(load_config(tmp_path / "c.yaml")) == config_to_dict(config)


def test_text_that_looks_like_a_number_stays_text(tmp_path):
    config = apply_overrides(default_config("mnist-cnn"), ["data.benign_digits=012"])
    text = describe_config(config)
    assert "benign_digits: '012'" in text
    (tmp_path / "c.yaml").write_text(text)
    assert load_config(tmp_path / "c.yaml").data.benign_digits == "012"


def test_the_command_prints_yaml_that_runs(tmp_path: Path) -> None:
    result = invoke("config", "digits", "--set", "train.epochs=2")
    assert result.exit_code == 0, result.output
    path = tmp_path / "digits.yaml"
    path.write_text(result.stdout)
    assert load_config(path).train.epochs == 2
    run = invoke("run", "--config", path, "--out", tmp_path / "run", "--no-progress")
    assert run.exit_code == 0, run.output
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    saved.pop("versions", None)
    assert saved == yaml.safe_load(result.stdout)
    bad = invoke("config", "digits", "--set", "train.epochs=0")
    assert bad.exit_code == 2 and "train.epochs" in bad.output
