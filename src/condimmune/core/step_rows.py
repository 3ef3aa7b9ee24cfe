r"""The rows of the regularizer step (:mod:`condimmune.core.step`) and their features.

Each task's rows are reduced once (:func:`~condimmune.core.rows.preconditioned_rows`): its
non-zero columns, with ``M = X(XᵀX + ρI)⁻¹`` beside them, and on the fast path its
exact-rank rows rotated to an upper-trapezoidal ``T``. One block of stacked rows serves
each set of active regularizers, so ``Aᵀ M`` is one product. The features
:math:`\Phi = XW^\top` come from one product on the stacked block, or, when a task takes the
fast path, task by task on each task's own columns: ``T Wᵀ`` by ``dtrmm``
(:func:`~condimmune.core.blas.trapezoid_times_transpose`), the other task by a general
product. The entries left out are the exact zeros the stacked block holds in the other
task's columns.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from condimmune.core.blas import TriangularRows, product_rows, rows_times_transpose
from condimmune.core.rows import column_positions, on_columns, preconditioned_rows

__all__ = ["RowBlock", "StepRows"]

_TASKS = ("benign", "harmful")


@dataclass(frozen=True)
class RowBlock:
    """The stacked rows of the tasks whose regularizer is on: ``X`` and ``M`` on ``columns``
    (``None``: all), the first ``n_benign`` rows benign."""

    x: Tensor
    m: Tensor
    columns: Tensor | None
    n_benign: int


class StepRows:
    """Both tasks' reduced rows: a :class:`RowBlock` per ``(benign on, harmful on)`` and,
    for each task on the fast path (``fast``), its triangular rows.

    Args:
        xs: the benign and harmful rows (n × d each).
        ridges: their ρ in ``(XᵀX + ρI)⁻¹``.
        dim: d.
        fast: per task name, whether it takes the fast path (exact-rank triangular rows).
    """

    def __init__(
        self,
        xs: tuple[Tensor, Tensor],
        ridges: tuple[float, float],
        dim: int,
        fast: dict[str, bool],
    ) -> None:
        (xp, mp, cp), (xh, mh, ch) = (
            preconditioned_rows(x, ridge, exact_rank=fast[name])
            for x, ridge, name in zip(xs, ridges, _TASKS, strict=True)
        )
        union = None if cp is None or ch is None else torch.unique(torch.cat([cp, ch]))
        if union is not None and union.numel() == dim:
            union = None

        def stack(p: Tensor, h: Tensor) -> Tensor:
            return torch.cat([on_columns(p, cp, union, dim), on_columns(h, ch, union, dim)])

        self._blocks = {
            (True, False): RowBlock(xp, mp, cp, xp.shape[0]),
            (False, True): RowBlock(xh, mh, ch, 0),
            (True, True): RowBlock(stack(xp, xh), stack(mp, mh), union, xp.shape[0]),
        }
        # each task on its own columns, a fast task's rows as a triangle for dtrmm, and where
        # those columns sit in the stacked block's (None: the same columns)
        self._tasks: dict[str, Tensor | TriangularRows] = {
            name: product_rows(x, fast[name]) for name, x in (("benign", xp), ("harmful", xh))
        }
        self._positions = {
            "benign": column_positions(cp, union),
            "harmful": column_positions(ch, union),
        }
        self._by_task = any(isinstance(x, TriangularRows) for x in self._tasks.values())

    def block(self, key: tuple[bool, bool]) -> RowBlock:
        """The rows of the active regularizers ``key`` = (benign on, harmful on)."""
        return self._blocks[key]

    def features(self, w_block: Tensor, key: tuple[bool, bool], phi: Tensor) -> None:
        """Write ``Φ`` of the block ``key`` into ``phi``; ``w_block``: the weight on the block's
        columns J without the rows that are zero there
        (:func:`~condimmune.core.rows.live_weight`), of which each task reads its own columns."""
        block = self._blocks[key]
        if not self._by_task:
            torch.mm(block.x, w_block.mT, out=phi)
            return
        n = block.n_benign
        for name, on, rows in zip(_TASKS, key, (slice(0, n), slice(n, None)), strict=True):
            if not on:
                continue
            # a single-task block is on that task's own columns
            position = self._positions[name] if all(key) else None
            w_task = w_block if position is None else w_block.index_select(1, position)
            rows_times_transpose(self._tasks[name], w_task, out=phi[rows])
