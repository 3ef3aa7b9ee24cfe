r"""Factorise a square matrix once, then solve with it: the dense linear algebra the array
API leaves out, for either backend of :mod:`condimmune.core.arrays`.

Each function factorises its (symmetric, for the first two) float ``matrix`` and returns
``x ↦ matrix⁻¹ x`` for (p × m) columns ``x``, or ``None`` where the factorisation reports
what the caller must decide on:

* :func:`cholesky_solver`: ``None`` unless ``matrix`` is positive definite to rounding
  (a non-positive pivot; LAPACK ``potrf``);
* :func:`lu_solver`: partial-pivoting LU (``getrf``), never ``None`` (an exactly singular
  matrix gives Inf/NaN solutions, which the callers' residual checks refuse);
* :func:`symmetric_indefinite_solver`: Bunch–Kaufman ``LDLᵀ`` (``sytrf``) with the number
  of negative eigenvalues of ``D``, hence of ``matrix`` (Sylvester's law of inertia);
  ``None`` for an exactly zero pivot.

torch tensors go to ``torch.linalg`` (as before this module existed: same kernels, same
numbers); numpy arrays to scipy's LAPACK, on one BLAS thread (the pool scipy keeps is not
reached by torch's thread setting, and at more threads it fights torch's or numpy's own;
``condimmune.core.blas`` says how much).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import scipy.linalg
from scipy.linalg import lapack
from threadpoolctl import ThreadpoolController

from condimmune.core.arrays import Array

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "cholesky_solver",
    "inertia_below",
    "lu_solver",
    "one_blas_thread",
    "symmetric_indefinite_solver",
]


@functools.cache
def _blas_pools() -> ThreadpoolController:
    return ThreadpoolController().select(user_api="blas")


def one_blas_thread() -> AbstractContextManager[object]:
    """A context in which scipy's (and numpy's) BLAS run on one thread."""
    return cast(AbstractContextManager[object], _blas_pools().limit(limits=1))


def cholesky_solver(matrix: Array) -> Callable[[Array], Array] | None:
    """``x ↦ matrix⁻¹x`` by Cholesky, or ``None`` when ``matrix`` is not positive definite."""
    if isinstance(matrix, np.ndarray):
        with one_blas_thread():
            factor, info = lapack.dpotrf(matrix, lower=1, clean=1)
        if info != 0:
            return None

        def solve_numpy(x: Any) -> Any:
            with one_blas_thread():
                return scipy.linalg.cho_solve((factor, True), x, check_finite=False)

        return solve_numpy
    return _torch_cholesky(matrix)


def _torch_cholesky(matrix: Tensor) -> Callable[[Any], Any] | None:
    import torch

    factor, info = torch.linalg.cholesky_ex(matrix)
    if int(info) != 0:
        return None

    def solve(x: Tensor) -> Tensor:
        return torch.cholesky_solve(x, factor)

    return solve


def lu_solver(matrix: Array) -> Callable[[Array], Array]:
    """``x ↦ matrix⁻¹x`` by LU with partial pivoting (Inf/NaN where ``matrix`` is singular)."""
    if isinstance(matrix, np.ndarray):
        with one_blas_thread(), warnings.catch_warnings():
            warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)  # singular: NaNs
            lu = scipy.linalg.lu_factor(matrix, check_finite=False)

        def solve_numpy(x: Any) -> Any:
            with one_blas_thread():
                return scipy.linalg.lu_solve(lu, x, check_finite=False)

        return solve_numpy
    return _torch_lu(matrix)


def _torch_lu(matrix: Tensor) -> Callable[[Any], Any]:
    import torch

    lu, pivots, _ = torch.linalg.lu_factor_ex(matrix)

    def solve(x: Tensor) -> Tensor:
        solved: Tensor = torch.linalg.lu_solve(lu, pivots, x)
        return solved

    return solve


def symmetric_indefinite_solver(matrix: Array) -> tuple[Callable[[Array], Array], int] | None:
    """``(x ↦ matrix⁻¹x, number of eigenvalues of matrix below 0)`` by Bunch–Kaufman
    ``LDLᵀ``, or ``None`` for an exactly zero pivot (an eigenvalue at 0 to rounding)."""
    if isinstance(matrix, np.ndarray):
        with one_blas_thread():
            factor, pivots, info = lapack.dsytrf(matrix, lower=1, lwork=_sytrf_work(len(matrix)))
        if info != 0:
            return None
        below = inertia_below(np.diagonal(factor), np.diagonal(factor, -1), pivots)

        def solve_numpy(x: Any) -> Any:
            with one_blas_thread():
                solved, _ = lapack.dsytrs(factor, pivots, x, lower=1)
            return solved

        return solve_numpy, below
    return _torch_ldl(matrix)


@functools.cache
def _sytrf_work(size: int) -> int:
    """LAPACK's optimal workspace for ``dsytrf`` of ``size`` (its blocked algorithm): scipy's
    default is the minimum, which runs the unblocked one, 2.6 × slower at 784."""
    work, _ = lapack.dsytrf_lwork(size, lower=1)
    return max(int(work), 1)


def _torch_ldl(matrix: Tensor) -> tuple[Callable[[Any], Any], int] | None:
    import torch

    factor, pivots, info = torch.linalg.ldl_factor_ex(matrix)
    if int(info) != 0:
        return None
    below = inertia_below(factor.diagonal(), factor.diagonal(-1), pivots)

    def solve(x: Tensor) -> Tensor:
        solved: Tensor = torch.linalg.ldl_solve(factor, pivots, x)
        return solved

    return solve, below


def inertia_below(diagonal: Any, subdiagonal: Any, pivots: Any) -> int:
    """Number of negative eigenvalues of ``D`` in a Bunch–Kaufman factorisation
    ``A = L D Lᵀ`` (LAPACK ``sytrf``, lower: ``D``'s diagonal on the factor's diagonal, a
    2 × 2 block's off-diagonal entry below it, a block marked by a negative pivot): by
    Sylvester's law of inertia, that of ``A``. A 2 × 2 block with determinant < 0 has one
    negative eigenvalue; one with determinant > 0 two of the sign of its diagonal."""
    diag, sub, piv = diagonal.tolist(), subdiagonal.tolist(), pivots.tolist()
    below, i = 0, 0
    while i < len(diag):
        if piv[i] > 0:
            below += diag[i] < 0
            i += 1
            continue
        a, b, c = diag[i], sub[i], diag[i + 1]
        below += 1 if a * c - b * b < 0 else (2 if a < 0 else 0)
        i += 2
    return below
