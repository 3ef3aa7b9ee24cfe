"""The deep immunization penalty: dense reference, gradcheck, scale, guard, DDP equivalence."""

from __future__ import annotations

import functools

import pytest
import torch

from condimmune.core.reference import _dense_r_ill, _dense_r_well
from condimmune.deep.backbones import build_model
from condimmune.deep.penalty import (
    StepOptions,
    immunization_penalty,
    normalized_features,
    step_loss,
)
from condimmune.deep.trainer import release_processes
from condimmune.methods.base import ConfiguredMethod
from condimmune.methods.condnum import CondnumDeepOptions
from condimmune.methods.registry import Method, configure_method


def _condnum(benign_weight: float = 5e-5, harmful_weight: float = 2e6) -> ConfiguredMethod:
    return configure_method(
        Method.CONDNUM, "deep", benign_weight=benign_weight, harmful_weight=harmful_weight
    )


def _features(n: int, k: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, k, generator=gen, dtype=torch.float64) @ torch.diag(
        torch.linspace(0.5, 3.0, k, dtype=torch.float64)
    )


def _dense_penalty(pb: torch.Tensor, ph: torch.Tensor, cfg: CondnumDeepOptions) -> torch.Tensor:
    pb, ph = normalized_features(pb), normalized_features(ph)
    return cfg.benign_weight * _dense_r_well(pb.mT @ pb) + cfg.harmful_weight * _dense_r_ill(
        ph.mT @ ph
    )


@pytest.mark.parametrize(
    ("n", "k"), [(6, 12), (12, 6), (8, 20)], ids=["gram-6x12", "dense-12x6", "gram-8x20"]
)
def test_penalty_matches_dense_k_by_k_reference(n: int, k: int) -> None:
    method = _condnum(0.3, 2.0)
    pb = _features(n, k, 0).requires_grad_(True)
    ph = _features(n, k, 1).requires_grad_(True)
    ours = immunization_penalty(method, pb, ph, normalize=True, benign_log_kappa_cap=None).total
    assert isinstance(method.options, CondnumDeepOptions)
    ref = _dense_penalty(pb, ph, method.options)
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=0)
    g_ours = torch.autograd.grad(ours, (pb, ph))
    g_ref = torch.autograd.grad(ref, (pb, ph))
    for a, b in zip(g_ours, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("condnum", {"benign_weight": 0.3, "harmful_weight": 2.0}),
        ("r-ill-only", {"harmful_weight": 2.0}),
        ("opt-kappa", {}),
        ("imma", {}),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_penalty_passes_gradcheck(name: str, options: dict[str, float]) -> None:
    method = configure_method(name, "deep", options)
    pb = _features(5, 7, 2).requires_grad_(True)
    ph = _features(5, 7, 3).requires_grad_(True)
    labels = torch.tensor([0, 1, 2, 0, 1])

    def f(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return immunization_penalty(
            method, a, b, normalize=True, harmful_labels=labels, harmful_classes=3
        ).total

    assert torch.autograd.gradcheck(f, (pb, ph))


def test_normalized_penalty_is_scale_free() -> None:
    pb, ph = _features(6, 10, 4), _features(6, 10, 5)
    a = immunization_penalty(_condnum(), pb, ph, normalize=True).total
    b = immunization_penalty(_condnum(), 7.0 * pb, 0.1 * ph, normalize=True).total
    torch.testing.assert_close(a, b)


def test_guard_drops_the_harmful_term_above_the_cap() -> None:
    cfg = _condnum(0.0, 1.0)
    pb, ph = _features(6, 10, 6), _features(6, 10, 7)
    on = immunization_penalty(cfg, pb, ph, normalize=True, benign_log_kappa_cap=1e9).total
    off = immunization_penalty(cfg, pb, ph, normalize=True, benign_log_kappa_cap=-1.0).total
    assert float(on) > 0 and float(off) == 0.0
    unguarded = configure_method(
        Method.CONDNUM, "deep", benign_weight=0.0, harmful_weight=1.0, benign_guard=False
    )
    kept = immunization_penalty(unguarded, pb, ph, normalize=True, benign_log_kappa_cap=-1.0)
    assert float(kept.total) == float(on)


def test_diverged_features_raise_a_clear_error() -> None:
    pb = _features(4, 6, 0)
    pb[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        immunization_penalty(_condnum(), pb, _features(4, 6, 1))


# ------------------------------------------------------------------------- data parallel
def _tiny_batch() -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    xb = torch.randn(8, 1, 8, 8, generator=gen)
    xh = torch.randn(8, 1, 8, 8, generator=gen)
    return (xb, torch.arange(8) % 3), (xh, torch.arange(8) % 2)


_DDP_CFG = StepOptions(_condnum(0.5, 3.0), normalize_covariance=True)


def _ddp_worker(fabric, cfg: StepOptions, out: str) -> None:
    """Penalty and gradients of one step on this process's rows ``rank::world``, written by
    rank 0 to ``out`` (results returned through the launcher's pipe must be tiny)."""
    from safetensors.torch import save_file

    model = build_model("small-cnn", num_classes=3, image_size=8, seed=0).double()
    model.freeze_for_immunization()
    model.eval()
    wrapped = fabric.setup_module(model)
    (xb, yb), (xh, yh) = _tiny_batch()
    r, w = fabric.global_rank, fabric.world_size
    batch_b = (xb[r::w].double(), yb[r::w])
    batch_h = (xh[r::w].double(), yh[r::w])
    loss, _task, penalty = step_loss(fabric, wrapped, batch_b, batch_h, cfg, harmful_classes=2)
    fabric.backward(loss)
    grads = {n: p.grad.contiguous() for n, p in model.named_parameters() if p.grad is not None}
    if fabric.global_rank == 0:
        save_file({**grads, "penalty": penalty.total.detach().reshape(1)}, out)
    release_processes(fabric)


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_on_the_concatenated_batch(tmp_path) -> None:
    from lightning.fabric import Fabric
    from safetensors.torch import load_file

    # frozen option dataclasses travel inside a partial: Fabric's launcher refuses them as
    # direct arguments
    Fabric(accelerator="cpu", devices=1).launch(
        functools.partial(_ddp_worker, cfg=_DDP_CFG, out=str(tmp_path / "one"))
    )
    ddp = Fabric(accelerator="cpu", devices=2, strategy="ddp_spawn")
    ddp.launch(functools.partial(_ddp_worker, cfg=_DDP_CFG, out=str(tmp_path / "two")))
    one, two = load_file(tmp_path / "one"), load_file(tmp_path / "two")
    assert one.keys() == two.keys() and len(one) > 1
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-7, atol=1e-10, msg=name)


def test_penalty_on_half_the_batch_differs_so_the_gather_is_needed() -> None:
    (xb, _), (xh, _) = _tiny_batch()
    model = build_model("small-cnn", num_classes=3, image_size=8, seed=0).double().eval()
    with torch.no_grad():
        fb, fh = model.features(xb.double()), model.features(xh.double())
    cfg = _condnum(0.0, 1.0)
    full = immunization_penalty(cfg, fb, fh, normalize=True).total
    half = immunization_penalty(cfg, fb[::2], fh[::2], normalize=True).total
    assert abs(float(full) - float(half)) > 1e-3 * abs(float(full)), (float(full), float(half))
