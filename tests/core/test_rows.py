"""The row reductions of core/rows.py keep the covariance of the features ``X Wᵀ``."""

import torch

from condimmune.core.rows import COMPRESS_MIN_RATIO, compress_rows, live_weight, nonzero_columns


def test_compress_rows_keeps_the_feature_covariance(gen):
    x = torch.randn(COMPRESS_MIN_RATIO * 5, 5, generator=gen, dtype=torch.float64)
    w = torch.randn(7, 5, generator=gen, dtype=torch.float64)
    r, q = compress_rows(x)
    assert r.shape == (5, 5) and q is not None
    phi, psi = x @ w.mT, r @ w.mT
    torch.testing.assert_close(psi.mT @ psi, phi.mT @ phi, rtol=1e-13, atol=1e-12)
    short = x[: COMPRESS_MIN_RATIO * 5 - 1]
    assert compress_rows(short)[0] is short


def test_live_weight_drops_rows_that_are_zero_on_the_columns():
    w = torch.tensor(
        [[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [5.0, 0.0, float("nan")], [0.0, 0.0, -3.0]],
        dtype=torch.float64,
    )
    block, live = live_weight(w, torch.tensor([1, 2]))
    assert live.tolist() == [1, 2, 3]  # row 0 is zero on columns 1, 2; a NaN row is kept
    torch.testing.assert_close(block, w[1:, 1:], equal_nan=True)
    block, live = live_weight(w, None)  # no dropped input, nothing to look for
    assert live is None and block is w


def test_nonzero_columns():
    x = torch.tensor([[0.0, 1.0, 0.0], [0.0, -2.0, 3.0]], dtype=torch.float64)
    assert nonzero_columns(x).tolist() == [1, 2]
    assert nonzero_columns(torch.ones(2, 3)) is None
