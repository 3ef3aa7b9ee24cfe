"""Seeded draws from torch's default CPU generator without touching global state.

``torch.manual_seed`` seeds every backend, and on a build with CUDA (or XPU, MTIA) support
but no initialised device it queues the accelerator seeding lazily, recording the caller's
stack each time (``traceback.format_stack``): about 3 ms per call here, which was 68 s of a
170-s attack of a MobileNetV2 run that seeds each image's transform
(:class:`~condimmune.deep.images.KeyedDataset`). It also changes the accelerators' generators,
which ``torch.random.fork_rng(devices=[])`` does not restore. The draws made on the CPU are
the same either way: ``torch.manual_seed(s)`` ends with ``default_generator.manual_seed(s)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["cpu_seeded"]


@contextmanager
def cpu_seeded(seed: int) -> Iterator[None]:
    """Inside the block, torch's default CPU generator starts from ``seed``; afterwards it is
    back where it was (a forked state), and no other generator was touched."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(int(seed))
        yield
