import itertools
import math

import pytest
import torch
from _helpers import random_orthogonal
from hypothesis import given, settings
from hypothesis import strategies as st

import condimmune as ci


def _data(seed: int, d: int = 5, n: int = 30, spread: float = 3.0):
    g = torch.Generator().manual_seed(seed)
    scales_p = torch.exp(spread * torch.rand(d, generator=g, dtype=torch.float64))
    scales_h = torch.exp(spread * torch.rand(d, generator=g, dtype=torch.float64))
    xp = torch.randn(n, d, generator=g, dtype=torch.float64) * scales_p @ random_orthogonal(d, g)
    xh = torch.randn(n, d, generator=g, dtype=torch.float64) * scales_h @ random_orthogonal(d, g)
    return xp, xh, g


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_no_invertible_extractor_exceeds_the_bound(seed):
    xp, xh, g = _data(seed)
    bound = ci.immunization_bound_features(xp, xh)
    assert not bound.unbounded and bound.value >= 1 - 1e-9
    for _ in range(20):
        W = torch.randn(5, 5, generator=g, dtype=torch.float64)
        rir = ci.immunization_condition_numbers(xp, xh, W).rir
        assert rir <= bound.value * (1 + 1e-8)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_closed_form_attains_the_bound_and_keeps_benign_kappa(seed):
    xp, xh, _ = _data(seed)
    bound = ci.immunization_bound_features(xp, xh)
    W = ci.closed_form_immunizer(xp, xh)
    kappas = ci.immunization_condition_numbers(xp, xh, W)
    assert kappas.rir == pytest.approx(bound.value, rel=1e-6)
    assert kappas.benign_ratio <= 1 + 1e-6  # Def. 3.1 (b)


def test_covariance_and_feature_versions_agree(gen):
    xp, xh, _ = _data(7)
    a = ci.immunization_bound(xp.mT @ xp, xh.mT @ xh)
    b = ci.immunization_bound_features(xp, xh)
    assert a.value == pytest.approx(b.value, rel=1e-7)
    torch.testing.assert_close(
        a.generalized_eigenvalues, b.generalized_eigenvalues, rtol=1e-7, atol=0
    )


@pytest.mark.parametrize("alpha", [1.0, 1.5, 3.0], ids=lambda a: f"alpha-{a}")
def test_aligned_covariances_with_harmful_at_least_as_spread_cannot_be_immunized(alpha, gen):
    """K_P, K_H sharing eigenvectors with h_i = p_i^α, α ≥ 1: bound = 1 (Prop. 3.2's case)."""
    q = random_orthogonal(4, gen)
    p = torch.tensor([1.0, 2.0, 5.0, 20.0], dtype=torch.float64)
    xp, xh = torch.diag(p.sqrt()) @ q.mT, torch.diag(p.pow(alpha).sqrt()) @ q.mT
    bound = ci.immunization_bound_features(xp, xh)
    assert bound.value == pytest.approx(1.0, rel=1e-9)
    assert "no invertible linear extractor" in bound.reason
    for _ in range(50):
        W = torch.randn(4, 4, generator=gen, dtype=torch.float64)
        assert ci.immunization_condition_numbers(xp, xh, W).rir <= 1 + 1e-8


def test_aligned_covariances_with_harmful_less_spread_can_be_immunized(gen):
    """Alignment alone does not forbid immunization: h_i = p_i^{1/2} gives bound κ(K_P)^{1}."""
    q = random_orthogonal(4, gen)
    p = torch.tensor([1.0, 2.0, 5.0, 20.0], dtype=torch.float64)
    xp, xh = torch.diag(p.sqrt()) @ q.mT, torch.diag(p.pow(0.25)) @ q.mT
    bound = ci.immunization_bound_features(xp, xh)
    assert bound.value == pytest.approx(20.0, rel=1e-9)  # κ(K_P)^{2 − 2α}, α = 1/2
    W = ci.closed_form_immunizer(xp, xh)
    assert ci.immunization_condition_numbers(xp, xh, W).rir == pytest.approx(20.0, rel=1e-8)


def test_range_mismatch_is_unbounded_and_rank_one_construction_grows(gen):
    d = 6
    xp = torch.randn(40, d, generator=gen, dtype=torch.float64)
    xp[:, -1] = 0.0  # benign data never excites e_6
    xh = torch.randn(40, d, generator=gen, dtype=torch.float64)
    bound = ci.immunization_bound_features(xp, xh)
    assert bound.unbounded and bound.value is None and bound.offending_dim == 1
    v = torch.zeros(d, dtype=torch.float64)
    v[-1] = 1.0
    rirs = []
    for c in [1.0, 10.0, 100.0, 1000.0]:
        W = torch.eye(d, dtype=torch.float64) + (c - 1) * torch.outer(v, v)
        kappas = ci.immunization_condition_numbers(xp, xh, W)
        assert kappas.benign_ratio == pytest.approx(1.0)  # H_P exactly unchanged
        rirs.append(kappas.rir)
    assert all(b > 10 * a for a, b in itertools.pairwise(rirs[1:]))
    assert rirs[-1] > 1e4


def test_bound_errors(gen):
    xp, xh, _ = _data(3)
    with pytest.raises(ValueError, match="same number of columns"):
        ci.immunization_bound_features(xp, xh[:, :4])
    with pytest.raises(ValueError, match="same number of columns"):
        ci.immunization_bound(xp.mT @ xp, torch.eye(4, dtype=torch.float64))
    with pytest.raises(ci.DegenerateSpectrumError, match="zero"):
        ci.immunization_bound_features(xp, torch.zeros_like(xh))
    with pytest.raises(TypeError, match="dtype"):
        ci.immunization_bound_features(xp, xh.float())
    assert math.isfinite(ci.immunization_bound_features(xp, xh).kappa_lambda)
