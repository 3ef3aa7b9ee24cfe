import math
import warnings

import numpy as np
import pytest
import torch
from _helpers import features_with_singular_values, matrix_with_spectrum
from hypothesis import given, settings
from hypothesis import strategies as st

import condimmune as ci
from condimmune.core.step import PreconditionedRegularizerStep

SPECTRA = {
    "full-rank": [0.5, 1.0, 2.0, 4.0, 9.0],
    "low-rank-3-of-6": [0.0, 0.0, 0.0, 1.0, 3.0, 7.0],
    "near-repeated-min": [1.0, 1.0 + 1e-6, 3.0, 8.0],
    "wide-range": [1e-6, 1.0, 1e3],
}


def reference_values(spectrum):
    lam = np.array(spectrum, dtype=np.float64)
    p = lam.size
    nz = lam[lam > 0]
    well = 0.5 * lam.max() ** 2 - (lam**2).sum() / (2 * p)
    ill = 1.0 / ((lam**2).sum() / (2 * nz.size) - 0.5 * nz.min() ** 2)
    return well, ill


@pytest.mark.parametrize("spectrum", SPECTRA.values(), ids=SPECTRA.keys())
def test_values_match_paper_formulas(spectrum, gen):
    S = matrix_with_spectrum(spectrum, gen)
    well, ill = reference_values(spectrum)
    assert float(ci.r_well(S)) == pytest.approx(well, rel=1e-9)
    assert float(ci.r_ill(S, rank_deficiency="allow")) == pytest.approx(ill, rel=1e-7)


FEATURES = {
    "gram-path-n3-k7": (3, [3.0, 1.5, 0.7] + [0.0] * 4),
    "covariance-path-n9-k4": (9, [4.0, 2.0, 1.0, 0.3]),
    "low-rank-n8-k5": (8, [4.0, 2.0, 1.0, 0.0, 0.0]),
}


@pytest.mark.parametrize("n, sv", FEATURES.values(), ids=FEATURES.keys())
def test_feature_versions_equal_matrix_versions(n, sv, gen):
    Phi = features_with_singular_values(n, sv, gen)
    S = Phi.mT @ Phi
    assert float(ci.r_well_features(Phi)) == pytest.approx(float(ci.r_well(S)), rel=1e-9)
    assert float(ci.r_ill_features(Phi, rank_deficiency="allow")) == pytest.approx(
        float(ci.r_ill(S, rank_deficiency="allow")), rel=1e-7
    )


@pytest.mark.parametrize("shape", [(3, 6), (8, 4)], ids=["gram-n3-k6", "cov-n8-k4"])
def test_gradcheck_feature_versions(shape, gen):
    Phi = torch.randn(*shape, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(ci.r_well_features, (Phi,))
    assert torch.autograd.gradcheck(lambda p: ci.r_ill_features(p, rank_deficiency="allow"), (Phi,))


def test_gradcheck_matrix_versions(gen):
    A = torch.randn(7, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: ci.r_well(a.mT @ a), (A,))
    assert torch.autograd.gradcheck(lambda a: ci.r_ill(a.mT @ a), (A,))
    B = torch.randn(3, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda b: ci.r_ill(b.mT @ b, rank_deficiency="allow"), (B,))


@pytest.mark.parametrize("spectrum", SPECTRA.values(), ids=SPECTRA.keys())
def test_analytic_gradients_match_autograd(spectrum, gen):
    S = matrix_with_spectrum(spectrum, gen).requires_grad_(True)
    (auto_well,) = torch.autograd.grad(ci.r_well(S), S)
    torch.testing.assert_close(ci.r_well_gradient(S), auto_well, rtol=1e-7, atol=1e-9)
    (auto_ill,) = torch.autograd.grad(ci.r_ill(S, rank_deficiency="allow"), S)
    scale = float(auto_ill.abs().max())
    torch.testing.assert_close(
        ci.r_ill_gradient(S, rank_deficiency="allow"), auto_ill, rtol=1e-6, atol=1e-9 * scale
    )


def test_rank_deficiency_policies(gen):
    Phi = torch.randn(4, 9, generator=gen, dtype=torch.float64)
    with pytest.warns(ci.RankDeficientWarning, match="rank-deficient"):
        ci.r_ill_features(Phi)
    with pytest.raises(ci.DegenerateSpectrumError, match="numerical rank 4 < size 9"):
        ci.r_ill_features(Phi, rank_deficiency="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ci.r_ill_features(Phi, rank_deficiency="allow")
    with pytest.raises(ValueError, match="unknown rank_deficiency 'ignore'"):
        ci.r_ill_features(Phi, rank_deficiency="ignore")


DEGENERATE = {
    "rank-one": ([0.0, 0.0, 5.0], "rank 1"),
    "equal-nonzero": ([0.0, 2.0, 2.0, 2.0], "all non-zero eigenvalues are equal"),
    "identity": ([1.0, 1.0, 1.0], "all non-zero eigenvalues are equal"),
}


@pytest.mark.parametrize("spectrum, match", DEGENERATE.values(), ids=DEGENERATE.keys())
def test_r_ill_refuses_degenerate_spectra(spectrum, match, gen):
    S = matrix_with_spectrum(spectrum, gen)
    with pytest.raises(ci.DegenerateSpectrumError, match=match):
        ci.r_ill(S, rank_deficiency="allow")


def test_regularizers_refuse_bad_input():
    with pytest.raises(ValueError, match="square"):
        ci.r_well(torch.ones(2, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match="float64"):
        ci.r_ill(torch.eye(3, dtype=torch.int32))
    with pytest.raises(ValueError, match="NaN"):
        ci.r_well_features(torch.tensor([[1.0, float("nan")]], dtype=torch.float64))
    with pytest.raises(ValueError, match="2-D"):
        ci.r_ill_features(torch.ones(3, dtype=torch.float64))
    with pytest.raises(ci.DegenerateSpectrumError, match="no positive eigenvalue"):
        ci.r_well_features(torch.zeros(3, 4, dtype=torch.float64))


# ---------------------------------------------------------------- theorems as properties

spectra = st.lists(
    st.floats(min_value=0.05, max_value=50.0), min_size=3, max_size=6, unique=True
).map(sorted)


def _kappa(lam: np.ndarray) -> float:
    lam = lam[lam > lam.max() * 1e-12]
    return lam.max() / lam.min()


@settings(max_examples=60, deadline=None)
@given(spectrum=spectra, seed=st.integers(0, 2**31 - 1))
def test_thm_4_1_bounds(spectrum, seed):
    """(1) R_ill > 0 (it is the paper's formula, strictly positive off κ = 1) and
    (2) 1/log κ(S) ≤ σ_max² R_ill(S)."""
    S = matrix_with_spectrum(spectrum, torch.Generator().manual_seed(seed))
    r = float(ci.r_ill(S))
    _, expected = reference_values(spectrum)
    assert expected > 0  # D = mean(λ²)/2 − λ_min²/2 > 0 for distinct eigenvalues
    # S is built from the spectrum through a random rotation: relative rounding ≈ κ·eps on
    # D, and κ ≤ 1000 here, so 1e-9 leaves room and still catches any formula error
    assert r == pytest.approx(expected, rel=1e-9)
    # rounding slack of (2) only: the bound itself is exact
    assert 1.0 / math.log(max(spectrum) / min(spectrum)) <= max(spectrum) ** 2 * r * (1 + 1e-9)


@settings(max_examples=60, deadline=None)
@given(spectrum=spectra, seed=st.integers(0, 2**31 - 1), frac=st.floats(0.01, 0.99))
def test_thm_4_1_step_on_r_ill_increases_kappa(spectrum, seed, frac):
    """S' = S − η ∇R_ill(S) with 0 < η < (k/(k−1)) D² raises κ (Thm 4.1 (4))."""
    S = matrix_with_spectrum(spectrum, torch.Generator().manual_seed(seed))
    lam = np.array(spectrum)
    k = lam.size
    denom = (lam**2).sum() / (2 * k) - 0.5 * lam.min() ** 2
    eta = frac * k / (k - 1) * denom**2
    S_new = S - eta * ci.r_ill_gradient(S)
    assert _kappa(np.linalg.eigvalsh(S_new.numpy())) > _kappa(lam)


@settings(max_examples=60, deadline=None)
@given(spectrum=spectra, seed=st.integers(0, 2**31 - 1), frac=st.floats(0.01, 1.0))
def test_r_well_step_does_not_increase_kappa(spectrum, seed, frac):
    """S' = S − η ∇R_well(S) with η ≤ (σ1 − σ2)/(σ1(1 − 1/p) + σ2/p) does not raise κ (App. A)."""
    S = matrix_with_spectrum(spectrum, torch.Generator().manual_seed(seed))
    lam = np.array(spectrum)
    p, s1, s2 = lam.size, lam[-1], lam[-2]
    eta = frac * (s1 - s2) / (s1 * (1 - 1 / p) + s2 / p)
    S_new = S - eta * ci.r_well_gradient(S)
    assert _kappa(np.linalg.eigvalsh(S_new.numpy())) <= _kappa(lam) * (1 + 1e-9)


def _linear_problem(spectrum, seed):
    g = torch.Generator().manual_seed(seed)
    d = len(spectrum)
    X = torch.randn(4 * d, d, generator=g, dtype=torch.float64)
    K = X.mT @ X
    # W with W K Wᵀ = S of the requested spectrum: W = S^{1/2} Q K^{-1/2}
    S = matrix_with_spectrum(spectrum, g)
    lam, vec = torch.linalg.eigh(K)
    k_inv_sqrt = (vec / lam.sqrt()) @ vec.mT
    lam_s, vec_s = torch.linalg.eigh(S)
    s_sqrt = (vec_s * lam_s.clamp_min(0).sqrt()) @ vec_s.mT
    W = s_sqrt @ k_inv_sqrt
    return X, W


def _kappa_features(X, W) -> float:
    return float(ci.condition_number_features(X @ W.mT))


@settings(max_examples=40, deadline=None)
@given(spectrum=spectra, seed=st.integers(0, 2**31 - 1), frac=st.floats(0.01, 1.0))
def test_thm_4_3_preconditioned_r_well_step_does_not_increase_kappa(spectrum, seed, frac):
    """W' = W − η ∇_W R_well · K⁻¹ (the library's step, ridge 0): κ(W'KW'ᵀ) ≤ κ(WKWᵀ)
    for η ≤ (√σ1 − √σ2) / (2(σ1^{3/2}(1 − 1/p) + σ2^{3/2}/p))  (docs/theory.md)."""
    X, W = _linear_problem(spectrum, seed)
    lam = np.array(spectrum)
    p, s1, s2 = lam.size, lam[-1], lam[-2]
    eta = frac * (math.sqrt(s1) - math.sqrt(s2)) / (2 * (s1**1.5 * (1 - 1 / p) + s2**1.5 / p))
    step = PreconditionedRegularizerStep(
        X, X, benign_ridge=0.0, harmful_ridge=0.0, benign_weight=1.0, harmful_weight=0.0
    )
    W_new = W - eta * step.gradient(W).gradient
    assert _kappa_features(X, W_new) <= _kappa_features(X, W) * (1 + 1e-8)


@settings(max_examples=40, deadline=None)
@given(spectrum=spectra, seed=st.integers(0, 2**31 - 1), frac=st.floats(0.01, 0.99))
def test_thm_4_3_preconditioned_r_ill_step_increases_kappa(spectrum, seed, frac):
    """W' = W − η ∇_W R_ill · K⁻¹ raises κ for 0 < η < k D² / (2 σ_k (k − 1))."""
    X, W = _linear_problem(spectrum, seed)
    lam = np.array(spectrum)
    k = lam.size
    denom = (lam**2).sum() / (2 * k) - 0.5 * lam.min() ** 2
    eta = frac * k * denom**2 / (2 * lam.min() * (k - 1))
    step = PreconditionedRegularizerStep(
        X, X, benign_ridge=0.0, harmful_ridge=0.0, benign_weight=0.0, harmful_weight=1.0
    )
    W_new = W - eta * step.gradient(W).gradient
    assert _kappa_features(X, W_new) > _kappa_features(X, W) * (1 + 1e-10)


@settings(max_examples=30, deadline=None)
@given(spectrum=spectra, seed=st.integers(0, 2**31 - 1), frac=st.floats(0.05, 0.99))
def test_monotone_step_rule_moves_kappa_the_right_way(spectrum, seed, frac):
    """StepWeighting.MONOTONE: the ready-to-apply update keeps each regularizer monotone."""
    X, W = _linear_problem(spectrum, seed)
    before = _kappa_features(X, W)
    for weights, better in (((frac, 0.0), "lower"), ((0.0, frac), "higher")):
        step = PreconditionedRegularizerStep(
            X,
            X,
            benign_ridge=0.0,
            harmful_ridge=0.0,
            benign_weight=weights[0],
            harmful_weight=weights[1],
            weighting="monotone",
        )
        after = _kappa_features(X, W - step.gradient(W).gradient)
        if better == "lower":
            assert after <= before * (1 + 1e-8)
        else:
            assert after > before * (1 + 1e-10)


UNIT_STEPS = [
    pytest.param([1.0, 2.0, 4.0, 8.0], 0.5, 5, id="half-step-p4"),
    pytest.param([0.5, 1.0, 1.5, 2.0, 6.0], 0.25, 11, id="quarter-step-p5"),
    pytest.param([1.0, 3.0, 3.5], 0.9, 2, id="near-full-step-p3"),
]


@pytest.mark.parametrize(("spectrum", "c", "seed"), UNIT_STEPS)
def test_unit_step_rule_moves_every_eigenvalue_as_derived(spectrum, c, seed):
    """R_well with weighting="unit": η = c / (2σ₁(1 − 1/p)) and W' = (I − 2ηG) W with
    G = σ₁v₁v₁ᵀ − S/p (App. A), so S' = (I − 2ηG) S (I − 2ηG) has the eigenvalues
    σ₁(1 − c)² and σᵢ(1 + c σᵢ / (σ₁(p − 1)))² (docs/theory.md §4): the top eigenvalue
    moves by exactly the fraction c, the others by less."""
    X, W = _linear_problem(spectrum, seed)
    step = PreconditionedRegularizerStep(
        X,
        X,
        benign_ridge=0.0,
        harmful_ridge=0.0,
        benign_weight=c,
        harmful_weight=0.0,
        weighting="unit",
    )
    result = step.gradient(W)
    lam = np.array(spectrum)
    p, s1 = lam.size, lam[-1]
    assert result.benign_coefficient == pytest.approx(c / (2 * s1 * (1 - 1 / p)), rel=1e-10)
    expected = np.sort(
        np.append(lam[:-1] * (1 + c * lam[:-1] / (s1 * (p - 1))) ** 2, s1 * (1 - c) ** 2)
    )
    phi = (X @ (W - result.gradient).mT).numpy()
    # W is built through eigh/inverse square roots of random matrices (κ(K) ≈ 10): the
    # spectrum of W K Wᵀ is exact to ≈ 1e-13 relative; 1e-9 only absorbs that
    np.testing.assert_allclose(np.linalg.eigvalsh(phi.T @ phi), expected, rtol=1e-9)


def test_unit_and_monotone_rules_agree_for_r_ill(gen):
    X, W = _linear_problem([1.0, 2.0, 4.0, 8.0], 9)
    kwargs = dict(benign_ridge=0.0, harmful_ridge=0.0, benign_weight=0.0, harmful_weight=0.3)
    unit = PreconditionedRegularizerStep(X, X, weighting="unit", **kwargs).gradient(W)
    mono = PreconditionedRegularizerStep(X, X, weighting="monotone", **kwargs).gradient(W)
    # spectrum 1, 2, 4, 8 (k = 4): D = ‖S‖_F²/(2k) − σ_k²/2 = 85/8 − 1/2 = 81/8; unit step
    # D²/(2 max(σ_k(1 − 1/k), σ₁/k)) = D²/4 ≤ monotone step k D²/(2σ_k(k − 1)) = 2D²/3
    d2 = (81 / 8) ** 2
    assert unit.harmful_coefficient == pytest.approx(0.3 * d2 / 4, rel=1e-10)
    assert mono.harmful_coefficient == pytest.approx(0.3 * d2 / 4, rel=1e-10)
    assert unit.r_ill == pytest.approx(8 / 81, rel=1e-10)
    with pytest.raises(ValueError, match="unknown weighting"):
        PreconditionedRegularizerStep(X, X, weighting="adaptive", **kwargs)
    kwargs["harmful_weight"] = 1.0  # a full unit step zeroes an eigenvalue
    with pytest.raises(ValueError, match=r"in \[0, 1\)"):
        PreconditionedRegularizerStep(X, X, weighting="unit", **kwargs)
