"""The regularizer step's fast path for large problems (exact-rank rows, tracked extremes,
the dense fallback) against the dense float64 reference (core/reference.py), on small
random problems (``eigenvectors="tracking"`` forces it at any size) and on one of the size
where ``"auto"`` takes it; the row reduction itself, and the trainer's rows."""

import math

import pytest
import torch
from _helpers import (
    assert_close_to_scale,
    dense_step_gradient,
    random_orthogonal,
    regularizer_step,
)

import condimmune.core.rows as rows_module
import condimmune.core.step as step_module
from condimmune.core.rows import (
    CLEAN_GAP,
    ExactRankReduction,
    SharedReduction,
    exact_rank_reduction,
    exact_rank_rows,
)
from condimmune.core.spectral import log_condition_number_features
from condimmune.core.tracking import TRACKING_MIN_SIZE, ExtremeEigenTracker

WEIGHTS = {"both": (0.4, 0.3), "benign-only": (0.4, 0.0), "harmful-only": (0.0, 0.3)}
SHAPES = {  # n, d, k, rank of the rows (None: full)
    "gram-n6-k12": (6, 12, 12, None),
    "covariance-n30-k8": (30, 8, 8, None),
    "rank-deficient-n20-d12": (20, 12, 12, 7),
    "tall-n160-k6": (160, 6, 6, None),
}


def _rows(gen, n, d, rank):
    if rank is None:
        return torch.randn(n, d, generator=gen, dtype=torch.float64)
    a = torch.randn(n, rank, generator=gen, dtype=torch.float64)
    return a @ torch.randn(rank, d, generator=gen, dtype=torch.float64)


def _problem(gen, n, d, k, rank=None, dead_columns=0):
    xp, xh = _rows(gen, n, d, rank), _rows(gen, n, d, rank)
    xp[:, :dead_columns] = 0
    xh[:, :dead_columns] = 0
    w = torch.eye(k, d, dtype=torch.float64) + 0.3 * torch.randn(
        k, d, generator=gen, dtype=torch.float64
    )
    return xp, xh, w


@pytest.mark.parametrize("weighting", ["fixed", "unit", "monotone"])
@pytest.mark.parametrize("wp, wh", WEIGHTS.values(), ids=WEIGHTS.keys())
@pytest.mark.parametrize("n, d, k, rank", SHAPES.values(), ids=SHAPES.keys())
def test_tracked_step_equals_dense_reference(n, d, k, rank, wp, wh, weighting, gen):
    xp, xh, w = _problem(gen, n, d, k, rank, dead_columns=2)
    step = regularizer_step(xp, xh, wp, wh, eigenvectors="tracking", weighting=weighting)
    ours = step.gradient(w)
    expected = dense_step_gradient(w, xp, xh, wp, wh, weighting)
    assert_close_to_scale(ours.gradient, expected, 1e-9)
    dense = regularizer_step(xp, xh, wp, wh, eigenvectors="dense", weighting=weighting).gradient(w)
    assert_close_to_scale(ours.gradient, dense.gradient, 1e-10)
    for field in ("r_well", "r_ill", "benign_log_kappa", "harmful_log_kappa"):
        a, b = getattr(ours, field), getattr(dense, field)
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-10), field
    assert torch.count_nonzero(ours.gradient[:, :2]) == 0  # zero inputs get no update


def test_auto_tracks_a_large_task_and_keeps_the_dense_numbers(gen):
    n = d = TRACKING_MIN_SIZE
    # rank-deficient rows with a clean gap: reduced to 300 rows, a 300 × 300 Gram matrix
    xp, xh, w = _problem(gen, n, d, d, rank=300)
    step = regularizer_step(xp, xh, 0.4, 0.3, weighting="unit")
    assert step._fast == {"benign": True, "harmful": True}
    assert step._rows.block((True, False)).x.shape == (300, d)
    ours = step.gradient(w)
    dense = regularizer_step(xp, xh, 0.4, 0.3, eigenvectors="dense", weighting="unit").gradient(w)
    assert_close_to_scale(ours.gradient, dense.gradient, 1e-10)
    for field in ("r_well", "r_ill", "benign_log_kappa", "harmful_log_kappa"):
        assert getattr(ours, field) == pytest.approx(getattr(dense, field), rel=1e-10), field
    small = regularizer_step(xp[:, :50], xh[:, :50], 0.4, 0.3)
    assert small._fast == {"benign": False, "harmful": False}


def test_a_refused_tracking_gives_the_dense_numbers_then_skips_a_few_steps(gen, monkeypatch):
    calls = []

    def refuse(self, gram, **kwargs):
        calls.append(gram.shape)

    xp, xh, w = _problem(gen, 6, 12, 12)
    fast = regularizer_step(xp, xh, 0.4, 0.0, eigenvectors="tracking", weighting="unit")
    dense = regularizer_step(xp, xh, 0.4, 0.0, eigenvectors="dense", weighting="unit")
    monkeypatch.setattr(ExtremeEigenTracker, "track", refuse)
    skipped = step_module._DENSE_AFTER_REFUSAL
    for _ in range(skipped + 2):
        # the same numbers up to rounding: the fast path's rows are rotated to a triangle
        torch.testing.assert_close(
            fast.gradient(w).gradient, dense.gradient(w).gradient, rtol=1e-11, atol=1e-14
        )
    assert len(calls) == 2  # refused, dense for `skipped` steps, tried (and refused) again


def _with_singular_values(n, d, values, gen):
    u = random_orthogonal(n, gen)[:, : len(values)]
    v = random_orthogonal(d, gen)[:, : len(values)]
    return (u * torch.tensor(values, dtype=torch.float64)) @ v.mT


@pytest.mark.parametrize(
    "values, rows",
    [
        ([5.0, 2.0, 1.0, 1e-9, 0.0, 0.0], 4),  # a clean gap below 1e-9: rank 4
        ([5.0, 2.0, 1.0, 1e-9, 1e-11, 1e-13], 6),  # no clean gap: all min(n, d) kept
    ],
    ids=["clean-gap", "no-clean-gap"],
)
def test_exact_rank_rows_keep_the_covariance(values, rows, gen):
    x = _with_singular_values(9, 6, values, gen)
    r, q = exact_rank_rows(x)
    assert r.shape == (rows, 6) and q is not None and q.shape == (9, rows)
    torch.testing.assert_close(r.mT @ r, x.mT @ x, rtol=0, atol=1e-13)
    torch.testing.assert_close(q @ r, x, rtol=0, atol=1e-13)
    torch.testing.assert_close(q.mT @ q, torch.eye(rows, dtype=torch.float64))


def test_exact_rank_rows_leave_full_rank_or_zero_rows_alone(gen):
    wide = torch.randn(5, 8, generator=gen, dtype=torch.float64)
    assert exact_rank_rows(wide)[0] is wide
    zero = torch.zeros(6, 3, dtype=torch.float64)
    assert exact_rank_rows(zero)[0] is zero
    # a gap just below CLEAN_GAP is not clean
    x = _with_singular_values(9, 6, [1.0, 0.5, 1e-13, 1e-13 / (0.9 * CLEAN_GAP), 0, 0], gen)
    assert exact_rank_rows(x)[0].shape[0] == 6


def test_training_rows_of_a_large_task_track_log_kappa(gen):
    from condimmune.linear.train import _TrainingRows

    n, d = TRACKING_MIN_SIZE + 10, TRACKING_MIN_SIZE + 20
    x = _rows(gen, n, d, TRACKING_MIN_SIZE)
    x[:, :5] = 0
    w = torch.eye(d, dtype=torch.float64) + 0.1 * torch.randn(d, d, generator=gen).double()
    rows = _TrainingRows(x, SharedReduction(x))
    assert rows.x.shape == (TRACKING_MIN_SIZE, d - 5) and rows.tracker is not None
    phi = x @ w.mT
    assert rows.energy(w) == pytest.approx(float(phi.square().sum()), rel=1e-12)
    assert rows.log_kappa(w) == pytest.approx(float(log_condition_number_features(phi)), rel=1e-9)


ROW_LAYOUTS = {  # which input columns are zero in each task, and which rows of W are dead
    "own-zero-columns": ([0, 3], [1, 3, 5], []),
    "dead-weight-rows": ([0, 3], [1, 3, 5], [1, 2]),
    "benign-all-columns": ([], [1, 3, 5], [2]),
}


@pytest.mark.parametrize("wp, wh", WEIGHTS.values(), ids=WEIGHTS.keys())
@pytest.mark.parametrize(
    ("benign_zero", "harmful_zero", "dead"), ROW_LAYOUTS.values(), ids=ROW_LAYOUTS.keys()
)
def test_each_task_on_its_own_columns_equals_dense_reference(
    benign_zero, harmful_zero, dead, wp, wh, gen
):
    """The fast path forms each task's features on its own columns (triangular rows by dtrmm):
    the same direction as the stacked rows' and the dense reference's."""
    xp, xh = _rows(gen, 20, 12, 7), _rows(gen, 23, 12, 7)
    xp[:, benign_zero], xh[:, harmful_zero] = 0.0, 0.0
    w = torch.eye(12, dtype=torch.float64) + 0.3 * torch.randn(
        12, 12, generator=gen, dtype=torch.float64
    )
    w[dead] = 0.0
    ours = regularizer_step(xp, xh, wp, wh, eigenvectors="tracking", weighting="unit").gradient(w)
    expected = dense_step_gradient(w, xp, xh, wp, wh, "unit")
    assert_close_to_scale(ours.gradient, expected, 1e-9)


@pytest.mark.parametrize("large", ["benign", "harmful"])
def test_one_large_task_takes_the_fast_path_beside_a_small_one(large, gen):
    n = d = TRACKING_MIN_SIZE
    big, small = _rows(gen, n + 20, d + 8, 300), _rows(gen, 60, d + 8, None)
    big[:, :4], small[:, 2:9] = 0.0, 0.0
    xp, xh = (big, small) if large == "benign" else (small, big)
    w = torch.eye(200, d + 8, dtype=torch.float64) + 0.1 * torch.randn(
        200, d + 8, generator=gen, dtype=torch.float64
    )
    w[5] = 0.0
    step = regularizer_step(xp, xh, 0.4, 0.3, weighting="unit")
    assert step._fast == {"benign": large == "benign", "harmful": large == "harmful"}
    dense = regularizer_step(xp, xh, 0.4, 0.3, eigenvectors="dense", weighting="unit").gradient(w)
    assert_close_to_scale(step.gradient(w).gradient, dense.gradient, 1e-10)


def test_the_trainer_and_the_step_share_one_reduction_per_task(gen, monkeypatch):
    """The linear trainer's rows and the regularizer step reduce each task's rows once
    between them, and the step's direction is the same to the bit as with its own."""
    from condimmune.linear.train import _TrainingRows

    n = d = TRACKING_MIN_SIZE + 8
    xp, xh, w = _problem(gen, n, d, d, rank=300, dead_columns=3)
    alone = regularizer_step(xp, xh, 0.4, 0.3, weighting="unit").gradient(w).gradient
    calls = []
    original = rows_module.exact_rank_rows

    def counted(x):
        calls.append(x.shape)
        return original(x)

    monkeypatch.setattr(rows_module, "exact_rank_rows", counted)
    shared = (SharedReduction(xp), SharedReduction(xh))
    step = regularizer_step(xp, xh, 0.4, 0.3, weighting="unit", shared_rows=shared)
    rows = [_TrainingRows(x, one) for x, one in zip((xp, xh), shared, strict=True)]
    assert len(calls) == 2  # one SVD per task, not one per user
    assert all(r.x is one.get().rows for r, one in zip(rows, shared, strict=True))
    assert torch.equal(step.gradient(w).gradient, alone)
    # a reduction made for other rows is not used
    assert exact_rank_reduction(xh, shared[0]) is not shared[0].get()
    assert torch.equal(exact_rank_reduction(xh, shared[0]).rows, ExactRankReduction(xh).rows)
