"""The tracked extremes (core/tracking.py, core/tracked_terms.py) against dense float64
eigendecompositions: the rank from the inertia of ``G − τI``, σ_max, λ₂, σ_min and their
vectors, the refusals that send a matrix to the dense path, and the regularizer terms built
from them."""

import math
import warnings

import numpy as np
import pytest
import torch
from _helpers import features_with_singular_values, matrix_with_spectrum, random_orthogonal
from hypothesis import given, settings
from hypothesis import strategies as st

import condimmune as ci
from condimmune.core.eigenpairs import EigenvectorMethod
from condimmune.core.factor import symmetric_indefinite_solver
from condimmune.core.lanczos import lanczos
from condimmune.core.regularizers import r_ill_value_and_gradient, r_well_value_and_gradient
from condimmune.core.spectral import log_condition_number_features
from condimmune.core.tracked_terms import (
    log_condition_number_tracked,
    r_ill_tracked,
    r_well_tracked,
)
from condimmune.core.tracking import (
    TRACKING_MIN_SIZE,
    ExtremeEigenTracker,
    takes_fast_path,
)

EPS = float(np.finfo(np.float64).eps)


def _track(S, rtol, **kwargs):
    return ExtremeEigenTracker().track(
        S, rtol=rtol, top_vector=kwargs.get("top", True), low_vector=kwargs.get("low", True)
    )


def _same_direction(x, v, tol):
    return float(torch.minimum((x - v).norm(), (x + v).norm())) < tol


@settings(max_examples=40, deadline=None)
@given(
    signs=st.lists(st.sampled_from([-1.0, 1.0]), min_size=2, max_size=24),
    magnitudes=st.lists(st.floats(0.1, 10.0), min_size=24, max_size=24),
    seed=st.integers(0, 2**31 - 1),
)
def test_inertia_counts_the_negative_eigenvalues(signs, magnitudes, seed):
    spectrum = [s * m for s, m in zip(signs, magnitudes, strict=False)]
    A = matrix_with_spectrum(spectrum, torch.Generator().manual_seed(seed))
    for matrix in (A, A.numpy()):  # torch's sytrf and scipy's
        factored = symmetric_indefinite_solver(matrix)
        assert factored is not None
        assert factored[1] == sum(v < 0 for v in spectrum)


def test_inertia_reads_two_by_two_pivots():
    # a zero diagonal forces 2 × 2 blocks: [[0, 1], [1, 0]] has eigenvalues ±1
    A = torch.tensor([[0.0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 2], [0, 0, 2, 0]]).double()
    _, pivots, _ = torch.linalg.ldl_factor_ex(A)
    assert (pivots < 0).any()
    B = -torch.eye(4, dtype=torch.float64) + 3 * A  # eigenvalues -1 ± 3, -1 ± 6
    for matrix in (A, A.numpy(), B, B.numpy()):
        factored = symmetric_indefinite_solver(matrix)
        assert factored is not None and factored[1] == 2


# eigenvalues in units of τ = rtol · σ_max: below at most τ/2 (zeros allowed), above at
# least 2τ, σ_max = 1 — every one away from the threshold
@settings(max_examples=60, deadline=None)
@given(
    below=st.lists(st.one_of(st.just(0.0), st.floats(1e-3, 0.5)), max_size=8),
    above=st.lists(st.floats(0.0, 1.0), min_size=2, max_size=30),
    rtol=st.sampled_from([1e-9, 1e-6, 1e-3]),
    seed=st.integers(0, 2**31 - 1),
)
def test_rank_from_inertia_matches_dense_eigenvalues_away_from_the_threshold(
    below, above, rtol, seed
):
    tau = rtol
    # log-uniform between 2τ and 1
    high = [math.exp(math.log(2 * tau) * (1 - a)) for a in above]
    spectrum = sorted([b * tau for b in below] + high + [1.0])
    S = matrix_with_spectrum(spectrum, torch.Generator().manual_seed(seed))
    result = _track(S, rtol, top=False)
    lam = torch.linalg.eigvalsh(S)
    dense_rank = int((lam > rtol * lam[-1]).sum())
    assert result is not None
    assert result.rank == dense_rank == len(high) + 1
    assert result.top == pytest.approx(float(lam[-1]), rel=1e-13)
    smallest = float(lam[lam > rtol * lam[-1]][0])
    # a Rayleigh quotient: error of a few eps · σ_max
    assert result.low == pytest.approx(smallest, abs=50 * len(spectrum) * EPS)
    assert result.top_vector is None and result.low_vector is not None


SPECTRA = {
    "spread": [0.5, 1.0, 2.0, 4.0, 9.0, 20.0],
    # exact zeros: with the default rtol = p · eps they lie below τ by more than the margin
    # 4√p · eps · σ_max only from p > 16 on
    "low-rank": [0.0] * 16 + [0.01 * 1.3**i for i in range(24)],
    "wide-range": [1e-3, 1.0, 1e2, 1e4, 2e4],
}


def low_relative_error(spectrum: list[float]) -> float:
    """Relative error bound of the smallest non-zero eigenvalue, σ_min, from any backward-
    stable eigensolver (LAPACK's ``eigh`` as much as ours): |δλ| ≤ c · p · eps · σ_max
    (Weyl), so relative to σ_min it grows with κ. The reference itself carries that error,
    and it depends on the CPU's kernels (the wide-range case differed by 1.1e-9 on CI's
    machine), so no bound tighter than this is justified; 1e-12 is the floor of the
    well-conditioned cases."""
    nonzero = [v for v in spectrum if v > 0]
    return max(1e-12, 10 * len(spectrum) * EPS * max(nonzero) / min(nonzero))


@pytest.mark.parametrize("spectrum", SPECTRA.values(), ids=SPECTRA.keys())
def test_tracked_extremes_and_vectors_match_eigh(spectrum, gen):
    S = matrix_with_spectrum(spectrum, gen)
    lam, vecs = torch.linalg.eigh(S)
    rtol = len(spectrum) * EPS
    result = _track(S, rtol)
    assert result is not None
    first = int((lam <= rtol * lam[-1]).sum())
    assert (result.rank, result.size) == (len(spectrum) - first, len(spectrum))
    assert result.top == pytest.approx(float(lam[-1]), rel=1e-14)
    assert result.second == pytest.approx(float(lam[-2]), rel=1e-12)
    assert result.low == pytest.approx(float(lam[first]), rel=low_relative_error(spectrum))
    gap_low = float(lam[first + 1] - lam[first])
    tol = 10 * len(spectrum) * EPS * float(lam[-1])
    assert _same_direction(result.top_vector, vecs[:, [-1]], tol / float(lam[-1] - lam[-2]))
    assert _same_direction(result.low_vector, vecs[:, [first]], tol / gap_low)


def test_the_gram_of_rank_deficient_features(gen):
    """ΦΦᵀ of a Φ with fewer non-zero singular values than rows: exact zeros below τ (the
    default rtol of a matrix this small would leave them within the margin: refused)."""
    phi = features_with_singular_values(12, [5.0, 3.0, 2.0, 1.0, 0.1, 0.0, 0.0, 0.0], gen)
    G = phi @ phi.mT  # 12 × 12 of rank 5
    result = _track(G, 1e-8)
    lam = torch.linalg.eigvalsh(G)
    assert result is not None and result.rank == 5
    assert result.low == pytest.approx(0.01, rel=1e-10)
    assert result.low == pytest.approx(float(lam[-5]), rel=1e-10)


@pytest.mark.parametrize("offset", [1e-3, -1e-3], ids=["just-above", "just-below"])
def test_an_eigenvalue_at_the_threshold_is_refused(offset, gen):
    rtol = 1e-6
    spectrum = [0.0, rtol * (1 + offset * 1e-9), 1e-3, 0.1, 0.5, 1.0]
    S = matrix_with_spectrum(spectrum, gen)
    assert _track(S, rtol) is None
    # the term falls back to the dense path and says so
    policy = ci.RankDeficiency.ALLOW
    tracked = r_ill_tracked(S, 6, rtol, policy, ExtremeEigenTracker())
    dense = r_ill_value_and_gradient(S, 6, rtol, policy, EigenvectorMethod.DENSE)
    assert tracked.fallback and not dense.fallback
    assert torch.equal(tracked.gradient, dense.gradient)
    assert (tracked.value, tracked.log_kappa) == (dense.value, dense.log_kappa)


def test_a_clustered_top_refuses_its_vector_only(gen):
    S = matrix_with_spectrum([0.1, 0.5, 1.0, 3.0, 3.0 * (1 + 1e-9)], gen)
    assert _track(S, 1e-12) is None
    assert _track(S, 1e-12, top=False) is not None
    tracked = r_well_tracked(S, 5, ExtremeEigenTracker())
    dense = r_well_value_and_gradient(S, 5, EigenvectorMethod.DENSE)
    assert tracked.fallback and torch.equal(tracked.gradient, dense.gradient)


@pytest.mark.parametrize(
    "matrix",
    [
        torch.eye(2, dtype=torch.float64),
        torch.full((4, 4), float("nan"), dtype=torch.float64),
        torch.zeros(4, 4, dtype=torch.float64),
    ],
    ids=["too-small", "nan", "zero"],
)
def test_degenerate_matrices_are_refused(matrix):
    assert _track(matrix, 1e-6) is None


def test_a_warm_start_gives_the_numbers_of_a_cold_one(gen):
    S = matrix_with_spectrum([1e-4, 1e-2, 0.3, 0.7, 2.0, 5.0, 9.0], gen)
    tracker = ExtremeEigenTracker()
    assert tracker.track(S, rtol=1e-8, top_vector=True, low_vector=True) is not None
    q = random_orthogonal(7, gen)
    moved = S + 1e-2 * (q * torch.arange(7.0, dtype=torch.float64)) @ q.mT
    warm = tracker.track(moved, rtol=1e-8, top_vector=True, low_vector=True)
    cold = _track(moved, 1e-8)
    assert warm is not None and cold is not None
    for field in ("top", "second", "low"):
        assert getattr(warm, field) == pytest.approx(getattr(cold, field), rel=1e-10)
    assert _same_direction(warm.top_vector, cold.top_vector, 1e-10)
    assert _same_direction(warm.low_vector, cold.low_vector, 1e-8)


def test_lanczos_stops_at_convergence_or_gives_up():
    diagonal = torch.diag(torch.arange(1.0, 51.0, dtype=torch.float64))
    start = torch.ones(50, 1, dtype=torch.float64)
    ritz = lanczos(lambda x: diagonal @ x, start, lambda r: r.residuals[-1] < 1e-10)
    assert ritz is not None and ritz.values[-1] == pytest.approx(50.0, rel=1e-12)
    assert abs(float(ritz.vector(-1)[-1, 0])) == pytest.approx(1.0, rel=1e-10)
    assert lanczos(lambda x: diagonal @ x, start, lambda r: False, max_steps=8) is None
    # the full dimension ends the run with exact Ritz values
    ritz = lanczos(lambda x: diagonal @ x, start, lambda r: False, max_steps=100)
    assert ritz is not None and ritz.values == pytest.approx(list(range(1, 51)), rel=1e-10)


@pytest.mark.parametrize("spectrum", SPECTRA.values(), ids=SPECTRA.keys())
def test_tracked_terms_equal_the_dense_terms(spectrum, gen):
    S = matrix_with_spectrum(spectrum, gen)
    p = len(spectrum)
    policy = ci.RankDeficiency.ALLOW
    pairs = [
        (
            r_well_tracked(S, p, ExtremeEigenTracker()),
            r_well_value_and_gradient(S, p, EigenvectorMethod.DENSE),
        ),
        (
            r_ill_tracked(S, p, None, policy, ExtremeEigenTracker()),
            r_ill_value_and_gradient(S, p, None, policy, EigenvectorMethod.DENSE),
        ),
    ]
    for tracked, dense in pairs:
        assert not tracked.fallback
        scale = float(dense.gradient.abs().max())
        torch.testing.assert_close(tracked.gradient, dense.gradient, rtol=1e-9, atol=1e-11 * scale)
        # each field depends on σ_min at most through σ_min^{±2}: twice its relative error,
        # from each side
        rel = max(1e-9, 4 * low_relative_error(spectrum))
        for field in ("value", "log_kappa", "monotone_step", "unit_step"):
            assert getattr(tracked, field) == pytest.approx(getattr(dense, field), rel=rel)


def test_tracked_r_ill_keeps_the_rank_checks(gen):
    S = matrix_with_spectrum([0.0, 0.0, 1.0, 2.0, 5.0], gen)
    with pytest.raises(ci.DegenerateSpectrumError, match="rank-deficient"):
        r_ill_tracked(S, 5, None, ci.RankDeficiency.RAISE, ExtremeEigenTracker())
    with pytest.warns(ci.RankDeficientWarning):
        r_ill_tracked(S, 5, None, ci.RankDeficiency.WARN, ExtremeEigenTracker())
    single = matrix_with_spectrum([0.0, 0.0, 0.0, 1e-20, 5.0], gen)
    with pytest.raises(ci.DegenerateSpectrumError, match="at least two"):
        r_ill_tracked(single, 5, None, ci.RankDeficiency.ALLOW, ExtremeEigenTracker())


@pytest.mark.parametrize("rows", [6, 40], ids=["gram", "covariance"])
def test_tracked_log_kappa_equals_the_dense_one(rows, gen):
    phi = features_with_singular_values(rows, [4.0, 2.0, 1.0, 0.3, 0.01, 0.0, 0.0, 0.0], gen)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tracked = log_condition_number_tracked(phi, ExtremeEigenTracker())
    assert tracked == pytest.approx(float(log_condition_number_features(phi)), rel=1e-10)


def test_only_large_float64_cpu_tasks_take_the_fast_path():
    size = TRACKING_MIN_SIZE
    x = torch.ones(size, size + 5, dtype=torch.float64)
    assert takes_fast_path(x)
    assert not takes_fast_path(x.float())
    x[:, :6] = 0  # the live columns decide, not the stored ones
    assert not takes_fast_path(x)
    assert not takes_fast_path(torch.ones(size - 1, 2 * size, dtype=torch.float64))
