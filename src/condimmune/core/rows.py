r"""Reductions of a task's training rows ``X`` that leave the features' covariance unchanged.

The regularizers see ``X`` only through ``Φ = X Wᵀ`` and its covariance ``ΦᵀΦ`` (or Gram
matrix), so any ``X'`` and ``W'`` with ``Φ'ᵀΦ' = ΦᵀΦ`` give the same spectra (Eq. 1, 3, 12):

* all-zero columns of ``X`` (raw-MNIST borders) add exact zeros to ``X Wᵀ``
  (:func:`nonzero_columns`); rows of ``W`` that are zero on the other columns give features
  that are exactly zero (:func:`live_weight`);
* a very tall ``X = QR`` (thin QR) gives :math:`\Phi^\top\Phi = \Psi^\top\Psi` with
  :math:`\Psi = RW^\top` (:func:`compress_rows`);
* any ``X`` of numerical rank ``r`` with a clean gap in its singular values is, to rounding,
  :math:`X = U_r\Sigma_rV_r^\top`, and :math:`R = \Sigma_rV_r^\top` (r × d) has the same
  :math:`R^\top R = X^\top X` (:func:`exact_rank_rows`, the fast path of large problems):
  every later product costs ``r`` rows instead of ``n``, and the Gram matrices lose the
  exact zeros of a rank-deficient ``X`` (raw MNIST: rank 525 of 600 rows).
* any rows ``R`` (r × d, r ≤ d) may be rotated, ``T = Q₂ᵀR`` with ``R = Q₂T`` (QR): ``T`` is
  upper trapezoidal, so ``TWᵀ`` costs half on its triangle (:func:`triangular_rows`,
  :mod:`condimmune.core.blas`).

The numbers change only by the order of floating-point sums (``tests/core/test_rows.py``).
Rows are torch tensors or numpy arrays (:mod:`condimmune.core.arrays`), index vectors
integer arrays of the same backend.
"""

from __future__ import annotations

from typing import Any, Generic

import array_api_compat

from condimmune.core.arrays import Array, machine_epsilon, namespace
from condimmune.core.preconditioner import InputPreconditioner

Index = Any
"""An integer index vector in the rows' backend (``None`` where a function says so)."""

__all__ = [
    "CLEAN_GAP",
    "COMPRESS_MIN_RATIO",
    "ExactRankReduction",
    "SharedReduction",
    "column_positions",
    "compress_rows",
    "exact_rank_reduction",
    "exact_rank_rows",
    "live_weight",
    "nonzero_columns",
    "on_columns",
    "preconditioned_rows",
    "triangular_rows",
]

COMPRESS_MIN_RATIO = 16
"""Rows per column from which :func:`compress_rows` replaces the rows by their QR factor:
the work per step on them then drops at least 16-fold (full MNIST: 12,000 rows, 64 or 784
columns). Below it the rows are used as they are, which keeps the rounding, and with it the
numbers, of the smaller runs (mnist-pair: 600 rows, 64 columns) bit for bit; their runs are
chaotic in the benign guard, so even this change of rounding moves their results visibly."""


CLEAN_GAP = 1e4
"""The smallest singular value :func:`exact_rank_rows` keeps must exceed the largest it drops
by this factor (raw MNIST: 4e-8 against 3e-17 of σ₁), else it keeps all of them."""


def nonzero_columns(x: Array) -> Index | None:
    """Indices of the columns of ``x`` that are not all zero; ``None`` when none is all zero.

    ``x[:, J] @ W[:, J]ᵀ`` equals ``x @ Wᵀ`` for any ``W`` (the dropped terms are exact zeros).
    """
    xp = namespace(x)
    live = xp.any(x != 0, axis=0)
    if bool(xp.all(live)):
        return None
    return xp.nonzero(live)[0]


def live_weight(weight: Array, columns: Index | None) -> tuple[Array, Index | None]:
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
    xp = namespace(weight)
    device = array_api_compat.device(weight)
    indicator = xp.zeros(weight.shape[1], dtype=weight.dtype, device=device)
    indicator[columns] = 1.0
    live = nonzero_columns((xp.abs(weight) @ indicator)[None, :])  # ≠ 0 keeps NaN rows
    rows = weight if live is None else xp.take(weight, live, axis=0)
    kept: Array = xp.take(rows, columns, axis=1)
    return kept, live


def compress_rows(x: Array) -> tuple[Array, Array | None]:
    r"""``(R, Q)`` of the thin QR factorisation :math:`X = QR` when ``x`` (n × d) has at least
    :data:`COMPRESS_MIN_RATIO` times more rows than columns, else ``(x, None)``.

    Since :math:`Q^\top Q = I`, :math:`\Psi = RW^\top` (d × k) has the covariance of the
    features: :math:`\Phi^\top\Phi = \Psi^\top\Psi`, :math:`\|\Phi\|_F = \|\Psi\|_F`, so every
    spectral quantity of ``Φ = X Wᵀ`` comes from ``d`` rows instead of ``n`` (Householder QR
    is backward stable: ``R`` carries the rounding of one more product, like ``Φ`` itself).
    """
    if x.shape[0] < COMPRESS_MIN_RATIO * x.shape[1]:
        return x, None
    q, r = namespace(x).linalg.qr(x)
    return r, q


def exact_rank_rows(x: Array) -> tuple[Array, Array | None]:
    r"""``(R, Q)`` with :math:`R = \Sigma_rV_r^\top` (r × d) and :math:`Q = U_r` (n × r, orthonormal
    columns) from the thin SVD :math:`X = U\Sigma V^\top`, when that has fewer rows than
    ``x``; else ``(x, None)``.

    ``r`` is the numerical rank, the number of singular values above
    :math:`\max(n, d)\,\epsilon\,\sigma_1` (``numpy.linalg.matrix_rank``'s rule), when the gap
    there is clean (:data:`CLEAN_GAP`), else ``min(n, d)``. The dropped singular values are
    at the rounding level of ``X`` itself, so :math:`R^\top R = X^\top X` and
    :math:`\Phi = XW^\top = Q\Psi` with :math:`\Psi = RW^\top` to rounding: every spectral
    quantity of ``Φ`` comes from ``Ψ``, and a gradient :math:`A = \partial R/\partial\Phi =
    QA_\Psi` gives :math:`A^\top M = A_\Psi^\top(Q^\top M)`.
    """
    u, s, vh = namespace(x).linalg.svd(x, full_matrices=False)
    values = s.tolist()
    cut = max(x.shape) * machine_epsilon(x.dtype) * values[0]
    rank = sum(value > cut for value in values)
    if rank == 0:  # x = 0
        return x, None
    if rank < len(values) and not values[rank - 1] >= CLEAN_GAP * values[rank]:
        rank = len(values)
    if rank >= x.shape[0]:
        return x, None
    return s[:rank, None] * vh[:rank], u[:, :rank]


def triangular_rows(x: Array) -> tuple[Array, Array | None]:
    r"""``(T, Q₂)`` with :math:`x = Q_2T` (thin QR) when ``x`` (r × d) has no more rows than
    columns: ``T`` is upper trapezoidal with :math:`T^\top T = x^\top x` (``Q₂`` is
    orthogonal), so :math:`TW^\top = Q_2^\top(xW^\top)` has every spectral quantity of
    :math:`xW^\top` and a gradient ``A_T`` gives :math:`A^\top M = A_T^\top(Q_2^\top M)`;
    ``(x, None)`` for taller ``x``."""
    if x.shape[0] > x.shape[1]:
        return x, None
    q, t = namespace(x).linalg.qr(x)
    return t, q


class ExactRankReduction(Generic[Array]):
    """A task's rows reduced for the fast path, once: its non-zero ``columns`` (``None``:
    all), the exact-rank factor rotated to a triangle, ``rows`` = ``T``, and the orthonormal
    factors with :math:`X_J = Q_1Q_2T` (``first`` = :math:`Q_1` of :func:`exact_rank_rows`,
    ``second`` = :math:`Q_2` of :func:`triangular_rows`; ``None`` where a step changed
    nothing)."""

    def __init__(self, x: Array) -> None:
        self.columns: Index | None = nonzero_columns(x)
        rows = x if self.columns is None else x[:, self.columns]
        reduced, first = exact_rank_rows(rows)
        triangle, second = triangular_rows(reduced)
        self.rows: Array = triangle
        self.first: Array | None = first
        self.second: Array | None = second


class SharedReduction(Generic[Array]):
    """The :class:`ExactRankReduction` of ``x``, computed on first use: the linear trainer and
    the regularizer step each need it, and each would otherwise pay one SVD of the rows."""

    def __init__(self, x: Array) -> None:
        self.source: Array = x
        self._value: ExactRankReduction[Array] | None = None

    def get(self) -> ExactRankReduction[Array]:
        """The reduction, computed now if nobody asked before."""
        if self._value is None:
            self._value = ExactRankReduction(self.source)
        return self._value


def exact_rank_reduction(
    x: Array, shared: SharedReduction[Array] | None = None
) -> ExactRankReduction[Array]:
    """``shared``'s reduction when it was made for this very ``x``, else a new one."""
    return shared.get() if shared is not None and shared.source is x else ExactRankReduction(x)


def preconditioned_rows(
    x: Array,
    ridge: float,
    *,
    exact_rank: bool = False,
    shared: SharedReduction[Array] | None = None,
) -> tuple[Array, Array, Index | None]:
    """``(X_J, M_J, J)``: a task's rows and ``M = X (XᵀX + ρI)⁻¹`` on its non-zero columns,
    compressed to ``(R, QᵀM)`` when the rows are many (:func:`compress_rows`), or with
    ``exact_rank`` whenever the numerical rank is below the row count
    (:func:`exact_rank_rows`, then :func:`triangular_rows`): with ``Φ = QΨ`` the gradient
    is ``A = ∂R/∂Φ = Q A_Ψ``, so ``Aᵀ M = A_Ψᵀ (Qᵀ M)``.

    ``M`` is computed from all columns and then restricted: with a small ρ its Woodbury form
    cancels ``X/ρ`` against a correction of the same size, so a differently rounded ``M``
    (e.g. from fewer columns) would move the numbers by far more than the other reorderings.
    With ρ = 0 there is nothing to drop (a zero column makes ``XᵀX`` singular, which the
    preconditioner refuses). The exact-rank reduction is ``shared``'s when it was made for
    ``x`` (:func:`exact_rank_reduction`).
    """
    m = InputPreconditioner(x, ridge).apply(x)
    if exact_rank:
        reduced = exact_rank_reduction(x, shared)
        m = m if reduced.columns is None else m[:, reduced.columns]
        for q in (reduced.first, reduced.second):
            m = m if q is None else q.mT @ m
        return reduced.rows, m, reduced.columns
    columns = nonzero_columns(x) if ridge > 0 else None
    if columns is not None:
        x, m = x[:, columns], m[:, columns]
    x, q = compress_rows(x)
    return x, m if q is None else q.mT @ m, columns


def column_positions(columns: Index | None, union: Index | None) -> Index | None:
    """Where a task's ``columns`` sit among the (sorted) ``union`` columns (``None``: all d)
    of the stacked rows; ``None`` when they are the union's own (all columns, or as many)."""
    if columns is None or (union is not None and union.shape[0] == columns.shape[0]):
        return None
    return columns if union is None else namespace(union).searchsorted(union, columns)


def on_columns(m: Array, columns: Index | None, union: Index | None, d: int) -> Array:
    """``m`` (on ``columns``) written into zeros on the ``union`` columns (``None``: all d):
    the rows of one task in the stacked rows of both."""
    position = column_positions(columns, union)
    if position is None:
        return m
    width = d if union is None else union.shape[0]
    xp = namespace(m)
    spread: Array = xp.zeros((m.shape[0], width), dtype=m.dtype, device=array_api_compat.device(m))
    spread[:, position] = m
    return spread
