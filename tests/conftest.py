"""Shared fixtures and the hypothesis profile."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import settings

# CI runs the property tests on a fixed, reproducible set of examples; locally they explore.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)
