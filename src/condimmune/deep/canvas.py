"""Translated and cluttered digits: the harder operating point of issue #27.

Each 28 × 28 digit is placed at a seeded random position on a ``side × side`` black canvas
and ``fragments`` 8 × 8 crops of other, randomly chosen images of the same pool are
scattered over it (the cluttered translated MNIST of Mnih et al., "Recurrent Models of
Visual Attention", 2014: 60 × 60 canvases, 4 fragments of 8 × 8). Pixels are composited
with ``max``, so a fragment never darkens the digit. A linear head on the raw pixels,
which reaches 0.93 on the plain digits, falls to about a third on a 40 × 40 canvas with 4
fragments (docs/attacks.md), while a convolutional network with global pooling still
learns the task: pretrained convolutional features give the harmful task a head start that
raw pixels cannot match.
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np

__all__ = ["DIGIT_SIDE", "FRAGMENT_SIDE", "HarmfulImages", "cluttered_canvas"]


class HarmfulImages(StrEnum):
    """Where ``mnist-cnn``'s harmful images come from (``data.harmful_images``): MNIST
    digits, or Fashion-MNIST garments, placed on canvases the same way."""

    MNIST = "mnist"
    FASHION_MNIST = "fashion-mnist"


DIGIT_SIDE = 28
"""Side of an MNIST image."""
FRAGMENT_SIDE = 8
"""Side of one clutter fragment (Mnih et al. 2014)."""


def cluttered_canvas(images: np.ndarray, *, side: int, fragments: int, seed: int) -> np.ndarray:
    """``images`` (n × 28 × 28, values ≥ 0) → ``n × side × side`` float32: each digit at a
    uniformly random position, then (before it, composited with ``max``) ``fragments``
    random 8 × 8 crops of random images of ``images`` at random positions. Deterministic in
    ``seed`` and the pool; each image draws from its own stream ``(seed, i)``."""
    if images.ndim != 3 or images.shape[1:] != (DIGIT_SIDE, DIGIT_SIDE):
        raise ValueError(f"images must be n × 28 × 28, got shape {images.shape}")
    if side < DIGIT_SIDE:
        raise ValueError(f"the canvas side must be at least {DIGIT_SIDE}, got {side}")
    if fragments < 0:
        raise ValueError(f"fragments must be ≥ 0, got {fragments}")
    n = images.shape[0]
    out = np.zeros((n, side, side), dtype=np.float32)
    crop_span = DIGIT_SIDE - FRAGMENT_SIDE + 1
    place_span = side - FRAGMENT_SIDE + 1
    for i in range(n):
        rng = np.random.default_rng((seed, i))
        canvas = out[i]
        for _ in range(fragments):
            source = images[rng.integers(n)]
            r, c = rng.integers(0, crop_span, size=2)
            pr, pc = rng.integers(0, place_span, size=2)
            patch = canvas[pr : pr + FRAGMENT_SIDE, pc : pc + FRAGMENT_SIDE]
            np.maximum(patch, source[r : r + FRAGMENT_SIDE, c : c + FRAGMENT_SIDE], out=patch)
        pr, pc = rng.integers(0, side - DIGIT_SIDE + 1, size=2)
        window = canvas[pr : pr + DIGIT_SIDE, pc : pc + DIGIT_SIDE]
        np.maximum(window, images[i], out=window)
    return out
