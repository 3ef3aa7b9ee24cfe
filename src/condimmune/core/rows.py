r"""Reductions of a task's training rows ``X`` that leave the features' covariance unchanged.

The regularizers see ``X`` only through ``Φ = X Wᵀ`` and its covariance ``ΦᵀΦ`` (or Gram
matrix), so any ``X'`` and ``W'`` with ``Φ'ᵀΦ' = ΦᵀΦ`` give the same spectra (Eq. 1, 3, 12):

* all-zero columns of ``X`` (raw-MNIST borders) add exact zeros to ``X Wᵀ``
  (:func:`nonzero_columns`); rows of ``W`` that are zero on the other columns give features
  that are exactly zero (:func:`live_weight`);
* a very tall ``X = QR`` (thin QR) gives :math:`\Phi^\top\Phi = \Psi^\top\Psi` with
  :math:`\Psi = RW^\top` (:func:`compress_rows`).

The numbers change only by the order of floating-point sums (``tests/core/test_rows.py``).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["COMPRESS_MIN_RATIO", "compress_rows", "live_weight", "nonzero_columns"]

COMPRESS_MIN_RATIO = 16
"""Rows per column from which :func:`compress_rows` replaces the rows by their QR factor:
the work per step on them then drops at least 16-fold (full MNIST: 12,000 rows, 64 or 784
columns). Below it the rows are used as they are, which keeps the rounding, and with it the
numbers, of the smaller runs (mnist-pair: 600 rows, 64 columns) bit for bit; their runs are
chaotic in the benign guard, so even this change of rounding moves their results visibly."""


def nonzero_columns(x: Tensor) -> Tensor | None:
    """Indices of the columns of ``x`` that are not all zero; ``None`` when none is all zero.

    ``x[:, J] @ W[:, J]ᵀ`` equals ``x @ Wᵀ`` for any ``W`` (the dropped terms are exact zeros).
    """
    live = x.ne(0).any(dim=0)
    if bool(live.all()):
        return None
    return torch.nonzero(live).squeeze(1)


def live_weight(weight: Tensor, columns: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """``(W_RJ, R)``: ``weight`` on ``columns`` J without the rows that are zero there, and
    the indices R of the rows kept (``None``: all); ``(weight, None)`` when ``columns`` is
    ``None`` (no input column is all zero, so no feature is forced to zero either).

    For data ``X`` that is zero outside J, ``X_J W_RJᵀ`` is ``X Wᵀ`` without its exactly-zero
    columns (raw MNIST: the features of the border pixels, which stay zero under training).
    Rows are found by ``|W| · 1_J``, one matrix-vector product, and gathered before columns
    (contiguous copies).
    """
    if columns is None:
        return weight, None
    indicator = weight.new_zeros(weight.shape[1]).index_fill_(0, columns, 1.0)
    live = nonzero_columns((weight.abs() @ indicator)[None, :])  # ≠ 0 keeps NaN rows
    rows = weight if live is None else weight.index_select(0, live)
    return rows.index_select(1, columns), live


def compress_rows(x: Tensor) -> tuple[Tensor, Tensor | None]:
    r"""``(R, Q)`` of the thin QR factorisation :math:`X = QR` when ``x`` (n × d) has at least
    :data:`COMPRESS_MIN_RATIO` times more rows than columns, else ``(x, None)``.

    Since :math:`Q^\top Q = I`, :math:`\Psi = RW^\top` (d × k) has the covariance of the
    features: :math:`\Phi^\top\Phi = \Psi^\top\Psi`, :math:`\|\Phi\|_F = \|\Psi\|_F`, so every
    spectral quantity of ``Φ = X Wᵀ`` comes from ``d`` rows instead of ``n`` (Householder QR
    is backward stable: ``R`` carries the rounding of one more product, like ``Φ`` itself).
    """
    if x.shape[0] < COMPRESS_MIN_RATIO * x.shape[1]:
        return x, None
    q, r = torch.linalg.qr(x)
    return r, q
