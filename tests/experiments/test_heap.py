"""A deep process's heap keeps what it frees (experiments/threads.py: keep_freed_memory):
counted in page faults over training steps, each case in its own process (the setting is
the process's)."""

from __future__ import annotations

import subprocess
import sys

import pytest

STEPS = """
import resource, sys, torch
torch.set_num_threads(1)
if sys.argv[1] == "keep":
    from condimmune.experiments.threads import keep_freed_memory
    assert keep_freed_memory()
net = torch.nn.Sequential(
    torch.nn.Conv2d(3, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(64, 64, 3, padding=1),
    torch.nn.Flatten(), torch.nn.Linear(64 * 32 * 32, 10),
)
x = torch.rand(16, 3, 32, 32)
def step():
    net.zero_grad()
    net(x).square().sum().backward()
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", STEPS, mode], capture_output=True, text=True, check=True
    )
    return int(done.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc is Linux's")
def test_training_steps_fault_their_pages_in_once_with_the_heap_kept():
    """With glibc's defaults each step's activations and gradients (4 MB here) are mapped,
    freed and faulted in again (≈ 3,000 faults a step on the machine this was written on);
    kept in the heap, the steps after the first reuse them."""
    default, kept = _faults("default"), _faults("keep")
    assert kept * 4 < default, (default, kept)
