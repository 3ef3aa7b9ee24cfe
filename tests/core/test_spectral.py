import math

import numpy as np
import pytest
import torch
from _helpers import features_with_singular_values, matrix_with_spectrum, numpy_log_kappa

import condimmune as ci
from condimmune.core.spectral import nonzero_mask

SPECTRA = {
    "full-rank-spread": [1e-3, 0.1, 1.0, 10.0, 100.0, 1e3],
    "low-rank-3-of-8": [0, 0, 0, 0, 0, 1.0, 2.0, 5.0],
    "near-repeated-min": [1.0, 1.0 + 1e-9, 2.0, 5.0, 7.0],
    "near-repeated-max": [1.0, 3.0, 10.0, 10.0 + 1e-9],
    "wide-range": [1e-10, 1.0, 1e4],
    "identity": [1.0] * 5,
}


@pytest.mark.parametrize("spectrum", SPECTRA.values(), ids=SPECTRA.keys())
def test_log_condition_number_matches_dense_reference(spectrum, gen):
    S = matrix_with_spectrum(spectrum, gen)
    rtol = S.shape[0] * np.finfo(np.float64).eps
    expected = numpy_log_kappa(S.numpy(), rtol)
    nonzero = [v for v in spectrum if v > 0]
    kappa = max(nonzero) / min(nonzero)
    # eigenvalue error ≈ p·eps·σ_max, so log σ_min is only known to ≈ p·eps·κ
    tol = max(1e-7, 10 * S.shape[0] * np.finfo(np.float64).eps * kappa)
    assert float(ci.log_condition_number(S)) == pytest.approx(expected, abs=tol)
    assert expected == pytest.approx(math.log(kappa), abs=tol)
    assert float(ci.condition_number(S)) == pytest.approx(math.exp(expected), rel=tol)
    assert ci.numerical_rank(S) == len(nonzero)


@pytest.mark.parametrize("scale", [1e-12, 1e-3, 1e3, 1e12], ids=lambda s: f"scale-{s:g}")
def test_condition_number_is_scale_invariant(scale, gen):
    S = matrix_with_spectrum(SPECTRA["low-rank-3-of-8"], gen)
    assert float(ci.log_condition_number(S * scale)) == pytest.approx(
        float(ci.log_condition_number(S)), rel=1e-9
    )


def test_paper_compatible_rule_is_not_scale_invariant_on_rank_deficient_input(gen):
    S = matrix_with_spectrum(SPECTRA["low-rank-3-of-8"], gen)
    honest = float(ci.condition_number(S))
    compat = float(ci.paper_compatible_condition_number(S))
    assert honest == pytest.approx(5.0, rel=1e-9)
    # σ_min is the ridge (1e-6 plus rounding): κ ≈ (5 + 1e-6)/1e-6
    assert compat == pytest.approx((5.0 + 1e-6) / 1e-6, rel=1e-3)
    assert float(ci.paper_compatible_condition_number(S * 10)) == pytest.approx(
        10 * compat, rel=1e-3
    )


FEATURE_CASES = {
    "wide-n4-k9": (4, [3.0, 2.0, 1.0, 0.5] + [0.0] * 5),
    "tall-n12-k5": (12, [5.0, 4.0, 2.0, 1.0, 0.1]),
    "wide-low-rank-n6-k10": (6, [4.0, 3.0, 1.0] + [0.0] * 7),
    "near-repeated-n5-k8": (5, [2.0, 2.0 + 1e-8, 1.0, 0.5, 0.5 + 1e-8] + [0.0] * 3),
}


@pytest.mark.parametrize("n, sv", FEATURE_CASES.values(), ids=FEATURE_CASES.keys())
def test_feature_version_equals_covariance_version(n, sv, gen):
    Phi = features_with_singular_values(n, sv, gen)
    S = Phi.mT @ Phi
    assert float(ci.log_condition_number_features(Phi)) == pytest.approx(
        float(ci.log_condition_number(S)), rel=1e-8, abs=1e-8
    )
    nonzero = sorted(v * v for v in sv if v > 0)
    torch.testing.assert_close(
        ci.covariance_eigenvalues(Phi)[-len(nonzero) :],
        torch.tensor(nonzero, dtype=torch.float64),
        rtol=1e-9,
        atol=1e-12,
    )


def test_log_condition_number_is_differentiable(gen):
    A = torch.randn(6, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: ci.log_condition_number(a.mT @ a), (A,))
    assert torch.autograd.gradcheck(lambda a: ci.log_condition_number_features(a), (A,))


BAD_MATRICES = {
    "not-a-tensor": ([[1.0, 0.0], [0.0, 1.0]], TypeError, "torch.Tensor"),
    "integer-dtype": (torch.eye(3, dtype=torch.int64), TypeError, "float64"),
    "non-square": (torch.ones(2, 3, dtype=torch.float64), ValueError, "square"),
    "non-symmetric": (
        torch.tensor([[1.0, 2.0], [0.0, 1.0]], dtype=torch.float64),
        ValueError,
        "not symmetric",
    ),
    "nan": (
        torch.tensor([[1.0, float("nan")], [float("nan"), 1.0]], dtype=torch.float64),
        ValueError,
        "NaN",
    ),
    "inf": (
        torch.tensor([[float("inf"), 0.0], [0.0, 1.0]], dtype=torch.float64),
        ValueError,
        "NaN or Inf",
    ),
    "empty": (torch.zeros(0, 0, dtype=torch.float64), ValueError, "empty"),
    "one-dimensional": (torch.ones(3, dtype=torch.float64), ValueError, "2-D"),
    "indefinite": (
        torch.diag(torch.tensor([1.0, -1.0], dtype=torch.float64)),
        ValueError,
        "positive semi-definite",
    ),
    "zero": (
        torch.zeros(3, 3, dtype=torch.float64),
        ci.DegenerateSpectrumError,
        "no positive eigenvalue",
    ),
}


@pytest.mark.parametrize("S, exc, match", BAD_MATRICES.values(), ids=BAD_MATRICES.keys())
def test_bad_matrices_are_refused(S, exc, match):
    with pytest.raises(exc, match=match):
        ci.log_condition_number(S)


@pytest.mark.parametrize("rtol", [-0.1, 1.0, float("nan")], ids=["negative", "one", "nan"])
def test_bad_rtol_is_refused(rtol, gen):
    with pytest.raises(ValueError, match="rtol"):
        ci.log_condition_number(matrix_with_spectrum([1.0, 2.0], gen), rtol=rtol)


def test_rtol_of_wrong_type_is_refused(gen):
    with pytest.raises(TypeError, match="rtol"):
        ci.log_condition_number(matrix_with_spectrum([1.0, 2.0], gen), rtol="small")


# ----------------------------------------------------------------------------- nonzero_mask


def test_nonzero_mask_default_rtol_is_size_times_eps():
    eps = torch.finfo(torch.float64).eps
    lam = torch.tensor([0.0, 3 * eps, 5 * eps, 1.0], dtype=torch.float64)
    # threshold 4·eps·σ_max: 3·eps is zero, 5·eps is not
    assert nonzero_mask(lam).tolist() == [False, False, True, True]
    # the size of the matrix the values come from, not their number, sets the default
    assert nonzero_mask(lam, size=8).tolist() == [False, False, False, True]
    assert nonzero_mask(lam, rtol=0.0).tolist() == [False, True, True, True]


def test_nonzero_mask_ignores_order_and_scale():
    lam = torch.tensor([1.0, 1e-20, 1e-3, 0.0, 10.0], dtype=torch.float64)
    expected = [True, False, True, False, True]
    assert nonzero_mask(lam).tolist() == expected
    assert nonzero_mask(lam * 1e-30).tolist() == expected
    assert nonzero_mask(lam * 1e30).tolist() == expected


def test_nonzero_mask_against_another_sigma_max():
    lam = torch.tensor([1e-8, 1e-4], dtype=torch.float64)
    top = torch.tensor(1.0, dtype=torch.float64)
    assert nonzero_mask(lam, rtol=1e-6, sigma_max=top).tolist() == [False, True]
    assert nonzero_mask(lam, rtol=1e-6).tolist() == [True, True]


@pytest.mark.parametrize("spectrum", SPECTRA.values(), ids=SPECTRA.keys())
def test_nonzero_mask_agrees_with_numpy_matrix_rank(spectrum, gen):
    """numpy's rule (singular values above max(M, N)·eps·σ_max) is ours on a PSD matrix."""
    S = matrix_with_spectrum(spectrum, gen)
    lam = torch.linalg.eigvalsh(S)
    assert int(nonzero_mask(lam).sum()) == np.linalg.matrix_rank(S.numpy())
    assert ci.numerical_rank(S) == np.linalg.matrix_rank(S.numpy())


def test_nonzero_mask_carries_no_gradient_and_checks_rtol():
    lam = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64, requires_grad=True)
    mask = nonzero_mask(lam)
    assert mask.dtype == torch.bool and not mask.requires_grad
    with pytest.raises(ValueError, match="rtol"):
        nonzero_mask(lam, rtol=1.5)
