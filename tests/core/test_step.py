"""The regularizer step's fast paths against the dense float64 reference (core/reference.py).

Each fast path (inverse-iteration eigenvectors, skipped regularizers, dropped all-zero input
columns and all-zero feature rows, the dense fallback for clustered spectra) must give the
numbers of the dense computation to rounding.
"""

import math
import warnings

import pytest
import torch
from _helpers import (
    assert_close_to_scale,
    dense_step_gradient,
    features_with_singular_values,
    regularizer_step,
)

import condimmune as ci
from condimmune.core.eigenpairs import EigenvectorMethod
from condimmune.core.regularizers import r_ill_value_and_gradient, r_well_value_and_gradient
from condimmune.core.spectral import log_condition_number_features

SHAPES = {
    "gram-n6-k12": (6, 12, 12),
    "covariance-n30-k8": (30, 8, 8),
    "rect-n5-d12-k9": (5, 12, 9),
    "qr-compressed-n160-k6": (160, 6, 6),
}
WEIGHTS = {"both": (0.4, 0.3), "benign-only": (0.4, 0.0), "harmful-only": (0.0, 0.3)}


def _problem(gen, n, d, k, *, dead_columns=0, dead_rows=0):
    """Random tasks whose first ``dead_columns`` inputs are zero in both (the next one in the
    benign rows only), and ``W`` whose first ``dead_rows`` rows are zero on the live inputs."""
    xp = torch.randn(n, d, generator=gen, dtype=torch.float64)
    xh = torch.randn(n, d, generator=gen, dtype=torch.float64)
    xp[:, : dead_columns + 1 if dead_columns else 0] = 0
    xh[:, :dead_columns] = 0
    w = torch.eye(k, d, dtype=torch.float64) + 0.3 * torch.randn(
        k, d, generator=gen, dtype=torch.float64
    )
    w[:dead_rows, dead_columns:] = 0
    return xp, xh, w


@pytest.mark.parametrize("weighting", ["fixed", "unit", "monotone"])
@pytest.mark.parametrize("eigenvectors", ["dense", "inverse-iteration"])
@pytest.mark.parametrize("wp, wh", WEIGHTS.values(), ids=WEIGHTS.keys())
@pytest.mark.parametrize("n, d, k", SHAPES.values(), ids=SHAPES.keys())
def test_step_equals_dense_reference(n, d, k, wp, wh, eigenvectors, weighting, gen):
    xp, xh, w = _problem(gen, n, d, k)
    step = regularizer_step(xp, xh, wp, wh, eigenvectors=eigenvectors, weighting=weighting)
    ours = step.gradient(w)
    expected = dense_step_gradient(w, xp, xh, wp, wh, weighting)
    assert_close_to_scale(ours.gradient, expected, 1e-9)
    dense = regularizer_step(xp, xh, wp, wh, eigenvectors="dense", weighting=weighting).gradient(w)
    assert_close_to_scale(ours.gradient, dense.gradient, 1e-11)
    for field in ("r_well", "r_ill", "benign_log_kappa", "harmful_log_kappa"):
        a, b = getattr(ours, field), getattr(dense, field)
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-12), field
    if wp > 0:
        kappa = float(log_condition_number_features(xp @ w.mT))
        assert ours.benign_log_kappa == pytest.approx(kappa, rel=1e-12)


@pytest.mark.parametrize("eigenvectors", ["dense", "inverse-iteration"])
@pytest.mark.parametrize("wp, wh", WEIGHTS.values(), ids=WEIGHTS.keys())
@pytest.mark.parametrize(
    "n, d, k", [(6, 14, 14), (40, 10, 10), (130, 10, 10)], ids=["gram", "covariance", "qr"]
)
def test_dropped_zero_columns_and_rows_change_nothing(n, d, k, wp, wh, eigenvectors, gen):
    dead = 3
    xp, xh, w = _problem(gen, n, d, k, dead_columns=dead, dead_rows=2)
    step = regularizer_step(xp, xh, wp, wh, eigenvectors=eigenvectors, weighting="unit")
    out = torch.full_like(w, float("nan"))  # every entry must be written
    ours = step.gradient(w, out=out)
    assert ours.gradient.data_ptr() == out.data_ptr()
    expected = dense_step_gradient(w, xp, xh, wp, wh, "unit")
    assert_close_to_scale(ours.gradient, expected, 1e-9)
    # zero inputs and zero features get exactly no update
    assert torch.count_nonzero(ours.gradient[:, :dead]) == 0
    assert torch.count_nonzero(ours.gradient[:2]) == 0


def test_no_active_regularizer_gives_a_zero_direction(gen):
    xp, xh, w = _problem(gen, 6, 12, 12)
    result = regularizer_step(xp, xh, 0.0, 0.0).gradient(w, out=torch.ones_like(w))
    assert torch.count_nonzero(result.gradient) == 0
    assert math.isnan(result.r_well) and math.isnan(result.r_ill)


def test_guard_toggling_reuses_the_right_rows(gen):
    xp, xh, w = _problem(gen, 6, 12, 12, dead_columns=2)
    step = regularizer_step(xp, xh, 0.4, 0.3, weighting="unit")
    for harmful in (0.3, 0.0, 0.3, 0.0):
        step.harmful_weight = harmful
        fresh = regularizer_step(xp, xh, 0.4, harmful, weighting="unit")
        torch.testing.assert_close(step.gradient(w).gradient, fresh.gradient(w).gradient)


def _clustered_top(gen):
    """Gram matrix whose two largest eigenvalues differ by 1e-9 (relative)."""
    phi = features_with_singular_values(5, [3.0, 3.0 * (1 + 5e-10), 1.0, 0.5, 0.2, 0, 0, 0], gen)
    return phi @ phi.mT


def test_clustered_spectrum_falls_back_to_the_dense_path(gen):
    mat = _clustered_top(gen)
    fast = r_well_value_and_gradient(mat, 8, EigenvectorMethod.INVERSE_ITERATION)
    dense = r_well_value_and_gradient(mat, 8, EigenvectorMethod.DENSE)
    assert fast.fallback and not dense.fallback
    assert torch.equal(fast.gradient, dense.gradient)
    assert (fast.value, fast.log_kappa, fast.unit_step) == (
        dense.value,
        dense.log_kappa,
        dense.unit_step,
    )


def test_after_a_fallback_the_step_goes_dense(gen):
    """The hint that skips futile inverse iterations changes no number."""
    phi = features_with_singular_values(5, [3.0, 3.0 * (1 + 5e-10), 1.0, 0.5, 0.2], gen)
    x = torch.eye(5, dtype=torch.float64)  # Φ = X Wᵀ = Wᵀ
    w = phi.mT.contiguous()
    fast = regularizer_step(x, x, 0.4, 0.0, eigenvectors="inverse-iteration", weighting="unit")
    dense = regularizer_step(x, x, 0.4, 0.0, eigenvectors="dense", weighting="unit")
    for _ in range(3):
        assert torch.equal(fast.gradient(w).gradient, dense.gradient(w).gradient)


@pytest.mark.parametrize(
    "spectrum",
    [[0.5, 1.0, 2.0, 4.0, 9.0], [0.0, 0.0, 1.0, 3.0, 7.0], [1e-6, 1.0, 1e3]],
    ids=["full-rank", "low-rank", "wide-range"],
)
def test_inverse_iteration_gradients_match_autograd(spectrum, gen):
    from _helpers import matrix_with_spectrum

    S = matrix_with_spectrum(spectrum, gen).requires_grad_(True)
    p = S.shape[0]
    (auto_well,) = torch.autograd.grad(ci.r_well(S), S)
    fast = EigenvectorMethod.INVERSE_ITERATION
    well = r_well_value_and_gradient(S.detach(), p, fast)
    torch.testing.assert_close(well.gradient, auto_well, rtol=1e-9, atol=1e-11)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ci.RankDeficientWarning)
        (auto_ill,) = torch.autograd.grad(ci.r_ill(S, rank_deficiency="allow"), S)
    ill = r_ill_value_and_gradient(S.detach(), p, None, ci.RankDeficiency.ALLOW, fast)
    scale = float(auto_ill.abs().max())
    torch.testing.assert_close(ill.gradient, auto_ill, rtol=1e-9, atol=1e-11 * scale)
    assert not well.fallback and not ill.fallback
