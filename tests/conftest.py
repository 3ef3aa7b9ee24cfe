"""Shared fixtures, the hypothesis profile, and the ``needs`` marker (tests/_data.py)."""

from __future__ import annotations

from collections.abc import Iterator

import _data
import pytest
import torch
from hypothesis import settings

# CI runs the property tests on a fixed, reproducible set of examples; locally they explore.
settings.register_profile("ci", derandomize=True, print_blob=True)
if _data.in_ci():
    settings.load_profile("ci")


@pytest.fixture(scope="session", autouse=True)
def _hidden_data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The library cannot find the data named in CONDIMMUNE_TEST_HIDE_DATA (tests/_data.py)."""
    with pytest.MonkeyPatch.context() as mp:
        _data.hide(mp, tmp_path_factory.mktemp("hidden-data"))
        yield


@pytest.fixture(autouse=True)
def _needed_data(request: pytest.FixtureRequest, _hidden_data: None) -> None:
    """``@pytest.mark.needs(NAME, ...)``: skip when the data is missing, fail under CI."""
    for mark in request.node.iter_markers("needs"):
        _data.require(*mark.args)


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)
