"""A process's compute threads and heap, set once by the CLI or a sweep's worker (never the
library).

A linear run computes with numpy and scipy alone (issue #30: it never imports torch), so its
threads are the BLAS's, limited with ``threadpoolctl``; a deep run's are torch's intra-op
threads. ``0`` leaves the library's default (all cores).

A deep run's heap keeps what it frees (:func:`keep_freed_memory`): with glibc's defaults a
training step's activations (MB each) are returned to the system when freed and their pages
faulted in again at the next step: ≈ 40,000 page faults per AdamW step of MobileNetV2 (batch
64, 64 × 64 pixels), 12–13 % of its CPU time spent in the kernel (docs/attacks.md, "Search,
budgets, storage").
"""

from __future__ import annotations

import ctypes
import sys

from condimmune.methods.base import ModelFamily

__all__ = ["HEAP_MMAP_BYTES", "HEAP_TRIM_BYTES", "keep_freed_memory", "use_threads"]

HEAP_MMAP_BYTES = 32 << 20
"""Blocks up to this size come from the heap rather than from their own mapping: glibc's
largest ``M_MMAP_THRESHOLD`` on 64-bit systems."""
HEAP_TRIM_BYTES = 1 << 30
"""Free memory at the top of the heap kept, not returned to the system (``M_TRIM_THRESHOLD``):
at most this much more resident memory than the process uses."""
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h


def keep_freed_memory() -> bool:
    """Set glibc's malloc to serve blocks up to :data:`HEAP_MMAP_BYTES` from the heap and to
    keep up to :data:`HEAP_TRIM_BYTES` of freed memory; both fixed, which also stops
    glibc's adjusting them. Whether it was applied: ``False`` off Linux or without glibc's
    ``mallopt`` (nothing changes there)."""
    if not sys.platform.startswith("linux"):
        return False
    try:  # the C library the process already runs on (find_library would spawn ldconfig)
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    kept = bool(mallopt(_M_MMAP_THRESHOLD, HEAP_MMAP_BYTES) == 1)
    return bool(mallopt(_M_TRIM_THRESHOLD, HEAP_TRIM_BYTES) == 1) and kept


def use_threads(threads: int, family: ModelFamily) -> None:
    """Run this process's maths on ``threads`` threads (``0``: the default) for ``family``;
    a deep process's heap keeps freed memory (:func:`keep_freed_memory`)."""
    if family is ModelFamily.DEEP:
        keep_freed_memory()
    if not threads:
        return
    if family is ModelFamily.LINEAR:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=threads, user_api="blas")  # kept for the process's life
        return
    import torch

    torch.set_num_threads(threads)
