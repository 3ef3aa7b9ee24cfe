"""The weight-free network attacker's model (:func:`scratch_network`); the fitted transforms
the probes share (:meth:`ReleasedModel.transformed`)."""

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from condimmune.attacks import deep_inputs
from condimmune.attacks.deep_inputs import (
    SCRATCH_WIDTH,
    ReleasedModel,
    Task,
    attacker_inputs,
    fit_task_transform,
    scratch_network,
)
from condimmune.attacks.deep_train import TaskTensors
from condimmune.attacks.probes import AttackerTransform
from condimmune.attacks.registry import DEEP_ATTACKERS, DeepAttacker


@pytest.mark.parametrize(
    "shape",
    [(1, 28, 28), (1, 40, 40), (3, 64, 64), (3, 17, 23), (784,)],
    ids=["mnist-28", "cluttered-40", "mobilenet-64", "odd-sizes", "flat"],
)
def test_the_scratch_network_gives_its_width_for_any_input_size(shape):
    net = scratch_network(shape)
    assert net(torch.zeros(2, *shape)).shape == (2, SCRATCH_WIDTH)


def test_the_scratch_network_has_the_same_weights_at_every_image_size():
    """Its grid before the dense layer is fixed, so a larger canvas costs convolutions, not
    a larger dense layer."""
    sizes = {sum(p.numel() for p in scratch_network((1, s, s)).parameters()) for s in (28, 40, 64)}
    assert len(sizes) == 1


def _quadrant_images(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """24-px images with one 2 × 2 bright patch; the label is the quadrant it is in. Every
    patch stays 4 px inside its quadrant, so no convolution's zero padding ever sees it: the
    convolutions' features are the same, shifted, in every quadrant, and only a network that
    keeps where they are can tell the classes apart."""
    labels = torch.randint(0, 4, (n,), generator=gen)
    corner = torch.randint(4, 8, (n, 2), generator=gen)
    images = torch.zeros(n, 1, 24, 24)
    for i in range(n):
        row = int(corner[i, 0]) + 12 * (int(labels[i]) // 2)
        col = int(corner[i, 1]) + 12 * (int(labels[i]) % 2)
        images[i, 0, row : row + 2, col : col + 2] = 1.0
    return images, labels


@pytest.mark.parametrize("seed", [0, 1])
def test_the_scratch_network_learns_where_things_are(seed):
    """Revision 0 pooled globally after the second convolution and stays at chance (0.25)
    here; a digit is its strokes' arrangement, so it also failed on MNIST (0.43–0.58 after
    300 steps). The fixed network separates the quadrants within 60 Adam steps."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    train_x, train_y = _quadrant_images(512, gen)
    test_x, test_y = _quadrant_images(256, gen)
    model = nn.Sequential(scratch_network((1, 24, 24)), nn.Linear(SCRATCH_WIDTH, 4))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        rows = torch.randint(0, 512, (64,), generator=gen)
        loss = F.cross_entropy(model(train_x[rows]), train_y[rows])
        optimizer.zero_grad()
        torch.autograd.backward(loss)
        optimizer.step()
    with torch.no_grad():
        accuracy = (model(test_x).argmax(1) == test_y).float().mean().item()
    assert accuracy >= 0.9


def _released_features(gen: torch.Generator) -> ReleasedModel:
    def task() -> TaskTensors:
        x = torch.randn(40, 6, generator=gen, dtype=torch.float64)
        return TaskTensors(x[:30], torch.arange(30) % 3, x[30:], torch.arange(10) % 3, 3)

    return ReleasedModel({Task.HARMFUL: task(), Task.BENIGN: task()}, 6)


def test_the_whitened_probes_share_one_fitted_transform_per_model_and_task(monkeypatch):
    """The four whitened probes read the same whitened features: fitted once per model and
    task (an SVD each), equal to a fresh fit; a copy of the model with other rows
    (``dataclasses.replace``, as few labels make) fits its own."""
    fits = []
    real = deep_inputs.fit_task_transform
    monkeypatch.setattr(
        deep_inputs, "fit_task_transform", lambda kind, t: fits.append(kind) or real(kind, t)
    )
    model = _released_features(torch.Generator().manual_seed(0))
    whitened = [DeepAttacker.WHITEN_GD, DeepAttacker.WHITEN_ADAM, DeepAttacker.WHITEN_LBFGS]
    got = [attacker_inputs(a, DEEP_ATTACKERS[a], model, Task.HARMFUL)[0] for a in whitened]
    assert fits == [AttackerTransform.WHITEN]
    fresh = fit_task_transform(AttackerTransform.WHITEN, model.features[Task.HARMFUL])
    for data in got:
        assert data is got[0]
        assert torch.equal(data.train_x, fresh.train_x) and torch.equal(data.test_x, fresh.test_x)
    attacker_inputs(whitened[0], DEEP_ATTACKERS[whitened[0]], model, Task.BENIGN)
    standardised = DeepAttacker.STD_ADAM
    attacker_inputs(standardised, DEEP_ATTACKERS[standardised], model, Task.HARMFUL)
    assert len(fits) == 3  # another task, another transform
    fewer = replace(model, features={t: d for t, d in model.features.items()})
    attacker_inputs(whitened[0], DEEP_ATTACKERS[whitened[0]], fewer, Task.HARMFUL)
    assert len(fits) == 4
