"""The deep immunization loop: safetensors checkpoints and resume after an interruption."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from condimmune.deep.backbones import build_model
from condimmune.deep.checkpoint import load_checkpoint
from condimmune.deep.images import KeyedDataset
from condimmune.deep.trainer import FabricOptions, ImmunizeOptions, immunize, make_fabric
from condimmune.methods.registry import configure_method


# ------------------------------------------------------------------ checkpoints and resume
def _tiny_data(seed: int, classes: int) -> KeyedDataset:
    gen = torch.Generator().manual_seed(seed)
    return KeyedDataset(torch.randn(24, 1, 8, 8, generator=gen), torch.arange(24) % classes)


_RESUME_CFG = ImmunizeOptions(
    method=configure_method("condnum", "deep", benign_weight=1e-3, harmful_weight=1.0),
    epochs=2,
    batch_size=8,
    lr=1e-2,
    normalize_covariance=True,
    checkpoint_every=1,
)


def _run(model, ckpt, killed_after=0):
    """Immunize; ``killed_after`` steps (0: all) stands for a kill right after the checkpoint
    of that step (the step cap ends the call exactly there; ``checkpoint_every`` is 1)."""
    return immunize(
        make_fabric(FabricOptions()),
        model,
        _tiny_data(0, 3),
        _tiny_data(1, 2),
        replace(_RESUME_CFG, max_steps=killed_after),
        harmful_classes=2,
        seed=0,
        checkpoint_dir=ckpt,
        fingerprint="tiny",
        progress=False,
    )


def test_resume_after_interruption_reproduces_the_uninterrupted_run(tmp_path) -> None:
    base = build_model("small-cnn", num_classes=3, image_size=8, seed=0)
    straight = copy.deepcopy(base)
    h_straight = _run(straight, None)
    interrupted = copy.deepcopy(base)
    h_first = _run(interrupted, tmp_path, killed_after=4)
    assert h_first.global_step == 4
    resumed = copy.deepcopy(base)  # a fresh process starts again from θ0 ...
    h_resumed = _run(resumed, tmp_path)  # ... and picks up the checkpoint
    assert h_resumed.resumed_from == 4
    assert h_resumed.global_step == h_straight.global_step == 6
    assert h_resumed.task_loss == pytest.approx(h_straight.task_loss, rel=1e-6)
    for (name, a), (_, b) in zip(
        straight.state_dict().items(), resumed.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=name)


def test_checkpoint_is_safetensors_and_refuses_another_config(tmp_path) -> None:
    from safetensors import safe_open

    model = build_model("small-cnn", num_classes=3, image_size=8, seed=0)
    _run(model, tmp_path, killed_after=1)
    with safe_open(tmp_path / "checkpoint.safetensors", framework="pt") as f:
        keys = list(f.keys())
    assert any(k.startswith("model.") for k in keys)
    assert any(k.startswith("optim.") for k in keys)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="different configuration"):
        load_checkpoint(tmp_path, model, opt, "another")


def test_batch_larger_than_the_data_is_refused() -> None:
    cfg = ImmunizeOptions(batch_size=64)
    model = build_model("small-cnn", num_classes=3, image_size=8, seed=0)
    with pytest.raises(ValueError, match="exceeds the data"):
        immunize(
            make_fabric(FabricOptions()),
            model,
            _tiny_data(0, 3),
            _tiny_data(1, 2),
            cfg,
            harmful_classes=2,
            seed=0,
            progress=False,
        )
