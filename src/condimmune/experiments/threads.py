"""A process's compute threads, set once by the CLI or a sweep's worker (never the library).

A linear run computes with numpy and scipy alone (issue #30: it never imports torch), so its
threads are the BLAS's, limited with ``threadpoolctl``; a deep run's are torch's intra-op
threads. ``0`` leaves the library's default (all cores).
"""

from __future__ import annotations

from condimmune.methods.base import ModelFamily

__all__ = ["use_threads"]


def use_threads(threads: int, family: ModelFamily) -> None:
    """Run this process's maths on ``threads`` threads (``0``: the default) for ``family``."""
    if not threads:
        return
    if family is ModelFamily.LINEAR:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=threads, user_api="blas")  # kept for the process's life
        return
    import torch

    torch.set_num_threads(threads)
