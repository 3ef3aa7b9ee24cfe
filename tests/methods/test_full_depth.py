"""``full-depth``: its pieces against direct computations, and its loop on a tiny problem."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from condimmune.core.errors import ArgumentError
from condimmune.deep.backbones import build_model
from condimmune.deep.checkpoint import DeepHistory
from condimmune.deep.images import KeyedDataset
from condimmune.deep.taps import record_taps, tap_names
from condimmune.deep.trainer import FabricOptions, ImmunizeOptions, make_fabric
from condimmune.deep.whole_network import _Guard, _guard_step, immunize_whole_network
from condimmune.methods.full_depth import (
    FullDepthObjective,
    FullDepthOptions,
    InnerOptimizer,
    InnerState,
    anchor_loss,
    guard_should_roll_back,
    inner_step,
    kl_to_uniform,
    tap_weights,
)
from condimmune.methods.registry import configure_method
from condimmune.methods.tap_adversary import (
    pool_activations,
    ridge_heldout_error,
    standardised_union,
)


def _problem(seed: int, n: int, k: int, classes: int):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, k, generator=gen, dtype=torch.float64) * torch.linspace(0.1, 3.0, k)
    y = torch.arange(n) % classes
    x = x + F.one_hot(y, classes).double() @ torch.randn(classes, k, generator=gen).double()
    return x, y


@pytest.mark.parametrize(
    ("n", "k", "classes", "ridge"),
    [(40, 5, 3, 1e-3), (30, 12, 4, 0.1), (16, 20, 2, 1e-2), (12, 300, 3, 0.1)],
    ids=["tall", "square-ish", "wide-features", "dual-form-300-features"],
)
def test_tap_adversary_equals_a_directly_fitted_ridge_probe(n, k, classes, ridge) -> None:
    x, y = _problem(0, 2 * n, k, classes)
    fit_x, fit_y, held_x, held_y = x[:n], y[:n], x[n:], y[n:]
    got = float(ridge_heldout_error(fit_x, fit_y, held_x, held_y, classes, ridge))
    # direct: numpy least squares with an unpenalised intercept column and ridge rows
    # that penalise only the weights, float64
    centred = fit_x.numpy() - fit_x.numpy().mean(axis=0)
    lam = ridge * np.trace(centred.T @ centred) / k
    a = np.hstack([fit_x.numpy(), np.ones((n, 1))])
    penalty = np.hstack([math.sqrt(lam) * np.eye(k), np.zeros((k, 1))])
    targets = np.eye(classes)[fit_y.numpy()]
    stacked = np.vstack([a, penalty])
    padded = np.vstack([targets, np.zeros((k, classes))])
    w = np.linalg.lstsq(stacked, padded, rcond=None)[0]
    held = np.hstack([held_x.numpy(), np.ones((len(held_y), 1))])
    held_targets = np.eye(classes)[held_y.numpy()]
    error = ((held @ w - held_targets) ** 2).sum()
    prior = ((targets.mean(axis=0, keepdims=True) - held_targets) ** 2).sum()
    assert got == pytest.approx(error / prior, rel=1e-9)


def test_tap_adversary_does_not_change_when_the_features_are_rescaled() -> None:
    x, y = _problem(1, 60, 6, 3)
    base = ridge_heldout_error(x[:30], y[:30], x[30:], y[30:], 3, 1e-3)
    scaled = ridge_heldout_error(7.0 * x[:30], y[:30], 7.0 * x[30:], y[30:], 3, 1e-3)
    assert float(scaled) == pytest.approx(float(base), rel=1e-12)


def test_tap_adversary_gradient_matches_finite_differences() -> None:
    x, y = _problem(2, 24, 4, 3)
    fit = x[:12].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda f: ridge_heldout_error(f, y[:12], x[12:], y[12:], 3, 1e-2), (fit,)
    )


def test_union_inputs_are_the_taps_standardised_on_the_fit_rows() -> None:
    x, _ = _problem(4, 40, 7, 3)
    taps = [x[:, :3], x[:, 3:]]
    fit, held = standardised_union([t[:25] for t in taps], [t[25:] for t in taps])
    mean, std = x[:25].mean(dim=0), x[:25].std(dim=0)
    torch.testing.assert_close(fit, (x[:25] - mean) / std, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(held, (x[25:] - mean) / std, rtol=1e-12, atol=1e-12)
    dead = torch.cat([x, torch.full((40, 1), 3.0, dtype=torch.float64)], dim=1)
    fit, held = standardised_union([dead[:25]], [dead[25:]])
    assert torch.isfinite(fit).all() and torch.isfinite(held).all()
    assert float(fit[:, -1].abs().max()) == 0.0 and float(held[:, -1].abs().max()) == 0.0


@pytest.mark.parametrize(
    "scales",
    [[1e-4, 1.0, 1.0, 1.0, 1.0, 1.0], [3.0, -0.5, 1e3, 2.0, 1e-2, -7.0]],
    ids=["one-feature-shrunk", "mixed-with-signs"],
)
def test_union_adversary_is_blind_to_per_feature_scales(scales) -> None:
    x, y = _problem(5, 80, 6, 3)
    d = torch.tensor(scales, dtype=torch.float64)

    def union_error(a: Tensor) -> float:
        fit, held = standardised_union([a[:40, :2], a[:40, 2:]], [a[40:, :2], a[40:, 2:]])
        return float(ridge_heldout_error(fit, y[:40], held, y[40:], 3, 0.1))

    assert union_error(x * d) == pytest.approx(union_error(x), rel=1e-9)


def test_shrinking_an_informative_feature_hides_it_from_the_raw_probe_only() -> None:
    """Why the union probe standardises: the least-noisy feature, shrunk 10⁴-fold, falls
    under the trace-relative ridge of the raw probe (its error rises), not under the
    standardised one (its error does not change)."""
    x, y = _problem(5, 80, 6, 3)
    shrunk = x.clone()
    shrunk[:, 0] *= 1e-4

    def raw(a: Tensor) -> float:
        return float(ridge_heldout_error(a[:40], y[:40], a[40:], y[40:], 3, 1e-3))

    def union(a: Tensor) -> float:
        fit, held = standardised_union([a[:40]], [a[40:]])
        return float(ridge_heldout_error(fit, y[:40], held, y[40:], 3, 1e-3))

    assert raw(shrunk) > raw(x) + 0.05
    assert union(shrunk) == pytest.approx(union(x), rel=1e-9)


def test_union_adversary_enters_the_tap_terms_with_its_weight() -> None:
    x, y = _problem(6, 48, 6, 3)
    taps = [x[:, :2], x[:, 2:]]  # 8 benign rows, then 40 harmful rows
    original = [t[:8] for t in taps]
    labels = y[8:]
    off = FullDepthObjective(FullDepthOptions(), 3)
    on = FullDepthObjective(FullDepthOptions(union_weight=2.5, union_ridge=0.3), 3)
    without, mean_without = off.tap_terms(taps, original, labels, 8)
    with_union, mean_with = on.tap_terms(taps, original, labels, 8)
    fit, held = standardised_union([t[8:28] for t in taps], [t[28:] for t in taps])
    error = ridge_heldout_error(fit, labels[:20], held, labels[20:], 3, 0.3)
    assert float(with_union) == pytest.approx(float(without - 2.5 * error.clamp(max=1.0)))
    assert mean_with == pytest.approx((2 * mean_without + float(error)) / 3)


def test_union_adversary_on_a_grid_reads_each_tap_pooled_to_union_dims() -> None:
    """``union_dims > 0``: the union probe sees each convolutional tap as a ``c × s × s``
    grid (here 2 × 2 of a 4 × 4 map), the anchor and the per-tap probes still its mean."""
    gen = torch.Generator().manual_seed(3)
    maps = [0.1 * torch.randn(48, c, 4, 4, generator=gen, dtype=torch.float64) for c in (2, 3)]
    labels = torch.arange(40) % 3
    # the class is where a +1 / −1 pair of 2 × 2 blocks lies: every spatial mean is noise
    for row, label in enumerate(labels.tolist()):
        plus, minus = [(0, 0), (0, 2), (2, 0)][label], (2, 2)
        for m in maps:
            m[8 + row, :, plus[0] : plus[0] + 2, plus[1] : plus[1] + 2] += 1.0
            m[8 + row, :, minus[0] : minus[0] + 2, minus[1] : minus[1] + 2] -= 1.0
    original = [m[:8] for m in maps]
    options = {"union_weight": 1.5, "union_ridge": 0.2}
    mean_only = FullDepthObjective(FullDepthOptions(**options), 3)
    grid = FullDepthObjective(FullDepthOptions(**options, union_dims=12), 3)
    plain, _ = FullDepthObjective(FullDepthOptions(), 3).tap_terms(maps, original, labels, 8)
    on_grid, _ = grid.tap_terms(maps, original, labels, 8)
    on_mean, _ = mean_only.tap_terms(maps, original, labels, 8)
    cells = [pool_activations(m[8:], 12) for m in maps]
    assert [c.shape[1] for c in cells] == [2 * 4, 3 * 4]
    fit, held = standardised_union([c[:20] for c in cells], [c[20:] for c in cells])
    error = ridge_heldout_error(fit, labels[:20], held, labels[20:], 3, 0.2)
    assert float(on_grid) == pytest.approx(float(plain - 1.5 * error.clamp(max=1.0)))
    assert float(error) < 0.5  # the grid shows the harmful signal the means hide
    assert float(on_mean) == pytest.approx(float(plain - 1.5))  # the mean union: chance


def test_dual_form_gradient_matches_finite_differences() -> None:
    x, y = _problem(8, 16, 40, 3)  # 8 fit rows, 40 features: the n × n solve
    fit = x[:8].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda f: ridge_heldout_error(f, y[:8], x[8:], y[8:], 3, 1e-2), (fit,)
    )


def test_union_adversary_gradient_matches_finite_differences() -> None:
    x, y = _problem(7, 24, 4, 3)
    fit = x[:12].clone().requires_grad_(True)

    def error(f: Tensor) -> Tensor:
        a, b = standardised_union([f], [x[12:]])
        return ridge_heldout_error(a, y[:12], b, y[12:], 3, 0.1)

    assert torch.autograd.gradcheck(error, (fit,))


@pytest.mark.parametrize("kind", list(InnerOptimizer), ids=lambda k: k.value)
def test_simulated_attackers_update_equals_a_plain_optimizer_step(kind) -> None:
    gen = torch.Generator().manual_seed(3)
    start = torch.randn(5, 4, generator=gen)
    grads = [torch.randn(5, 4, generator=gen) for _ in range(4)]
    param = torch.nn.Parameter(start.clone())
    optimizer = (
        torch.optim.SGD([param], lr=0.05, momentum=0.9, nesterov=True)
        if kind is InnerOptimizer.SGD
        else torch.optim.AdamW([param], lr=0.05)
    )
    ours, state = start.clone(), InnerState()
    for grad in grads:
        param.grad = grad.clone()
        optimizer.step()
        ours = inner_step(kind, ours, grad, state, 0.05)
        torch.testing.assert_close(ours, param.detach(), rtol=1e-6, atol=1e-7)
    assert not ours.requires_grad


def test_kl_to_uniform_is_zero_at_uniform_and_bounded_by_log_c() -> None:
    assert float(kl_to_uniform(torch.zeros(3, 5))) == pytest.approx(0.0, abs=1e-7)
    sure = torch.tensor([[1e4, 0.0, 0.0, 0.0]])
    assert float(kl_to_uniform(sure)) == pytest.approx(math.log(4), rel=1e-6)


def test_anchor_is_zero_at_theta0_and_weights_later_taps_more() -> None:
    taps = [torch.ones(4, 3), torch.ones(4, 2)]
    assert float(anchor_loss(taps, taps)) == 0.0
    moved = [taps[0] * 2, taps[1]]
    assert float(anchor_loss(moved, taps)) == pytest.approx(tap_weights(2)[0] * 1.0)
    assert tap_weights(3) == pytest.approx([1 / 3, 2 / 3, 1.0])
    with pytest.raises(ValueError, match="as many taps"):
        anchor_loss(taps, taps[:1])


@pytest.mark.parametrize(
    ("original", "now", "points", "roll_back"),
    [(0.95, 0.94, 2.0, False), (0.95, 0.92, 2.0, True), (0.95, 0.97, 2.0, False)],
    ids=["one-point-drop", "three-point-drop", "better"],
)
def test_guard_rule(original, now, points, roll_back) -> None:
    assert guard_should_roll_back(original, now, points) is roll_back


def test_options_refuse_an_empty_learning_rate_range() -> None:
    with pytest.raises(ValueError, match="simulate_lr_min"):
        configure_method("full-depth", "deep", simulate_lr_min=1.0, simulate_lr_max=0.1)


# ------------------------------------------------------------------------- the loop
def _images(seed: int, n: int, classes: int) -> KeyedDataset:
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    x = torch.randn(n, 1, 8, 8, generator=gen) + y.view(-1, 1, 1, 1).float()
    return KeyedDataset(x, y)


def _cfg(**options: object) -> ImmunizeOptions:
    method = configure_method("full-depth", "deep", **options)
    return ImmunizeOptions(method=method, epochs=2, batch_size=8, lr=1e-2)


def test_taps_are_the_block_outputs_in_depth_order() -> None:
    model = build_model("small-cnn", num_classes=3, image_size=8, seed=0).eval()
    x = _images(0, 4, 3).images
    with record_taps(model) as taps:
        features, _ = model(x)
    assert [t.shape[1] for t in taps] == [16, 32, 128]
    torch.testing.assert_close(pool_activations(taps[-1]), features)
    torch.testing.assert_close(taps[0], model.body.block1(x))


@pytest.mark.parametrize(
    ("shape", "dims", "pooled_shape"),
    [
        ((2, 32, 7, 7), 0, (2, 32)),
        ((2, 32, 7, 7), 2048, (2, 32 * 7 * 7)),
        ((2, 64, 7, 7), 2048, (2, 64 * 5 * 5)),
        ((2, 256, 14, 14), 2048, (2, 256 * 2 * 2)),
        ((2, 4096, 4, 4), 2048, (2, 4096)),  # at least 1 × 1
        ((2, 197, 768), 2048, (2, 768)),  # tokens averaged
        ((2, 197, 768), 0, (2, 768)),
        ((2, 10), 5, (2, 10)),
    ],
    ids=str,
)
def test_pooling_keeps_at_most_dims_values_per_image(shape, dims, pooled_shape) -> None:
    assert pool_activations(torch.randn(*shape), dims).shape == pooled_shape


def test_pooling_to_no_dims_is_the_spatial_mean_and_a_grid_is_block_means() -> None:
    a = torch.randn(3, 4, 6, 6, dtype=torch.float64)
    assert torch.equal(pool_activations(a), a.mean(dim=(2, 3)))
    grid = pool_activations(a, 4 * 9).reshape(3, 4, 3, 3)  # 2 × 2 blocks of the 6 × 6 map
    torch.testing.assert_close(grid[:, :, 1, 2], a[:, :, 2:4, 4:6].mean(dim=(2, 3)))
    with pytest.raises(ValueError, match="2–4 dimensions"):
        pool_activations(torch.zeros(1, 1, 1, 1, 1))


def test_simulated_attack_leaves_the_model_untouched_and_returns_body_gradients() -> None:
    model = build_model("small-cnn", num_classes=3, image_size=8, seed=0).eval()
    before = copy.deepcopy(model.state_dict())
    data = _images(1, 16, 2)
    objective = FullDepthObjective(FullDepthOptions(simulate_steps=2), 2)
    grads, value = objective.simulated_attack(
        model,
        model.feature_dim,
        (data.images[:8], data.labels[:8]),
        data.images[8:],
        torch.Generator().manual_seed(0),
    )
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, before[name])
    assert not model.training
    assert grads and all(name.startswith("body.") for name in grads)
    assert 0.0 <= value <= math.log(2)


def test_whole_network_loop_trains_every_block_and_records_its_terms() -> None:
    model = build_model("small-cnn", num_classes=3, image_size=8, seed=0)
    start = copy.deepcopy(model.state_dict())
    benign = _images(2, 24, 3)
    history = immunize_whole_network(
        make_fabric(FabricOptions()),
        model,
        benign,
        _images(3, 16, 2),
        benign,
        _cfg(guard_points=100.0),
        harmful_classes=2,
        seed=0,
        progress=False,
    )
    assert history.global_step == 6 and len(history.tap_error) == 6
    assert history.rollbacks == 0
    moved = {k for k, v in model.state_dict().items() if not torch.equal(v, start[k])}
    assert "body.block1.0.weight" in moved and "body.block3.0.weight" in moved


def test_guard_rolls_back_to_the_last_checked_state_and_halves_the_lr() -> None:
    model = build_model("small-cnn", num_classes=3, image_size=8, seed=0).eval()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    snapshot = (copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict()))
    x = _images(4, 4, 3).images
    # each image twice with two labels: no model scores above 0.5
    failing = _Guard(torch.cat([x, x]), torch.cat([torch.zeros(4), torch.ones(4)]).long(), 1.0)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(1.0)
    history = DeepHistory()
    objective = FullDepthObjective(FullDepthOptions(), 3)
    kept = _guard_step(model, optimizer, failing, objective, snapshot, history)
    assert history.rollbacks == 1 and kept is snapshot
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, snapshot[0][name])
    assert [g["lr"] for g in optimizer.param_groups] == [0.05]
    passing = _Guard(failing.x, failing.y, 0.0)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(1.0)
    new = _guard_step(model, optimizer, passing, objective, kept, history)
    assert history.rollbacks == 1 and new is not kept
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(new[0][name], tensor)


def test_whole_network_refuses_prefix_inputs_and_untapped_models() -> None:
    model = build_model("small-cnn", num_classes=3, image_size=8, seed=0)
    model.read_prefix()
    data = _images(6, 16, 3)
    with pytest.raises(ArgumentError, match="cache_prefix"):
        immunize_whole_network(
            make_fabric(FabricOptions()), model, data, data, data, _cfg(), harmful_classes=3, seed=0
        )
    model.read_prefix(False)
    model.body.TAPS = ()
    with pytest.raises(ArgumentError, match="names no taps"):
        tap_names(model)


def test_mean_union_beside_the_grid_adds_the_mean_probe_with_its_weight() -> None:
    """``mean_union_weight`` (F3m) with ``union_dims > 0``: the grid union's term plus the
    mean union's, each a directly fitted probe."""
    gen = torch.Generator().manual_seed(5)
    maps = [torch.randn(48, c, 4, 4, generator=gen, dtype=torch.float64) for c in (2, 3)]
    labels = torch.arange(40) % 3
    original = [m[:8] for m in maps]
    grid = {"union_weight": 1.5, "union_ridge": 0.2, "union_dims": 12}
    without, _ = FullDepthObjective(FullDepthOptions(**grid), 3).tap_terms(
        maps, original, labels, 8
    )
    both, _ = FullDepthObjective(FullDepthOptions(**grid, mean_union_weight=0.7), 3).tap_terms(
        maps, original, labels, 8
    )
    means = [m[8:].mean(dim=(2, 3)) for m in maps]
    fit, held = standardised_union([t[:20] for t in means], [t[20:] for t in means])
    error = ridge_heldout_error(fit, labels[:20], held, labels[20:], 3, 0.2)
    assert float(both) == pytest.approx(float(without - 0.7 * error.clamp(max=1.0)))
    own, _ = FullDepthObjective(
        FullDepthOptions(**grid, mean_union_weight=0.7, mean_union_ridge=0.05), 3
    ).tap_terms(maps, original, labels, 8)
    own_error = ridge_heldout_error(fit, labels[:20], held, labels[20:], 3, 0.05)
    assert float(own_error) != pytest.approx(float(error))  # the ridge matters here
    assert float(own) == pytest.approx(float(without - 0.7 * own_error.clamp(max=1.0)))


@pytest.mark.parametrize(
    "options",
    [{"mean_union_weight": 1.0, "union_weight": 1.0}, {"mean_union_weight": 1.0, "union_dims": 8}],
    ids=["without a grid", "without the grid union"],
)
def test_mean_union_weight_needs_a_grid_union(options) -> None:
    with pytest.raises(ValueError, match="mean_union_weight adds the spatial-mean union"):
        configure_method("full-depth", "deep", **options)
