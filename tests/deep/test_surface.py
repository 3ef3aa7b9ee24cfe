"""The attack surface of a released model, and folding a feature map into it."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.utils.data import TensorDataset

from condimmune.attacks.deep_inputs import reads_taps
from condimmune.attacks.deep_records import DeepAttackOptions
from condimmune.attacks.deep_suite import Task, run_deep_suite
from condimmune.attacks.registry import DeepAttacker
from condimmune.deep.backbones import build_model
from condimmune.deep.feature_maps import apply_feature_map
from condimmune.deep.surface import (
    ImmunizedBlocks,
    TaskImages,
    prefix_tensors,
    released_model,
    same_prefix,
    stacked_prefix,
    task_images,
)
from condimmune.deep.taps import record_taps
from condimmune.methods.base import FeatureMap


def _images(n: int, seed: int) -> TensorDataset:
    gen = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 1, 12, 12, generator=gen), torch.arange(n) % 3)


@pytest.fixture(scope="module")
def tasks() -> dict[Task, TaskImages]:
    return {
        Task.HARMFUL: TaskImages(_images(48, 0), _images(24, 1), 3),
        Task.BENIGN: TaskImages(_images(48, 2), _images(24, 3), 3),
    }


def _model():
    model = build_model("small-cnn", num_classes=3, image_size=12, seed=0).eval()
    gen = torch.Generator().manual_seed(5)
    model.set_feature_map(torch.eye(128) + 0.1 * torch.randn(128, 128, generator=gen))
    return model


def _changed_blocks(model):
    """The same model with other immunized blocks (block3) and another feature map."""
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.body.block3.parameters():
            p.mul_(-2.0).add_(0.3)
    other.set_feature_map(torch.diag(torch.logspace(0, -2, 128)))
    return other


def test_the_blocks_on_the_prefix_give_the_released_features(tasks):
    model = _model()
    acts, images = prefix_tensors(model, tasks, keep_images=True)
    released = released_model(model, acts, images, batch_size=16)
    x = torch.stack([tasks[Task.HARMFUL].train[i][0] for i in range(48)])
    with torch.no_grad():
        expected = model.features(x).double()
    torch.testing.assert_close(released.features[Task.HARMFUL].train_x, expected)
    assert released.images is not None and released.network is not None
    torch.testing.assert_close(released.images[Task.HARMFUL].train_x, x)
    assert released_model(model, acts).network is None  # no images, no full fine-tuning
    with pytest.raises(ValueError, match="hold no images"):
        prefix_tensors(model, tasks, keep_images=True, prefix_inputs=True)
    # datasets that already hold prefix outputs are only stacked
    cached = {
        t: TaskImages(
            torch.utils.data.TensorDataset(acts[t].train_x, acts[t].train_y),
            torch.utils.data.TensorDataset(acts[t].test_x, acts[t].test_y),
            3,
        )
        for t in Task
    }
    again, _ = prefix_tensors(model, cached, prefix_inputs=True)
    assert torch.equal(again[Task.BENIGN].test_x, acts[Task.BENIGN].test_x)


def test_the_skip_probe_does_not_see_the_immunized_blocks(tasks):
    model = _model()
    other = _changed_blocks(model)
    assert same_prefix(model, other)
    acts, _ = prefix_tensors(model, tasks)
    a, b = released_model(model, acts), released_model(other, prefix_tensors(other, tasks)[0])
    assert not torch.equal(a.features[Task.HARMFUL].train_x, b.features[Task.HARMFUL].train_x)
    assert a.skip is not None and b.skip is not None
    for task in Task:
        assert torch.equal(a.skip[task].train_x, b.skip[task].train_x)
    options = DeepAttackOptions(trials=2, probe_steps=10)
    for suite in (run_deep_suite(["skip-adam"], a, b, options),):
        for task in (suite.attackers["skip-adam"].harmful, suite.attackers["skip-adam"].benign):
            assert task is not None and task.original.curve == task.immunized.curve
            assert task.slowdown == 1.0 and task.rfd == 0.0


def test_reinitialising_the_blocks_discards_weights_and_feature_map(tasks):
    model = _model()
    other = _changed_blocks(model)
    acts, _ = prefix_tensors(model, tasks)
    outputs = []
    for m in (model, other):
        blocks = copy.deepcopy(released_model(m, acts).blocks)
        assert isinstance(blocks, ImmunizedBlocks)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            for sub in blocks.modules():
                if callable(getattr(sub, "reset_parameters", None)):
                    sub.reset_parameters()
        assert torch.equal(blocks.feature_map, torch.eye(128))
        with torch.no_grad():
            outputs.append(blocks.eval()(acts[Task.HARMFUL].train_x))
    torch.testing.assert_close(outputs[0], outputs[1])
    options = DeepAttackOptions(finetune_trials=1, finetune_steps=4, finetune_eval_every=2)
    a, b = released_model(model, acts), released_model(other, acts)
    reinit = run_deep_suite(["blocks-reinit"], a, b, options).attackers["blocks-reinit"]
    assert reinit.harmful.original.curve == reinit.harmful.immunized.curve


def test_skip_dims_must_be_positive():
    with pytest.raises(ValueError, match="skip_dims must be ≥ 1"):
        released_model(_model(), {}, skip_dims=0)


def test_same_prefix_notices_a_changed_frozen_layer():
    model = _model()
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.body.block1[0].weight.add_(1.0)
    assert not same_prefix(model, other)


def test_an_invertible_map_keeps_the_logits_and_a_singular_one_refits_the_head():
    model = _model()
    x = torch.randn(300, 1, 12, 12, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        phi, logits = (t.double() for t in model(x))
    gen = torch.Generator().manual_seed(1)
    t = torch.eye(128, dtype=torch.float64) + 0.05 * torch.randn(128, 128, generator=gen)
    exact = copy.deepcopy(model)  # an invertible map goes to DeepModel.set_feature_map
    apply_feature_map(exact, FeatureMap(t, True), phi)
    expected_map = (t @ model.feature_map.double()).float()
    torch.testing.assert_close(exact.feature_map, expected_map)
    m = copy.deepcopy(model)  # the least-squares refit of an invertible map keeps the logits
    apply_feature_map(m, FeatureMap(t, invertible=False), phi)
    with torch.no_grad():
        torch.testing.assert_close(m(x)[1].double(), logits, atol=1e-5, rtol=1e-4)
    projection = torch.eye(128, dtype=torch.float64)
    projection[0, 0] = 0.0  # drop one feature: the logits change only through it
    m = copy.deepcopy(model)
    apply_feature_map(m, FeatureMap(projection, invertible=False), phi)
    with torch.no_grad():
        refit = m(x)[1].double()
    design = torch.cat([phi[:, 1:], torch.ones(300, 1, dtype=torch.float64)], dim=1)
    best = design @ torch.linalg.lstsq(design, logits).solution
    torch.testing.assert_close(refit, best, atol=1e-3, rtol=1e-3)
    with pytest.raises(ValueError, match="must be 128 × 128"):
        apply_feature_map(m, FeatureMap(torch.eye(3), False), phi)
    with pytest.raises(ValueError, match="benign_features must be n × 128"):
        apply_feature_map(m, FeatureMap(projection, False), phi[:, :3])


def test_the_tap_probe_reads_every_tap_pooled_and_concatenated(tasks):
    model = _model()
    acts, images = prefix_tensors(model, tasks, keep_images=True)
    released = released_model(model, acts, images, batch_size=16)
    assert released.taps is not None
    taps = released.taps[Task.HARMFUL]
    assert taps.train_x.shape == (48, 16 + 32 + 128) and taps.test_x.shape == (24, 176)
    x = torch.stack([tasks[Task.HARMFUL].train[i][0] for i in range(48)])
    with torch.no_grad():
        first = model.body.block1(x).mean(dim=(2, 3)).double()
        last = model.body.block3(model.body.prefix(x)).mean(dim=(2, 3)).double()
    torch.testing.assert_close(taps.train_x[:, :16], first)
    torch.testing.assert_close(taps.train_x[:, -128:], last)  # before the feature map
    assert released_model(model, acts).taps is None  # taps need the images
    # no tap probe attacked: no forward pass for taps, the rest as before
    untapped = released_model(model, acts, images, batch_size=16, taps=False)
    assert untapped.taps is None and untapped.network is not None
    torch.testing.assert_close(
        untapped.features[Task.HARMFUL].train_x, released.features[Task.HARMFUL].train_x
    )


def _whole_pass_taps(model, x):
    """The reference: every tap recorded in one forward pass of the images, pooled."""
    with torch.no_grad(), record_taps(model) as taps:
        model.body(x)
        return torch.cat([t.mean(dim=(2, 3)) for t in taps], dim=1).double()


def test_taps_inside_a_shared_prefix_are_read_from_the_model_like_it(tasks):
    """θ_I with θ0's prefix: its prefix's taps (block1, block2: 16 + 32 columns) copied from
    θ0's, block3's from its own blocks; the same as one whole pass of the images."""
    model = _model()
    other = _changed_blocks(model)
    acts, images = prefix_tensors(model, tasks, keep_images=True)
    first = released_model(model, acts, images, batch_size=16)
    copied = released_model(other, acts, images, batch_size=16, like=first)
    fresh = released_model(other, acts, images, batch_size=16)
    assert first.taps is not None and copied.taps is not None and fresh.taps is not None
    for task in Task:
        for which in ("train_x", "test_x"):
            ours = getattr(copied.taps[task], which)
            assert torch.equal(ours, getattr(fresh.taps[task], which))
            reference = _whole_pass_taps(other, getattr(images[task], which))
            torch.testing.assert_close(ours, reference, rtol=1e-6, atol=1e-7)
    h = Task.HARMFUL
    assert torch.equal(copied.taps[h].train_x[:, :48], first.taps[h].train_x[:, :48])
    assert not torch.equal(copied.taps[h].train_x[:, 48:], first.taps[h].train_x[:, 48:])


def test_a_prefix_without_taps_gives_the_taps_after_it_alone(tasks):
    """Every tap after the prefix (here only block3 is named): no columns from the prefix,
    the rows of every batch kept (3 batches of 16)."""
    model = _model()
    model.body.TAPS = ("block3",)
    acts, images = prefix_tensors(model, tasks, keep_images=True)
    released = released_model(model, acts, images, batch_size=16)
    assert released.taps is not None
    for task in Task:
        taps = released.taps[task].train_x
        assert taps.shape == (48, 128)
        torch.testing.assert_close(
            taps, _whole_pass_taps(model, images[task].train_x), rtol=1e-6, atol=1e-7
        )


def test_images_stacked_once_give_the_loaded_images_and_prefix(tasks):
    model = _model()
    acts, images = prefix_tensors(model, tasks, batch_size=16, keep_images=True)
    stacked = task_images(tasks, batch_size=16)
    again = stacked_prefix(model, stacked, batch_size=16)
    for task in Task:
        for which in ("train_x", "train_y", "test_x", "test_y"):
            assert torch.equal(getattr(stacked[task], which), getattr(images[task], which))
            assert torch.equal(getattr(again[task], which), getattr(acts[task], which))


@pytest.mark.parametrize(
    ("attackers", "expected"),
    [
        pytest.param([DeepAttacker.TAP_ADAM], True, id="tap-probe"),
        pytest.param([DeepAttacker.LINEAR_GD, DeepAttacker.TAP_ADAM], True, id="among-others"),
        pytest.param([DeepAttacker.LINEAR_GD, DeepAttacker.SKIP_ADAM], False, id="no-tap-probe"),
        pytest.param([], False, id="none"),
    ],
)
def test_only_the_tap_probe_reads_taps(attackers, expected):
    assert reads_taps(attackers) is expected


def test_the_released_network_names_its_taps_for_the_prefix_ceilings(tasks):
    """What C(k) keeps through (attacks/prefix_curve.py): each body tap, found in the
    network the attackers train, in forward order; after block1 come blocks 2 and 3, and
    after block3 no parameter."""
    from condimmune.attacks.prefix_curve import layers_after

    model = _model()
    acts, images = prefix_tensors(model, tasks, keep_images=True)
    released = released_model(model, acts, images, batch_size=16)
    assert [name for name, _ in released.network_taps] == ["block1", "block2", "block3"]
    assert released.network is not None and released.images is not None
    example = released.images[Task.HARMFUL].train_x[:1]
    modules = dict(released.network.named_modules())
    after = {
        name: layers_after(released.network, path, example) for name, path in released.network_taps
    }
    assert "model.body.block2" in after["block1"] and "model.body.block3" in after["block1"]
    assert "model.body.block2" not in after["block2"] and "model.body.block3" in after["block2"]
    assert not any(list(modules[m].parameters(recurse=False)) for m in after["block3"])


@pytest.mark.parametrize("backbone", ["small-cnn", "resnet18", "mobilenet-v2"])
def test_keeping_a_backbone_through_a_tap_resets_exactly_the_deeper_taps(backbone):
    """On each registered convolutional body (ViT-B/16 is left out for its size): through
    tap k, every parameter inside taps 1..k is kept and every parameter inside taps k+1..
    is in a layer that keep-k resets."""
    from condimmune.attacks.prefix_curve import layers_after
    from condimmune.deep.surface import _Features

    channels = 1 if backbone == "small-cnn" else 3
    model = build_model(backbone, num_classes=3, image_size=32, seed=0)
    network = _Features(model)
    example = torch.randn(1, channels, 32, 32, generator=torch.Generator().manual_seed(0))
    taps = [f"model.body.{t}" for t in model.body.TAPS]
    owners = {
        f"{m}.{p}" if m else p: m
        for m, module in network.named_modules()
        for p, _ in module.named_parameters(recurse=False)
    }
    for k, tap in enumerate(taps[:-1]):
        reset = set(layers_after(network, tap, example))
        for j, other in enumerate(taps):
            inside = [n for n in owners if n.startswith(f"{other}.")]
            assert inside, other
            assert all((owners[n] in reset) == (j > k) for n in inside), (tap, other)
