"""Shared helpers: matrices with a prescribed spectrum, built from explicit generators."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from hypothesis import settings

# CI runs the property tests on a fixed, reproducible set of examples; locally they explore.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


def random_orthogonal(d: int, gen: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))


def matrix_with_spectrum(eigenvalues, gen: torch.Generator) -> torch.Tensor:
    lam = torch.as_tensor(eigenvalues, dtype=torch.float64)
    q = random_orthogonal(lam.numel(), gen)
    s = (q * lam) @ q.mT
    return (s + s.mT) / 2


def features_with_singular_values(n: int, singular_values, gen: torch.Generator) -> torch.Tensor:
    """Φ (n × k) with prescribed singular values (k = len, zeros allowed, n ≥ nonzero count)."""
    s = torch.as_tensor(singular_values, dtype=torch.float64)
    k = s.numel()
    r = min(n, k)
    u = random_orthogonal(n, gen)[:, :r]
    v = random_orthogonal(k, gen)[:, :r]
    return (u * s[:r]) @ v.mT


def numpy_log_kappa(S: np.ndarray, rtol: float) -> float:
    """Independent dense float64 reference: log κ over eigenvalues above rtol·σ_max."""
    lam = np.linalg.eigvalsh(S)
    nz = lam[lam > rtol * lam[-1]]
    return float(np.log(nz[-1]) - np.log(nz[0]))


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)
