"""``cpu_seeded``: torch.manual_seed's CPU draws, inside a fork, with no accelerator seeding."""

import traceback

import pytest
import torch

from condimmune.core.seeding import cpu_seeded


@pytest.mark.parametrize("seed", [0, 7, 2**63 - 1], ids=lambda s: f"seed-{s}")
def test_the_draws_are_torch_manual_seeds_and_the_global_state_is_kept(seed):
    before = torch.random.get_rng_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        expected = (torch.randn(6), torch.randperm(9))
    with cpu_seeded(seed):
        got = (torch.randn(6), torch.randperm(9))
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))
    assert torch.equal(torch.random.get_rng_state(), before)


def test_no_stack_is_recorded_for_a_lazy_accelerator_seeding(monkeypatch):
    """torch.manual_seed on a CUDA build without a device records the caller's stack (about
    3 ms) to seed the device later; the CPU-only seeding records none."""
    calls = []
    real = traceback.format_stack

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(traceback, "format_stack", counting)
    for seed in range(5):
        with cpu_seeded(seed):
            torch.rand(1)
    assert calls == []
