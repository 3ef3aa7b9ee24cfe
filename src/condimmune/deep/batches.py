"""The order in which training reads its data: one seeded permutation per (seed, epoch,
stream), sliced into this process's share of each global batch, so that a resumed or a
data-parallel run reads exactly what one uninterrupted process would."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum
from typing import TypeAlias

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from condimmune.deep.images import KeyedDataset

__all__ = ["Batch", "Batches", "Stream", "epoch_order", "loader"]

Batch: TypeAlias = tuple[Tensor, Tensor]


class Stream(IntEnum):
    """Which data a permutation orders (each has its own random stream)."""

    BENIGN = 0
    HARMFUL = 1
    PRETRAIN = 2


_SEED_STRIDE, _EPOCH_STRIDE, _CYCLE_STRIDE = 1_000_003, 7, 1000
"""``epoch_order``'s seed is ``seed·1,000,003 + epoch·7 + stream``, and the ``k``-th pass of a
harmful stream that wraps around within an epoch counts as epoch ``epoch·1000 + k``: one
generator per (seed, epoch, stream), and a resumed run redraws the same order."""


def epoch_order(n: int, seed: int, epoch: int, stream: int) -> Tensor:
    """The permutation of ``n`` samples used in ``epoch`` of ``stream`` (:class:`Stream`)."""
    gen = torch.Generator().manual_seed(seed * _SEED_STRIDE + epoch * _EPOCH_STRIDE + stream)
    return torch.randperm(n, generator=gen)


@dataclass(frozen=True, kw_only=True)
class Batches:
    """Batch sampler of this process's share (``rank`` of ``world``) of each global batch,
    keyed ``(epoch, index)``; starts at step ``start`` (resume) and drops the last
    incomplete global batch."""

    n: int
    batch: int
    seed: int
    epoch: int
    stream: Stream
    steps: int
    start: int = 0
    rank: int = 0
    world: int = 1

    def __len__(self) -> int:
        return self.steps - self.start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        per_epoch = self.n // self.batch
        cached: tuple[int, Tensor] | None = None
        for step in range(self.start, self.steps):
            cycle, pos = divmod(step, per_epoch)  # the harmful stream may wrap around
            if cached is None or cached[0] != cycle:
                cached = (
                    cycle,
                    epoch_order(self.n, self.seed, self.epoch * _CYCLE_STRIDE + cycle, self.stream),
                )
            order = cached[1]
            rows = order[pos * self.batch : (pos + 1) * self.batch][self.rank :: self.world]
            yield [(self.epoch, int(i)) for i in rows]


def loader(dataset: KeyedDataset, sampler: Batches, workers: int) -> DataLoader[Batch]:
    """A data loader of ``dataset`` in the order of ``sampler``."""
    return DataLoader(dataset, batch_sampler=sampler, num_workers=workers)
