"""Cluttered translated digits (deep/canvas.py)."""

from __future__ import annotations

import numpy as np
import pytest

from condimmune.deep.canvas import DIGIT_SIDE, FRAGMENT_SIDE, cluttered_canvas


def _digits(n: int = 6) -> np.ndarray:
    rng = np.random.default_rng(3)
    images = np.zeros((n, DIGIT_SIDE, DIGIT_SIDE), dtype=np.float32)
    images[:, 6:22, 10:18] = rng.uniform(0.2, 1.0, size=(n, 16, 8))
    return images


def test_without_clutter_each_digit_is_copied_once_somewhere_on_the_canvas() -> None:
    images = _digits()
    out = cluttered_canvas(images, side=40, fragments=0, seed=1)
    assert out.shape == (6, 40, 40) and out.dtype == np.float32
    positions = set()
    for canvas, digit in zip(out, images, strict=True):
        hits = [
            (r, c)
            for r in range(40 - DIGIT_SIDE + 1)
            for c in range(40 - DIGIT_SIDE + 1)
            if np.array_equal(canvas[r : r + DIGIT_SIDE, c : c + DIGIT_SIDE], digit)
        ]
        assert hits, "the digit is not on its canvas"
        assert canvas.sum() == pytest.approx(digit.sum())  # nothing else was drawn
        positions.add(hits[0])
    assert len(positions) > 1, "every digit landed at the same place"


def test_side_28_without_clutter_is_the_identity() -> None:
    images = _digits()
    assert np.array_equal(cluttered_canvas(images, side=28, fragments=0, seed=0), images)


def test_clutter_adds_fragments_and_never_darkens_the_digit() -> None:
    images = _digits()
    plain = cluttered_canvas(images, side=40, fragments=0, seed=2)
    cluttered = cluttered_canvas(images, side=40, fragments=4, seed=2)
    assert np.all(cluttered >= 0)
    assert cluttered.sum() > plain.sum()
    for canvas in cluttered:
        assert canvas.max() <= images.max()
    # at most 4 fragments of 8 × 8 beyond the digit's own pixels
    extra = (cluttered > 0).sum(axis=(1, 2)) - (plain > 0).sum(axis=(1, 2))
    assert np.all(extra <= 4 * FRAGMENT_SIDE**2)


def test_deterministic_in_the_seed() -> None:
    images = _digits()
    a = cluttered_canvas(images, side=36, fragments=3, seed=5)
    assert np.array_equal(a, cluttered_canvas(images, side=36, fragments=3, seed=5))
    assert not np.array_equal(a, cluttered_canvas(images, side=36, fragments=3, seed=6))


@pytest.mark.parametrize(
    ("images", "side", "fragments", "message"),
    [
        pytest.param(np.zeros((2, 27, 27)), 40, 0, "n × 28 × 28", id="not-28"),
        pytest.param(np.zeros((2, 784)), 40, 0, "n × 28 × 28", id="flat"),
        pytest.param(np.zeros((2, 28, 28)), 27, 0, "at least 28", id="small-canvas"),
        pytest.param(np.zeros((2, 28, 28)), 40, -1, "fragments must be", id="negative-clutter"),
    ],
)
def test_refusals(images: np.ndarray, side: int, fragments: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cluttered_canvas(images, side=side, fragments=fragments, seed=0)


def test_the_cluttered_experiment_loads_its_digits_on_canvases() -> None:
    import torch

    from condimmune.experiments.config import apply_overrides, default_config
    from condimmune.experiments.pipeline import resolve_plan
    from condimmune.experiments.pipelines.deep.data import DeepTaskData, load_deep_data

    def load(experiment: str, *sets: str, seed: int = 0) -> DeepTaskData:
        small = ["data.train_per_class=20", "data.test_per_class=5", "data.defence_per_class=5"]
        options = resolve_plan(apply_overrides(default_config(experiment), [*small, *sets]))
        return load_deep_data(options.options.data, options.options.model, seed=seed)

    data = load("mnist-cnn-cluttered")
    assert data.harmful.train.images.shape == (100, 1, 40, 40)
    assert data.benign.test.images.shape == (25, 1, 40, 40)
    assert data.harmful_defence is not None and len(data.harmful_defence) == 25
    assert data.preprocessing == "mnist 40x40 clutter 4"
    again = load("mnist-cnn-cluttered")
    assert torch.equal(data.harmful.train.images, again.harmful.train.images)
    other = load("mnist-cnn-cluttered", seed=1)
    assert not torch.equal(data.harmful.test.images, other.harmful.test.images)
    # plain mnist-cnn keeps its 28 × 28 digits and its description (stored θ0 results match)
    plain = load("mnist-cnn")
    assert plain.harmful.train.images.shape == (100, 1, 28, 28)
    assert plain.preprocessing == "mnist 28x28"
    assert load("mnist-cnn", "data.canvas=32").preprocessing == "mnist 32x32"
