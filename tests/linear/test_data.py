"""The joint PCA of a linear experiment's rows against a dense SVD (float64 reference)."""

import numpy as np
import pytest

from condimmune.linear.data import _top_right_singular_vectors

# (rows, columns, components, decay of the column scales): tall and wide, k clipped to min(n, d)
CASES = {
    "tall-64-of-80": (200, 80, 64, 0.01),
    "wide-10-of-60": (30, 60, 10, 0.1),
    "clipped-to-rows": (12, 40, 64, 0.5),
    "all-components": (50, 20, 20, 0.2),
}


@pytest.mark.parametrize(("n", "d", "components", "decay"), CASES.values(), ids=CASES.keys())
def test_the_basis_is_the_top_right_singular_vectors(n, d, components, decay):
    rng = np.random.default_rng(n * d)
    rows = rng.standard_normal((n, d)) * np.geomspace(1.0, decay, d)
    basis, explained = _top_right_singular_vectors(rows, components)
    k = min(components, n, d)
    _, s, vh = np.linalg.svd(rows, full_matrices=False)
    assert basis.shape == (d, k) and basis.flags.c_contiguous
    # the same vectors, in the same order, up to each one's sign
    np.testing.assert_allclose(np.abs(vh[:k] @ basis), np.eye(k), atol=1e-9)
    assert explained == pytest.approx(float((s[:k] ** 2).sum() / (s**2).sum()), rel=1e-12)
    # the sign rule: each vector's largest entry is positive
    assert (basis[np.abs(basis).argmax(axis=0), np.arange(k)] > 0).all()
    # projecting on it keeps the top-k energy: ‖X B‖_F² = Σ_{i≤k} σ_i²
    assert np.square(rows @ basis).sum() == pytest.approx(float((s[:k] ** 2).sum()), rel=1e-12)


def test_components_past_the_rank_keep_all_the_energy_and_stay_orthonormal():
    """Past the rank of the rows (raw-pixel borders, few images) the extra vectors span
    directions of zero energy, defined only up to rotation: what must hold is that the basis
    is orthonormal and keeps every bit of the energy, as the SVD's does."""
    rng = np.random.default_rng(7)
    rows = rng.standard_normal((60, 25)) @ rng.standard_normal((25, 50))  # rank 25
    basis, explained = _top_right_singular_vectors(rows, 40)
    s = np.linalg.svd(rows, compute_uv=False)
    assert basis.shape == (50, 40)
    np.testing.assert_allclose(basis.T @ basis, np.eye(40), atol=1e-10)
    assert explained == pytest.approx(1.0, rel=1e-12)
    assert np.square(rows @ basis).sum() == pytest.approx(float((s**2).sum()), rel=1e-12)
