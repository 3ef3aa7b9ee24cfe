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

from condimmune.core.blas import TriangularRows, trapezoid_times_transpose
from condimmune.core.rows import on_columns, preconditioned_rows

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
        # each task on its own columns; a fast task's rows as a triangle for dtrmm
        self._tasks: dict[str, tuple[Tensor | TriangularRows, Tensor | None]] = {
            name: (TriangularRows(x) if fast[name] and x.shape[0] <= x.shape[1] else x, c)
            for name, x, c in (("benign", xp, cp), ("harmful", xh, ch))
        }
        self._by_task = any(isinstance(x, TriangularRows) for x, _ in self._tasks.values())

    def block(self, key: tuple[bool, bool]) -> RowBlock:
        """The rows of the active regularizers ``key`` = (benign on, harmful on)."""
        return self._blocks[key]

    def features(
        self,
        weight: Tensor,
        live_rows: tuple[Tensor, Tensor | None],
        key: tuple[bool, bool],
        phi: Tensor,
    ) -> None:
        """Write ``Φ`` of the block ``key`` into ``phi``. ``live_rows``:
        :func:`~condimmune.core.rows.live_weight`'s ``(W_RJ, R)`` on the block's columns J
        (reused for a task whose columns are J)."""
        block = self._blocks[key]
        w_block, live = live_rows
        if not self._by_task:
            torch.mm(block.x, w_block.mT, out=phi)
            return
        w = weight if live is None else weight.index_select(0, live)
        n = block.n_benign
        for name, on, rows in zip(_TASKS, key, (slice(0, n), slice(n, None)), strict=True):
            if not on:
                continue
            x, columns = self._tasks[name]
            if columns is block.columns:
                w_task = w_block
            else:
                w_task = w if columns is None else w.index_select(1, columns)
            if isinstance(x, TriangularRows):
                trapezoid_times_transpose(x, w_task, out=phi[rows])
            else:
                torch.mm(x, w_task.mT, out=phi[rows])
