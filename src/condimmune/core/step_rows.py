r"""The rows of the regularizer step (:mod:`condimmune.core.step`) and their features.

Each task's rows are reduced once (:func:`~condimmune.core.rows.preconditioned_rows`): its
non-zero columns, with ``M = X(XᵀX + ρI)⁻¹`` beside them, and on the fast path its
exact-rank rows rotated to an upper-trapezoidal ``T``. One block of stacked rows serves
each set of active regularizers, so ``Aᵀ M`` is one product. The features
:math:`\Phi = XW^\top` come from one product on the stacked block, or, when a task takes the
fast path, task by task on each task's own columns: ``T Wᵀ`` by ``dtrmm``
(:func:`~condimmune.core.blas.trapezoid_times_transpose`), the other task by a general
product. The entries left out are the exact zeros the stacked block holds in the other
task's columns. Rows are torch tensors or numpy arrays (:mod:`condimmune.core.arrays`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic

from condimmune.core.arrays import Array, matmul_into, namespace
from condimmune.core.blas import TriangularRows, product_rows, rows_times_transpose
from condimmune.core.rows import (
    Index,
    SharedReduction,
    column_positions,
    on_columns,
    preconditioned_rows,
)

__all__ = ["RowBlock", "StepRows"]

_TASKS = ("benign", "harmful")


@dataclass(frozen=True)
class RowBlock(Generic[Array]):
    """The stacked rows of the tasks whose regularizer is on: ``X`` and ``M`` on ``columns``
    (``None``: all), the first ``n_benign`` rows benign."""

    x: Array
    m: Array
    columns: Index | None
    n_benign: int


class StepRows(Generic[Array]):
    """Both tasks' reduced rows: a :class:`RowBlock` per ``(benign on, harmful on)`` and,
    for each task on the fast path (``fast``), its triangular rows.

    Args:
        xs: the benign and harmful rows (n × d each).
        ridges: their ρ in ``(XᵀX + ρI)⁻¹``.
        dim: d.
        fast: per task name, whether it takes the fast path (exact-rank triangular rows).
        shared: the tasks' exact-rank reductions where the caller shares its own
            (:class:`~condimmune.core.rows.SharedReduction`).
    """

    def __init__(
        self,
        xs: tuple[Array, Array],
        ridges: tuple[float, float],
        dim: int,
        fast: dict[str, bool],
        shared: tuple[SharedReduction[Array] | None, SharedReduction[Array] | None] = (None, None),
    ) -> None:
        (xp, mp, cp), (xh, mh, ch) = (
            preconditioned_rows(x, ridge, exact_rank=fast[name], shared=one)
            for x, ridge, name, one in zip(xs, ridges, _TASKS, shared, strict=True)
        )
        xp_ = namespace(xs[0])
        union = (
            None if cp is None or ch is None else xp_.sort(xp_.unique_values(xp_.concat([cp, ch])))
        )
        if union is not None and union.shape[0] == dim:
            union = None

        def stack(p: Array, h: Array) -> Array:
            stacked: Array = xp_.concat(
                [on_columns(p, cp, union, dim), on_columns(h, ch, union, dim)]
            )
            return stacked

        self._blocks: dict[tuple[bool, bool], RowBlock[Array]] = {
            (True, False): RowBlock(xp, mp, cp, xp.shape[0]),
            (False, True): RowBlock(xh, mh, ch, 0),
            (True, True): RowBlock(stack(xp, xh), stack(mp, mh), union, xp.shape[0]),
        }
        # each task on its own columns, a fast task's rows as a triangle for dtrmm, and where
        # those columns sit in the stacked block's (None: the same columns)
        self._tasks: dict[str, Array | TriangularRows[Array]] = {
            name: product_rows(x, fast[name]) for name, x in (("benign", xp), ("harmful", xh))
        }
        self._positions = {
            "benign": column_positions(cp, union),
            "harmful": column_positions(ch, union),
        }
        self._by_task = any(isinstance(x, TriangularRows) for x in self._tasks.values())

    def block(self, key: tuple[bool, bool]) -> RowBlock[Array]:
        """The rows of the active regularizers ``key`` = (benign on, harmful on)."""
        return self._blocks[key]

    def features(self, w_block: Array, key: tuple[bool, bool], phi: Array) -> None:
        """Write ``Φ`` of the block ``key`` into ``phi``; ``w_block``: the weight on the block's
        columns J without the rows that are zero there
        (:func:`~condimmune.core.rows.live_weight`), of which each task reads its own columns."""
        block = self._blocks[key]
        if not self._by_task:
            matmul_into(block.x, w_block.mT, phi)
            return
        n = block.n_benign
        for name, on, rows in zip(_TASKS, key, (slice(0, n), slice(n, None)), strict=True):
            if not on:
                continue
            # a single-task block is on that task's own columns
            position = self._positions[name] if all(key) else None
            w_task = (
                w_block if position is None else namespace(w_block).take(w_block, position, axis=1)
            )
            rows_times_transpose(self._tasks[name], w_task, out=phi[rows])
