"""Eigenpairs for the fast paths (core/eigenpairs.py): inverse-iteration vectors against
``eigh``, the refusals that send a clustered eigenvalue to the dense path, the chooser that
remembers them, and the analytic log κ gradient against autograd and finite differences."""

import math

import numpy as np
import pytest
import torch
from _helpers import features_with_singular_values, matrix_with_spectrum

import condimmune as ci
from condimmune.core.eigenpairs import (
    DENSE_EIGH_MAX_SIZE,
    EigenvectorChooser,
    EigenvectorMethod,
    log_condition_number_features_gradient,
    psd_eigenvector,
    psd_spectrum,
)

EIGENVECTOR_SPECTRA = {
    "spread": [0.5, 1.0, 2.0, 4.0, 9.0, 20.0],
    "low-rank": [0.0, 0.0, 0.0, 1.0, 3.0, 7.0],
    "wide-range": [1e-3, 1.0, 1e2, 1e4],
}


@pytest.mark.parametrize("spectrum", EIGENVECTOR_SPECTRA.values(), ids=EIGENVECTOR_SPECTRA.keys())
def test_inverse_iteration_eigenvectors_match_eigh(spectrum, gen):
    S = matrix_with_spectrum(spectrum, gen)
    _, vectors = torch.linalg.eigh(S)
    fast = psd_spectrum(S, EigenvectorMethod.INVERSE_ITERATION)
    assert fast.vectors is None
    # the top (Cholesky path), an interior and the smallest non-zero (LU path)
    values = sorted(spectrum)
    for index in (len(spectrum) - 1, len(spectrum) - 2, spectrum.count(0.0)):
        x = psd_eigenvector(fast, index)
        assert x is not None
        v = vectors[:, [index]]
        assert float(x.norm()) == pytest.approx(1.0, rel=1e-14)
        # any eigenvector of an eigenvalue with gap g is determined to about p·eps·σ_max/g
        gap = min(
            abs(values[j] - values[index]) for j in (index - 1, index + 1) if 0 <= j < len(values)
        )
        tol = 10 * len(values) * np.finfo(np.float64).eps * values[-1] / gap
        assert float(torch.minimum((x - v).norm(), (x + v).norm())) < tol


@pytest.mark.parametrize(
    "spectrum, index",
    [
        ([1.0, 3.0, 10.0, 10.0], -1),
        ([1.0, 3.0, 10.0, 10.0 * (1 + 1e-9)], -1),
        ([1.0, 1.0, 5.0], 0),
        ([1e-8, 1e-4, 1.0, 1e4], 0),  # a gap of 1e-8 σ_max: the vector is not determined
    ],
    ids=["repeated-top", "near-repeated-top", "repeated-interior", "gap-below-rounding"],
)
def test_inverse_iteration_refuses_clustered_eigenvalues(spectrum, index, gen):
    fast = psd_spectrum(matrix_with_spectrum(spectrum, gen), EigenvectorMethod.INVERSE_ITERATION)
    assert psd_eigenvector(fast, index) is None


def test_auto_keeps_eigh_for_small_matrices(gen):
    small = matrix_with_spectrum([1.0, 2.0, 3.0], gen)
    assert psd_spectrum(small).vectors is not None
    big = torch.eye(DENSE_EIGH_MAX_SIZE + 1, dtype=torch.float64)
    assert psd_spectrum(big).vectors is None
    assert psd_spectrum(big, EigenvectorMethod.DENSE).vectors is not None


def _autograd_log_kappa_gradient(phi: torch.Tensor) -> torch.Tensor:
    """Dense reference: autograd through ``eigvalsh`` of the features' covariance."""
    phi = phi.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(ci.log_condition_number_features(phi), phi)
    return grad


# (rows, singular values): Gram and covariance sides, rank-deficient, and sizes above
# DENSE_EIGH_MAX_SIZE where the vectors come from inverse iteration
LOG_KAPPA_FEATURES = {
    "gram-side": (4, [0.5, 1.0, 2.0, 3.0, 5.0, 8.0]),
    "covariance-side": (12, [0.5, 1.0, 2.0, 3.0, 5.0]),
    "rank-deficient": (12, [0.0, 0.0, 0.7, 1.0, 2.0, 6.0]),
    "wide-range": (10, [1e-4, 0.1, 1.0, 1e2]),
    "large-covariance": (400, np.geomspace(1e-2, 1e2, 300).tolist()),
    "large-gram": (300, np.geomspace(1e-2, 1e2, 300).tolist() + [0.0] * 20),
}


@pytest.mark.parametrize(
    "rows, singular_values", LOG_KAPPA_FEATURES.values(), ids=LOG_KAPPA_FEATURES.keys()
)
@pytest.mark.parametrize(
    "method", list(EigenvectorMethod), ids=[m.value for m in EigenvectorMethod]
)
def test_log_kappa_gradient_matches_autograd(rows, singular_values, method, gen):
    phi = features_with_singular_values(rows, singular_values, gen)
    term = log_condition_number_features_gradient(phi, eigenvectors=method)
    expected = float(ci.log_condition_number_features(phi))
    # eigh and eigvalsh may differ by their backward error p·eps·σ_max, i.e. by p·eps·κ
    # relative to σ_min, whose term dominates the gradient
    tol = max(1e-9, 10 * min(phi.shape) * np.finfo(np.float64).eps * math.exp(expected))
    assert term.log_kappa == pytest.approx(expected, rel=1e-12, abs=tol)
    reference = _autograd_log_kappa_gradient(phi)
    torch.testing.assert_close(
        term.gradient, reference, rtol=tol, atol=tol * float(reference.abs().max())
    )


@pytest.mark.parametrize("rtol", [None, 1e-3, 0.2], ids=["default", "1e-3", "0.2"])
def test_log_kappa_gradient_counts_zeros_as_a_k_column_covariance_does(rtol, gen):
    # Φ 4 × 1000: a Gram eigenvalue of 1e-14 σ_max lies between n·eps and k·eps, so it is a
    # zero of the 1000 × 1000 covariance (default rtol k·eps) although a 4 × 4 matrix's
    # rule would keep it
    phi = features_with_singular_values(4, [1e-7, 0.5, 0.8, 1.0] + [0.0] * 996, gen)
    term = log_condition_number_features_gradient(phi, rtol=rtol)
    phi_ref = phi.detach().clone().requires_grad_(True)
    log_kappa = ci.log_condition_number_features(phi_ref, rtol=rtol)
    (reference,) = torch.autograd.grad(log_kappa, phi_ref)
    assert term.log_kappa == pytest.approx(float(log_kappa.detach()), rel=1e-12)
    if rtol is None:
        assert term.log_kappa == pytest.approx(math.log(1.0 / 0.5**2), rel=1e-9)
    torch.testing.assert_close(term.gradient, reference, rtol=1e-9, atol=1e-12)


def test_log_kappa_gradient_is_the_derivative_of_log_kappa(gen):
    # independent of autograd: central differences of the dense float64 log κ
    # full rank: a zero singular value would jump above the threshold under a perturbation
    phi = features_with_singular_values(7, [0.3, 1.0, 2.0, 4.0, 6.0], gen)
    grad = log_condition_number_features_gradient(phi).gradient
    h = 1e-6
    for i, j in [(0, 0), (3, 2), (6, 4)]:
        e = torch.zeros_like(phi)
        e[i, j] = h
        numeric = (
            float(ci.log_condition_number_features(phi + e))
            - float(ci.log_condition_number_features(phi - e))
        ) / (2 * h)
        assert float(grad[i, j]) == pytest.approx(numeric, rel=1e-5, abs=1e-8)


@pytest.mark.parametrize(
    "smallest, fallback",
    [([1.0, 1.0], True), ([1.0, 1.5], False)],
    ids=["repeated-minimum", "separated-minimum"],
)
def test_log_kappa_gradient_falls_back_only_on_a_clustered_minimum(smallest, fallback, gen):
    # a repeated σ_min: inverse iteration refuses its vector and the dense eigh answers
    phi = features_with_singular_values(300, smallest + np.geomspace(2, 50, 298).tolist(), gen)
    term = log_condition_number_features_gradient(
        phi, eigenvectors=EigenvectorMethod.INVERSE_ITERATION
    )
    assert term.fallback is fallback
    assert term.log_kappa == pytest.approx(math.log(50.0**2 / smallest[0] ** 2), rel=1e-9)
    reference = _autograd_log_kappa_gradient(phi)
    torch.testing.assert_close(
        term.gradient, reference, rtol=1e-9, atol=1e-9 * reference.abs().max()
    )


@pytest.mark.parametrize(
    "fallbacks, expected",
    [
        ([False, False, False], ["auto", "auto", "auto"]),
        ([True, False, False, False, False], ["auto", "dense", "dense", "auto", "auto"]),
        ([False, True, False, False, False], ["auto", "auto", "dense", "dense", "auto"]),
    ],
    ids=["never", "first-call", "second-call"],
)
def test_chooser_goes_dense_for_a_while_after_a_fallback(fallbacks, expected):
    chooser = EigenvectorChooser(EigenvectorMethod.AUTO, dense_after_fallback=2)
    methods = []
    for fallback in fallbacks:
        methods.append(chooser.next_method().value)
        chooser.record(fallback)
    assert methods == expected
