"""The closed-form ridge head (Eq. A2 / A2'): both forms against a dense float64 reference,
the form chosen by shape, and its FLOP count by hand."""

import numpy as np
import pytest
import torch

from condimmune.attacks.cost import lstsq_flops, ridge_uses_kernel
from condimmune.attacks.ridge_head import RidgeSystem

CLASSES = 3
CASES = [  # (rows, features): the Gram system when tall, the kernel system when wide
    pytest.param(40, 6, id="tall-gram"),
    pytest.param(12, 30, id="wide-kernel"),
    pytest.param(7, 6, id="square-with-bias-gram"),  # d' = 7 = n: not fewer rows
]


def _problem(rows: int, features: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(rows * 100 + features)
    x = torch.randn(rows, features, generator=gen, dtype=torch.float64)
    return x, torch.arange(rows) % CLASSES


def _reference(x: torch.Tensor, y: torch.Tensor, ridge: float) -> np.ndarray:
    """W = V diag(s / (s² + λ)) Uᵀ Y from the SVD Ã = U diag(s) Vᵀ: Eq. A2 without forming
    either system, accurate to rounding however small λ is."""
    a = np.hstack([x.numpy(), np.ones((x.shape[0], 1))])
    onehot = np.eye(CLASSES)[y.numpy()]
    scale = ridge * np.sum(a * a) / a.shape[1]
    u, s, vh = np.linalg.svd(a, full_matrices=False)
    return vh.T @ ((s / (s * s + scale))[:, None] * (u.T @ onehot))


@pytest.mark.parametrize(("rows", "features"), CASES)
@pytest.mark.parametrize("ridge", [1e-6, 1e-2, 1.0], ids=lambda r: f"rho{r:g}")
def test_the_head_equals_the_dense_primal_solution(rows, features, ridge):
    x, y = _problem(rows, features)
    system = RidgeSystem.of(x, y, CLASSES)
    assert system.kernel == (rows < features + 1)
    assert system.matrix.shape == ((rows, rows) if system.kernel else (features + 1,) * 2)
    np.testing.assert_allclose(system.head(ridge).numpy(), _reference(x, y, ridge), rtol=1e-9)


def test_the_gram_form_is_the_earlier_trial_to_the_bit():
    x, y = _problem(40, 6)
    a = torch.nn.functional.pad(x, (0, 1), value=1.0)
    gram = a.mT @ a
    scale = 0.01 * float(torch.trace(gram)) / gram.shape[0]
    eye = torch.eye(gram.shape[0], dtype=torch.float64)
    earlier = torch.linalg.solve(gram + scale * eye, a.mT @ torch.nn.functional.one_hot(y).double())
    assert torch.equal(RidgeSystem.of(x, y, CLASSES).head(0.01), earlier)


def test_the_flop_count_follows_the_form_solved():
    # kernel: AAᵀ 2·4²·6 = 192, factor 4³/3 → 21, solves 2·4²·3 = 96, Aᵀα 2·4·6·3 = 144
    assert ridge_uses_kernel(4, 6) and lstsq_flops(4, 6, 3) == 192 + 21 + 96 + 144
    # Gram: AᵀA 2·6·4² = 192, factor 4³/3 → 21, solves 2·4²·3 = 96, AᵀY 2·6·4·3 = 144
    assert not ridge_uses_kernel(6, 4) and lstsq_flops(6, 4, 3) == 192 + 21 + 96 + 144
    assert not ridge_uses_kernel(5, 5)
    # raw 64 × 64 × 3 pixels, 2,000 images: the kernel form is the cheaper by far
    n, d, c = 2000, 64 * 64 * 3 + 1, 10
    gram = 2 * n * d * d + d**3 // 3 + 2 * d * d * c + 2 * n * d * c
    assert lstsq_flops(n, d, c) < gram / 10
