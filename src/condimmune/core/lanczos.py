r"""Lanczos with full reorthogonalisation for the extreme eigenpairs of a symmetric operator
(:mod:`condimmune.core.tracking`): ``G`` itself, or ``(G − τI)⁻¹`` through a factorisation.

After ``j`` steps from a unit ``q₁``, :math:`AQ_j = Q_jT_j + \beta_j q_{j+1}e_j^\top` with
:math:`Q_j` orthonormal and :math:`T_j` tridiagonal (α on the diagonal, β beside it); an
eigenpair :math:`(\theta, y)` of :math:`T_j` gives the Ritz pair :math:`(\theta, Q_jy)` with
residual :math:`\|AQ_jy - \theta Q_jy\| = |\beta_j\,y[j]|`. Extreme Ritz values converge
first, at a rate set by their gap to the rest of the spectrum. Vectors are torch tensors or
numpy arrays (:mod:`condimmune.core.arrays`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic

import array_api_compat

from condimmune.core.arrays import Array, machine_epsilon, namespace

__all__ = ["Ritz", "lanczos"]

_MAX_STEPS = 160
"""Lanczos steps before giving up (then the dense path answers); 12–28 suffice on raw MNIST."""

_CHECK_EVERY = 4
"""Lanczos steps between convergence checks (each an eigendecomposition of the tridiagonal)."""


@dataclass(frozen=True)
class Ritz(Generic[Array]):
    """Ascending Ritz values of a Lanczos run, their residual norms, and the coefficients
    (columns of ``coefficients``) of the Ritz vectors in the orthonormal ``basis`` (rows)."""

    values: list[float]
    residuals: list[float]
    coefficients: Array
    basis: Array

    def vector(self, index: int) -> Array:
        """The unit Ritz vector (p × 1) of ``values[index]``."""
        x = self.basis.mT @ self.coefficients[:, index, None]
        unit: Array = x / namespace(x).linalg.vector_norm(x)
        return unit


def lanczos(
    apply: Callable[[Array], Array],
    start: Array,
    converged: Callable[[Ritz[Array]], bool],
    max_steps: int = _MAX_STEPS,
) -> Ritz[Array] | None:
    r"""Lanczos on the symmetric operator ``apply`` (of p × 1 columns) from ``start``, with
    full reorthogonalisation (twice, so the basis stays orthonormal to rounding): after ``j``
    steps :math:`AQ_j = Q_jT_j + \beta_j q_{j+1}e_j^\top` with tridiagonal ``T_j``, whose
    eigenpairs :math:`(\theta_i, y_i)` give Ritz pairs :math:`(\theta_i, Q_jy_i)` of residual
    :math:`|\beta_j\,y_i[j]|`. Stops when ``converged`` accepts them (checked every few steps)
    and returns them; ``None`` if it does not within ``max_steps``. An invariant subspace
    (β at rounding level: an eigenvalue repeated exactly is seen once) or the full
    dimension ends the run with exact Ritz pairs.
    """
    xp, size = namespace(start), start.shape[0]
    steps = min(max_steps, size)
    basis: Any = xp.empty(
        (steps + 1, size), dtype=start.dtype, device=array_api_compat.device(start)
    )
    alpha, beta = [0.0] * steps, [0.0] * steps
    basis[0] = start[:, 0] / xp.linalg.vector_norm(start)
    scale = 0.0  # ‖T_j‖ (an estimate): a β below its rounding ends the Krylov space
    eps = machine_epsilon(start.dtype)
    for j in range(steps):
        w = apply(basis[j, :, None])[:, 0]
        alpha[j] = float(basis[j] @ w)
        done = basis[: j + 1]
        for _ in range(2):
            w -= done.mT @ (done @ w)
        beta[j] = float(xp.linalg.vector_norm(w))
        scale = max(scale, abs(alpha[j]) + beta[j] + (beta[j - 1] if j else 0.0))
        exhausted = j + 1 == size or beta[j] <= size * eps * scale
        if exhausted or (j + 1) % _CHECK_EVERY == 0:
            tridiagonal = xp.diag(xp.asarray(alpha[: j + 1], dtype=start.dtype))
            off = xp.asarray(beta[:j], dtype=start.dtype)
            tridiagonal = tridiagonal + xp.diag(off, 1) + xp.diag(off, -1)
            values, coefficients = xp.linalg.eigh(tridiagonal)
            last = 0.0 if exhausted else beta[j]
            residuals = (xp.abs(coefficients[-1]) * last).tolist()
            ritz = Ritz(values.tolist(), residuals, coefficients, done)
            if exhausted or converged(ritz):
                return ritz
        basis[j + 1] = w / beta[j]
    return None
