"""The command line's one error boundary: the exception → message table row by row,
``--debug``, internal errors, and warnings as one line."""

from __future__ import annotations

import errno
import os
import warnings
import zlib

import pytest
import torch
import yaml
from _cli_support import invoke
from lightning.fabric.utilities.exceptions import MisconfigurationException
from safetensors import SafetensorError

import condimmune.experiments.runner as runner
from condimmune.core.errors import ArgumentError, StaleFilesWarning, UserError
from condimmune.core.records import RecordError
from condimmune.experiments.config import ConfigError
from condimmune.experiments.errors import config_keys, user_message


def os_error(number: int) -> OSError:
    return OSError(number, os.strerror(number), "/runs/x")


ROWS = {
    "user-error": (UserError("what", "where.key", "the fix"), ["what: where.key; the fix"]),
    "record-error": (RecordError("m.json: missing field rir"), ["m.json", "rir", "damaged"]),
    "disk-full": (os_error(errno.ENOSPC), ["No space left on device: /runs/x", "free some"]),
    "permission": (os_error(errno.EACCES), ["Permission denied: /runs/x", "permissions"]),
    "read-only": (os_error(errno.EROFS), ["/runs/x", "read-only"]),
    "not-a-directory": (os_error(errno.ENOTDIR), ["/runs/x", "is a file"]),
    "os-error-without-file": (OSError("cannot identify image file 'a.png'"), ["a.png"]),
    "yaml": (yaml.YAMLError("bad"), ["not valid YAML"]),
    "safetensors": (SafetensorError("header too large"), ["safetensors", "header too large"]),
    "zlib": (zlib.error("invalid stored block lengths"), ["corrupt compressed data"]),
    "eof": (EOFError("Compressed file ended"), ["ended too early", "data.root"]),
    "linalg": (torch.linalg.LinAlgError("failed to converge"), ["NaN/inf", "model.weights"]),
    "lightning": (MisconfigurationException("no GPU"), ["no GPU", "train.accelerator"]),
    "memory": (MemoryError(), ["out of memory"]),
    "diverged": (FloatingPointError("training diverged; lower train.lr"), ["train.lr"]),
    "config-error": (ConfigError("invalid value for train.lr:\n  -1"), ["train.lr: -1"]),
    "argument-error": (
        ArgumentError("{per_class} = {n} exceeds the data", n=9),
        ["per_class = 9 exceeds the data"],
    ),
}


@pytest.mark.parametrize("exc, parts", ROWS.values(), ids=ROWS.keys())
def test_every_row_of_the_table_gives_one_line_naming_the_culprit(exc, parts) -> None:
    message = user_message(exc)
    assert message is not None and "\n" not in message
    for part in parts:
        assert part in message


@pytest.mark.parametrize(
    "exc",
    [KeyError("k"), TypeError("t"), RuntimeError("r"), AssertionError(), ValueError("v")],
    ids=["key", "type", "runtime", "assertion", "a-plain-value-error"],
)
def test_other_exceptions_are_internal_errors(exc: BaseException) -> None:
    """A plain ``ValueError`` is a bug: what a user can cause is one of the table's types."""
    assert user_message(exc) is None


def test_config_keys_names_the_arguments_by_their_keys() -> None:
    with pytest.raises(ConfigError) as err, config_keys({"per_class": "data.per_class"}):
        raise ArgumentError("{per_class} + {test_per_class} = {n} too many", n=5)
    assert str(err.value) == "data.per_class + test_per_class = 5 too many"


def test_an_internal_error_is_short_and_points_at_debug(monkeypatch, tmp_path) -> None:
    def bug(*_args: object, **_kwargs: object) -> None:
        raise KeyError("boom")

    monkeypatch.setattr(runner, "run_plan", bug)
    result = invoke("run", "digits", "--out", tmp_path / "out", "--no-progress")
    assert result.exit_code == 3
    assert "Traceback" not in result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith("internal error: KeyError: 'boom'") and "--debug" in line


DEBUG_PLACES = {
    "before-the-command": ["--debug", "run", "digits", "--set", "train.epochs=0"],
    "after-the-command": ["run", "--debug", "digits", "--set", "train.epochs=0"],
    "last": ["run", "digits", "--set", "train.epochs=0", "--debug"],
    "twice": ["--debug", "run", "digits", "--debug", "--set", "train.epochs=0"],
}


@pytest.mark.parametrize("args", DEBUG_PLACES.values(), ids=DEBUG_PLACES.keys())
def test_debug_lets_the_exception_and_its_traceback_through(args: list[str]) -> None:
    """``--debug`` is accepted before and after the command (what the internal error line
    advises works wherever it is put)."""
    result = invoke(*args)
    assert isinstance(result.exception, ValueError) and result.exc_info is not None
    assert "error:" not in result.output and "No such option" not in result.output


def test_debug_after_the_command_shows_an_internal_errors_traceback(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(runner, "run_plan", lambda *a, **k: {}["boom"])
    result = invoke("run", "digits", "--out", tmp_path / "out", "--debug")
    assert isinstance(result.exception, KeyError)


def test_without_debug_after_the_command_the_error_is_one_line() -> None:
    result = invoke("run", "digits", "--set", "train.epochs=0")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr.startswith("error: invalid value for train.epochs")


def test_every_command_lists_debug_in_its_help() -> None:
    for command in ("run", "list", "evaluate", "attack", "attack-matrix", "sweep", "sweep-table"):
        result = invoke(command, "--help")
        assert result.exit_code == 0 and "--debug" in result.output, command


def test_a_user_error_is_one_line_without_rich_markup(tmp_path) -> None:
    result = invoke("run", "digits", "--set", "train.method=[/bold]x", "--out", tmp_path / "o")
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: ") and "[/bold]x" in line


def test_warnings_become_one_line(monkeypatch, tmp_path) -> None:
    def warn(*_args: object, **_kwargs: object) -> None:
        warnings.warn("removed 2 temporary file(s)\nleft behind", StaleFilesWarning, stacklevel=1)
        raise UserError("stop here", "somewhere")

    monkeypatch.setattr(runner, "run_plan", warn)
    result = invoke("run", "digits", "--out", tmp_path / "out", "--no-progress")
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "warning: removed 2 temporary file(s) left behind",
        "error: stop here: somewhere",
    ]
