r"""Symmetric and triangular products of float64 CPU matrices through scipy's BLAS.

torch has no ``syrk`` or ``trmm``, and the regularizer step's two largest products have
their structure (issue #30):

* the covariance or Gram matrix of the features, :math:`S = \Phi^\top\Phi` or
  :math:`G = \Phi\Phi^\top`, is symmetric: ``dsyrk`` computes one triangle, half the
  multiply-adds of a general product (:func:`symmetric_gram`);
* the features of a task's exact-rank rows, :math:`\Psi = TW^\top`, where the rows ``T``
  (r × d, r ≤ d) are upper trapezoidal after one QR (:func:`condimmune.core.rows.triangular_rows`):
  ``dtrmm`` on the triangle :math:`T_{:, :r}` and a general product on the rest save
  :math:`r^2k/2` of the :math:`rdk` multiply-adds (:func:`trapezoid_times_transpose`).

On the 2-core benchmark machine, one thread, 784 × 784: ``dsyrk`` 10 ms and ``dtrmm`` 11 ms
against 21–23 ms for torch's general product (timed by hand; ``benchmarks/bench_step.py``
times the whole step). The results
equal torch's products up to the order of floating-point sums (``tests/core/test_blas.py``).
Matrices are CPU torch tensors or numpy arrays (:mod:`condimmune.core.arrays`); a tensor is
shared with numpy (``Tensor.numpy``), never copied beyond one operand in Fortran order, and
results come back in the backend given.

scipy's BLAS keeps its own thread pool, which torch's thread setting does not reach (the
CLI's ``--threads`` sets it for a linear run, with numpy's). Each product here runs it on
**one thread** and gives the pool back as it was. Left at its default (all cores), it
fought torch's own pool on the same cores: on 2 cores with 2 torch threads, one 1,024 × 784
step took 257 ms with the pool at 2 threads against 139 ms at one (torch's threads still
spin after each of its products); an earlier version saw ``sytrf`` and ``syrk`` 20–50 ×
slower on a loaded machine. numpy's own OpenBLAS fights it the same way: a 10-epoch
raw-pixel run on numpy arrays with both pools at 2 threads took 15.4 s, against 7.4 s with
scipy's held to one here (README, "Speed").
"""

from __future__ import annotations

from typing import Any, Generic

import array_api_compat
import numpy as np
from scipy.linalg import blas

from condimmune.core.arrays import Array, from_numpy, is_cpu_float64, matmul_into, numpy_view
from condimmune.core.factor import one_blas_thread

__all__ = [
    "TriangularRows",
    "one_blas_thread",
    "product_rows",
    "rows_times_transpose",
    "symmetric_gram",
    "trapezoid_times_transpose",
]


def _check_cpu_float64(x: Array, name: str) -> None:
    if not is_cpu_float64(x) or x.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-d float64 CPU matrix (scipy's BLAS), got {x.ndim}-d "
            f"{x.dtype} on {array_api_compat.device(x)}"
        )


def symmetric_gram(phi: Array, *, rows: bool) -> Array:
    r""":math:`\Phi\Phi^\top` (``rows=True``, n × n) or :math:`\Phi^\top\Phi` (k × k) of the
    float64 CPU matrix ``phi`` (n × k) by ``dsyrk``, both triangles filled."""
    _check_cpu_float64(phi, "phi")
    if 0 in phi.shape:  # BLAS refuses empty operands
        size = phi.shape[0] if rows else phi.shape[1]
        return from_numpy(np.zeros((size, size)), phi)
    # phi's transpose in Fortran order is phi itself in C order: no copy when contiguous
    a = numpy_view(phi).T
    with one_blas_thread():
        upper = blas.dsyrk(1.0, a, trans=1 if rows else 0, lower=0)
    full = upper + np.triu(upper, 1).T  # dsyrk leaves the other triangle at its 0
    return from_numpy(full, phi)


class TriangularRows(Generic[Array]):
    r"""A task's exact-rank rows ``T`` (r × d, r ≤ d, upper trapezoidal: zero below the
    diagonal), ready for :math:`\Psi = TW^\top` by :func:`trapezoid_times_transpose`: the
    triangle :math:`T_{:, :r}` is kept once in Fortran order, as ``dtrmm`` reads it."""

    def __init__(self, t: Array) -> None:
        _check_cpu_float64(t, "t")
        r, d = t.shape
        if r > d:
            raise ValueError(f"t has {r} rows and {d} columns; a trapezoid needs r ≤ d")
        self.rows: Array = t
        self.triangle = np.asfortranarray(numpy_view(t)[:, :r])
        self.rest: Array = t[:, r:]


def trapezoid_times_transpose(t: TriangularRows[Array], weight: Array, *, out: Array) -> Array:
    r""":math:`TW^\top` (r × k) for upper-trapezoidal rows ``T`` (r × d) and ``weight`` W
    (k × d), written into ``out``:
    :math:`T_{:, :r}W_{:, :r}^\top` by ``dtrmm`` plus :math:`T_{:, r:}W_{:, r:}^\top`."""
    _check_cpu_float64(weight, "weight")
    r = t.triangle.shape[0]
    if weight.shape[1] != t.rows.shape[1] or out.shape != (r, weight.shape[0]):
        raise ValueError(
            f"weight {tuple(weight.shape)} and out {tuple(out.shape)} do not fit rows "
            f"{tuple(t.rows.shape)}: need k × {t.rows.shape[1]} and {r} × k"
        )
    # a copy of W₁ᵀ (r × k) in Fortran order, which dtrmm overwrites (asfortranarray would
    # hand it W's own memory when W₁ is all of a contiguous W)
    head = np.array(numpy_view(weight)[:, :r].T, order="F")
    with one_blas_thread():
        product = blas.dtrmm(1.0, t.triangle, head, side=0, lower=0, overwrite_b=1)
    _add_rest(out, product, t.rest, weight[:, r:])
    return out


def _add_rest(out: Any, triangle: Any, rest: Any, weight_rest: Any) -> None:
    """``out ← triangle + rest @ weight_restᵀ`` (the trapezoid's two parts), in place: one
    ``addmm_`` for a tensor (the torch-only code's rounding), numpy's ``+=`` for an array."""
    if isinstance(out, np.ndarray):
        out[...] = triangle
        if rest.shape[1]:
            out += rest @ weight_rest.T
        return
    import torch

    out.copy_(torch.from_numpy(triangle))
    if rest.shape[1]:
        out.addmm_(rest, weight_rest.mT)


def product_rows(x: Array, triangular: bool) -> Array | TriangularRows[Array]:
    """``x`` as :func:`rows_times_transpose` reads it: :class:`TriangularRows` when
    ``triangular`` (``x`` came out of :func:`condimmune.core.rows.triangular_rows`) and ``x``
    has no more rows than columns (taller rows are left as they were), else ``x`` itself."""
    return TriangularRows(x) if triangular and x.shape[0] <= x.shape[1] else x


def rows_times_transpose(
    rows: Array | TriangularRows[Array], weight: Array, *, out: Array
) -> Array:
    r""":math:`XW^\top` written into ``out``: :func:`trapezoid_times_transpose` for triangular
    rows, a general product otherwise."""
    if isinstance(rows, TriangularRows):
        return trapezoid_times_transpose(rows, weight, out=out)
    return matmul_into(rows, weight.mT, out)
