import warnings

import numpy as np
import pytest
import torch

import condimmune as ci
from condimmune.core.reference import dense_regularizer_gradient
from condimmune.core.step import PreconditionedRegularizerStep

CASES = {
    "wide-n5-d12-ridge1": (5, 12, 1.0),
    "wide-n8-d20-ridge1e-3": (8, 20, 1e-3),
    "tall-n30-d10-ridge1": (30, 10, 1.0),
    "tall-n30-d10-ridge0": (30, 10, 0.0),
}


def numpy_reference(X, G, ridge):
    X, G = X.numpy(), G.numpy()
    K = X.T @ X + ridge * np.eye(X.shape[1])
    return np.linalg.solve(K, G.T).T  # G K⁻¹ (right side)


@pytest.mark.parametrize("n, d, ridge", CASES.values(), ids=CASES.keys())
def test_preconditioner_paths_match_dense_solve(n, d, ridge, gen):
    X = torch.randn(n, d, generator=gen, dtype=torch.float64)
    G = torch.randn(7, d, generator=gen, dtype=torch.float64)
    expected = numpy_reference(X, G, ridge)
    methods = ["dense"] if ridge == 0 or n >= d else ["dense", "woodbury", "auto"]
    for method in methods:
        out = ci.InputPreconditioner(X, ridge, method=method).apply(G)
        np.testing.assert_allclose(out.numpy(), expected, rtol=1e-7, atol=1e-9, err_msg=method)


def test_auto_picks_woodbury_when_n_below_d(gen):
    assert (
        ci.InputPreconditioner(torch.randn(3, 9, generator=gen, dtype=torch.float64), 1.0).method
        == "woodbury"
    )
    assert (
        ci.InputPreconditioner(torch.randn(9, 3, generator=gen, dtype=torch.float64), 1.0).method
        == "dense"
    )


def test_preconditioner_is_applied_on_the_input_side(gen):
    """For non-square W (k × d), G K⁻¹ is defined and K⁻¹ G is not (the reference's bug)."""
    X = torch.randn(20, 6, generator=gen, dtype=torch.float64)
    G = torch.randn(3, 6, generator=gen, dtype=torch.float64)
    out = ci.InputPreconditioner(X, 1.0).apply(G)
    torch.testing.assert_close(out @ (X.mT @ X + torch.eye(6, dtype=torch.float64)), G)


PRE_ERRORS = {
    "woodbury-without-ridge": (
        dict(X=torch.randn(3, 8, dtype=torch.float64), ridge=0.0, method="woodbury"),
        ValueError,
        "ridge > 0",
    ),
    "singular-dense": (
        dict(X=torch.ones(3, 8, dtype=torch.float64), ridge=0.0, method="dense"),
        ValueError,
        "not positive definite",
    ),
    "negative-ridge": (
        dict(X=torch.randn(3, 8, dtype=torch.float64), ridge=-1.0),
        ValueError,
        "ridge",
    ),
    "unknown-method": (
        dict(X=torch.randn(3, 8, dtype=torch.float64), ridge=1.0, method="lu"),
        ValueError,
        "unknown method 'lu'",
    ),
    "nan-data": (
        dict(X=torch.full((3, 8), float("nan"), dtype=torch.float64), ridge=1.0),
        ValueError,
        "NaN",
    ),
}


@pytest.mark.parametrize("kwargs, exc, match", PRE_ERRORS.values(), ids=PRE_ERRORS.keys())
def test_preconditioner_refuses_bad_input(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        ci.InputPreconditioner(**kwargs)


def test_apply_refuses_mismatched_gradients(gen):
    pre = ci.InputPreconditioner(torch.randn(3, 8, generator=gen, dtype=torch.float64), 1.0)
    with pytest.raises(ValueError, match="8"):
        pre.apply(torch.randn(2, 5, dtype=torch.float64))
    with pytest.raises(TypeError, match="float32"):
        pre.apply(torch.randn(2, 8, dtype=torch.float32))


STEP_CASES = {
    "gram-n6-d15": (6, 15, 15, 1.0, 1.0),
    "gram-rectangular-k10-n6-d15": (6, 15, 10, 1.0, 1e-2),
    "covariance-n30-d8": (30, 8, 8, 1.0, 1.0),
    "r-ill-only": (6, 15, 15, 0.0, 1.0),
}


@pytest.mark.parametrize("n, d, k, wp, wh", STEP_CASES.values(), ids=STEP_CASES.keys())
def test_step_equals_dense_reference(n, d, k, wp, wh, gen):
    xp = torch.randn(n, d, generator=gen, dtype=torch.float64)
    xh = torch.randn(n, d, generator=gen, dtype=torch.float64)
    W = torch.randn(k, d, generator=gen, dtype=torch.float64)
    kwargs = dict(benign_ridge=0.5, harmful_ridge=2.0, benign_weight=wp, harmful_weight=wh)
    step = PreconditionedRegularizerStep(xp, xh, rank_deficiency="allow", **kwargs)
    buffer = torch.empty(k, d, dtype=torch.float64)
    ours = step.gradient(W, out=buffer)
    assert ours.gradient.data_ptr() == buffer.data_ptr()
    if wp == 0:
        kwargs["benign_weight"] = 0.0
    expected = dense_regularizer_gradient(W, xp, xh, **kwargs)
    scale = float(expected.abs().max())
    torch.testing.assert_close(ours.gradient, expected, rtol=1e-6, atol=1e-9 * scale)
    assert np.isnan(ours.r_well) == (wp == 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ci.RankDeficientWarning)
        assert ours.r_ill == pytest.approx(float(ci.r_ill_features(xh @ W.mT)), rel=1e-9)


def test_step_refuses_mismatched_inputs(gen):
    xp = torch.randn(4, 6, generator=gen, dtype=torch.float64)
    with pytest.raises(ValueError, match="input dimension"):
        PreconditionedRegularizerStep(
            xp,
            torch.randn(4, 5, dtype=torch.float64),
            benign_ridge=1,
            harmful_ridge=1,
            benign_weight=1,
            harmful_weight=1,
        )
    step = PreconditionedRegularizerStep(
        xp, xp, benign_ridge=1, harmful_ridge=1, benign_weight=1, harmful_weight=1
    )
    with pytest.raises(ValueError, match="k × 6"):
        step.gradient(torch.randn(6, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="diverged"):
        step.gradient(torch.full((6, 6), float("inf"), dtype=torch.float64))
