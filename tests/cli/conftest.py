"""Fixtures of the command-line tests: one finished tiny linear run, reused read-only."""

from __future__ import annotations

from pathlib import Path

import pytest
from _cli_support import TINY_LINEAR, invoke, sets


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished ``digits`` run (pair 1-7, seed 0); copy it before changing anything."""
    out = tmp_path_factory.mktemp("tiny") / "run"
    result = invoke("run", "digits", "--out", out, "--no-progress", *sets(TINY_LINEAR))
    assert result.exit_code == 0, result.output
    return out
