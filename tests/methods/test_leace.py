"""The erasure arm: LEACE leaves no linearly decodable harmful label on its fitting data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from concept_erasure import LeaceFitter
from safetensors.torch import load_file
from typer.testing import CliRunner

from condimmune.cli import app
from condimmune.methods.base import FeatureMapInputs, LinearProblem, NoOptions
from condimmune.methods.leace import leace_erasure, leace_feature_map
from condimmune.methods.registry import configure_method

COUNTS = (240, 160, 120, 80)  # unbalanced: chance = always the majority class = 0.4


def _classes(gen: torch.Generator, d: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.cat([torch.full((c,), i) for i, c in enumerate(COUNTS)])
    means = 3.0 * torch.randn(len(COUNTS), d, generator=gen, dtype=torch.float64)
    mixing = torch.randn(d, d, generator=gen, dtype=torch.float64)
    x = (means[y] + torch.randn(len(y), d, generator=gen, dtype=torch.float64)) @ mixing
    return x, y


def _least_squares_probe(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, float, float]:
    """Predictions, accuracy and MSE of the least-squares head with a bias (one-hot targets)."""
    design = F.pad(x, (0, 1), value=1.0)
    targets = F.one_hot(y).double()
    pred = design @ torch.linalg.lstsq(design, targets, driver="gelsd").solution
    accuracy = float((pred.argmax(1) == y).double().mean())
    return pred, accuracy, float((pred - targets).square().mean())


def test_leace_leaves_the_least_squares_probe_at_chance_on_its_fitting_data(gen):
    x, y = _classes(gen)
    _, before, _ = _least_squares_probe(x, y)
    assert before > 0.9  # the labels are linearly decodable before erasure
    t = leace_erasure(x, F.one_hot(y))
    erased = x @ t.mT
    pred, accuracy, mse = _least_squares_probe(erased, y)
    targets = F.one_hot(y).double()
    constant = float((targets - targets.mean(0)).square().mean())
    assert mse == pytest.approx(constant, rel=1e-9)  # no better than a constant
    assert float(pred.std(0).max()) < 1e-6
    assert accuracy == pytest.approx(max(COUNTS) / sum(COUNTS))  # chance: the majority class
    cross = (erased - erased.mean(0)).mT @ (targets - targets.mean(0))
    assert float(cross.abs().max()) < 1e-8 * float(erased.abs().max()) * len(y)
    # an oblique projection that removes exactly classes − 1 directions
    assert int(torch.linalg.matrix_rank(t)) == x.shape[1] - (len(COUNTS) - 1)
    torch.testing.assert_close(t @ t, t)


def test_the_deep_hook_erases_one_hot_labels_and_asks_for_a_head_refit(gen):
    x, y = _classes(gen)
    inputs = FeatureMapInputs(x[:100], x, y, len(COUNTS))
    fmap = leace_feature_map(inputs, NoOptions())
    assert not fmap.invertible
    torch.testing.assert_close(fmap.transform, leace_erasure(x, F.one_hot(y)))


def test_the_linear_method_uses_the_erasure_as_extractor(gen):
    x, y = _classes(gen)
    binary = (y == 0).double()
    problem = LinearProblem(x, binary, x, binary)
    plan = configure_method("leace", "linear").plan(problem)
    assert not plan.train_extractor and plan.notes
    _, _, mse = _least_squares_probe(x @ plan.initial_weight.mT, binary.long())
    targets = F.one_hot(binary.long()).double()
    assert mse == pytest.approx(float((targets - targets.mean(0)).square().mean()), rel=1e-9)


def _concept_erasure(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """The reference: concept-erasure's eraser with the fit's two non-default choices."""
    z = z.reshape(x.shape[0], -1).to(torch.float64)
    eraser = LeaceFitter.fit(x, z, constrain_cov_trace=False, svd_tol=1e-10).eraser
    return torch.eye(x.shape[1], dtype=torch.float64) - eraser.proj_left @ eraser.proj_right


@pytest.mark.parametrize(
    "rows, features, classes, offset",
    [(200, 8, 3, 0.0), (20, 30, 4, 0.0), (300, 16, 2, 50.0), (12, 5, 0, 0.0)],
    ids=["one-hot", "fewer-rows-than-features", "far-from-the-origin", "one-column-concept"],
)
def test_leace_is_concept_erasures_fit(gen, rows, features, classes, offset):
    y = torch.randint(max(classes, 2), (rows,), generator=gen)
    means = 3.0 * torch.randn(max(classes, 2), features, generator=gen, dtype=torch.float64)
    mixing = torch.randn(features, features, generator=gen, dtype=torch.float64)
    noise = torch.randn(rows, features, generator=gen, dtype=torch.float64)
    x = (means[y] + noise) @ mixing + offset
    z = F.one_hot(y, classes) if classes else y.to(torch.float64)
    expected = _concept_erasure(x, z)
    scale = float(expected.abs().max())
    torch.testing.assert_close(leace_erasure(x, z), expected, rtol=1e-10, atol=1e-10 * scale)
    on_numpy = leace_erasure(x.numpy(), z.numpy())
    assert isinstance(on_numpy, np.ndarray) and on_numpy.dtype == np.float64
    np.testing.assert_allclose(on_numpy, expected.numpy(), rtol=1e-10, atol=1e-10 * scale)


def test_leace_refuses_a_single_row():
    with pytest.raises(ValueError, match="at least 2 rows"):
        leace_erasure(torch.zeros(1, 3, dtype=torch.float64), torch.zeros(1))


def test_a_linear_leace_run_writes_its_extractor(tmp_path: Path):
    out = tmp_path / "run"
    args = ["run", "digits", "--set", "train.method=leace", "--set", "train.epochs=2"]
    result = CliRunner().invoke(app, [*args, "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    weight = load_file(out / "extractor.safetensors")["weight"]
    d = weight.shape[1]
    assert metrics["method"] == "leace" and int(torch.linalg.matrix_rank(weight)) == d - 1
