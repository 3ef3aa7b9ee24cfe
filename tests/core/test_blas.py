"""scipy-BLAS products against torch's general products in float64 (the dense reference)."""

from __future__ import annotations

import pytest
import torch

from condimmune.core.blas import (
    TriangularRows,
    product_rows,
    symmetric_gram,
    trapezoid_times_transpose,
)
from condimmune.core.rows import triangular_rows


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(7)


@pytest.mark.parametrize(
    ("n", "k", "rows"),
    [(5, 9, True), (9, 5, False), (7, 7, True), (7, 7, False), (1, 4, True)],
    ids=["wide-gram", "tall-covariance", "square-gram", "square-covariance", "one-row"],
)
def test_symmetric_gram_equals_the_general_product(n, k, rows, gen) -> None:
    phi = torch.randn(n, k, generator=gen, dtype=torch.float64)
    expected = phi @ phi.mT if rows else phi.mT @ phi
    got = symmetric_gram(phi, rows=rows)
    torch.testing.assert_close(got, expected, rtol=1e-13, atol=1e-13)
    assert torch.equal(got, got.mT)  # both triangles, exactly symmetric


def test_symmetric_gram_of_a_strided_view(gen) -> None:
    phi = torch.randn(8, 12, generator=gen, dtype=torch.float64)[1:7, ::2]
    torch.testing.assert_close(symmetric_gram(phi, rows=False), phi.mT @ phi)


@pytest.mark.parametrize(("r", "d", "k"), [(4, 9, 6), (6, 6, 10), (1, 3, 2)], ids=str)
def test_trapezoid_times_transpose_equals_the_general_product(r, d, k, gen) -> None:
    x = torch.randn(r, d, generator=gen, dtype=torch.float64)
    t, q = triangular_rows(x)
    assert q is not None and torch.equal(t, t.triu())
    w = torch.randn(k, d, generator=gen, dtype=torch.float64)
    out = torch.full((r, k), float("nan"), dtype=torch.float64)
    trapezoid_times_transpose(TriangularRows(t), w, out=out)
    torch.testing.assert_close(out, t @ w.mT, rtol=1e-13, atol=1e-13)
    # the rotated rows have the features' covariance
    torch.testing.assert_close(out.mT @ out, (x @ w.mT).mT @ (x @ w.mT))


def test_triangular_rows_keep_the_covariance_and_leave_tall_rows_alone(gen) -> None:
    x = torch.randn(5, 8, generator=gen, dtype=torch.float64)
    t, q = triangular_rows(x)
    assert q is not None
    torch.testing.assert_close(t.mT @ t, x.mT @ x)
    torch.testing.assert_close(q @ t, x)
    torch.testing.assert_close(q.mT @ q, torch.eye(5, dtype=torch.float64))
    tall = torch.randn(8, 5, generator=gen, dtype=torch.float64)
    same, none = triangular_rows(tall)
    assert same is tall and none is None


def test_only_triangular_rows_that_fit_a_trapezoid_are_multiplied_by_dtrmm(gen) -> None:
    wide, tall = (
        torch.randn(*shape, generator=gen, dtype=torch.float64) for shape in [(5, 8), (8, 5)]
    )
    t, _ = triangular_rows(wide)
    rows = product_rows(t, True)
    assert isinstance(rows, TriangularRows) and rows.rows is t
    assert product_rows(t, False) is t
    assert product_rows(tall, True) is tall


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: symmetric_gram(torch.ones(3, 3), rows=True), "float64 CPU matrix"),
        (lambda: symmetric_gram(torch.ones(3, dtype=torch.float64), rows=True), "2-d"),
        (lambda: TriangularRows(torch.ones(4, 3, dtype=torch.float64)), "r ≤ d"),
        (
            lambda: trapezoid_times_transpose(
                TriangularRows(torch.ones(2, 3, dtype=torch.float64)),
                torch.ones(4, 5, dtype=torch.float64),
                out=torch.empty(2, 4, dtype=torch.float64),
            ),
            r"need k × 3 and 2 × k",
        ),
    ],
    ids=["float32", "vector", "tall-rows", "shapes"],
)
def test_refusals_say_what_is_wrong(call, match) -> None:
    with pytest.raises(ValueError, match=match):
        call()


def test_the_weight_is_left_as_it_was(gen) -> None:
    t, _ = triangular_rows(torch.randn(4, 4, generator=gen, dtype=torch.float64))
    w = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    before = w.clone()
    trapezoid_times_transpose(TriangularRows(t), w, out=torch.empty(4, 3, dtype=torch.float64))
    assert torch.equal(w, before)


def test_scipy_blas_runs_on_one_thread_and_is_given_back() -> None:
    from threadpoolctl import threadpool_info, threadpool_limits

    from condimmune.core.blas import one_blas_thread

    def blas_threads() -> set[int]:
        return {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}

    with threadpool_limits(3, user_api="blas"):
        assert blas_threads() == {3}
        with one_blas_thread():
            assert blas_threads() == {1}
        assert blas_threads() == {3}
