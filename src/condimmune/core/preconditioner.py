r"""The input-space preconditioner :math:`(X^\top X + \lambda I)^{-1}` of Alg. 1 / Thm 4.3.

In the paper's convention the extractor is :math:`\theta \in \mathbb{R}^{d\times k}` and the
preconditioned step is :math:`\theta - \eta K^{-1}\nabla_\theta R`. A PyTorch
``Linear(d, k)`` stores :math:`W = \theta^\top` (k × d), so the same step reads
:math:`W - \eta\, \nabla_W R\, K^{-1}`: the preconditioner multiplies the weight gradient
from the **right** (the input side). The reference code solves from the left, which is
only shape-valid because its layers are square, and is a different update.

Two exact evaluations of :math:`G (X^\top X + \lambda I)^{-1}` for ``G`` of shape k × d:

* ``dense``: Cholesky factor of the ``d × d`` matrix, computed once; each application is
  two triangular solves, :math:`O(k d^2)`.
* ``woodbury`` (``n < d``): the Woodbury identity evaluated through the thin SVD
  :math:`X = U\Sigma V^\top` (computed once, :math:`O(n^2 d)`):
  :math:`G P = G/\lambda + G V\,\mathrm{diag}(1/(\sigma_i^2+\lambda) - 1/\lambda)V^\top`,
  :math:`O(n k d)` per application. The SVD form, unlike the textbook
  :math:`\tfrac1\lambda(I - X^\top(\lambda I + XX^\top)^{-1}X)`, needs no solve with the
  possibly very ill-conditioned ``λI + XXᵀ`` when ``X`` is rank-deficient.

``X`` and the gradients are torch tensors or numpy arrays (:mod:`condimmune.core.arrays`).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Generic

import array_api_compat

from condimmune.core._choices import parse_choice
from condimmune.core._validation import check_matrix, check_positive_float
from condimmune.core.arrays import Array, add_product, detached, eye_like, is_torch, namespace
from condimmune.core.factor import cholesky_solver

__all__ = ["InputPreconditioner", "PreconditionerMethod"]


class PreconditionerMethod(StrEnum):
    """How :class:`InputPreconditioner` evaluates the inverse."""

    AUTO = "auto"
    DENSE = "dense"
    WOODBURY = "woodbury"


class InputPreconditioner(Generic[Array]):
    r"""Applies :math:`G \mapsto G\,(X^\top X + \lambda I)^{-1}` to k × d weight gradients.

    Args:
        X: data matrix (n × d) whose covariance defines the preconditioner.
        ridge: λ ≥ 0 (the paper uses 1 on the benign side and 1e-7 on the harmful side
            for MNIST). ``0`` is allowed only for the dense method with full-rank ``XᵀX``.
        method: ``"auto"`` picks ``"woodbury"`` when ``n < d`` and ``ridge > 0``, else
            ``"dense"``.
    """

    def __init__(self, X: Array, ridge: float, method: PreconditionerMethod | str = "auto") -> None:
        X = check_matrix(X, "X")
        self.ridge = check_positive_float(ridge, "ridge", allow_zero=True)
        method = parse_choice(PreconditionerMethod, method, "method")
        n, d = X.shape
        if method is PreconditionerMethod.AUTO:
            method = (
                PreconditionerMethod.WOODBURY
                if n < d and self.ridge > 0
                else PreconditionerMethod.DENSE
            )
        if method is PreconditionerMethod.WOODBURY and self.ridge == 0:
            raise ValueError(
                "the Woodbury preconditioner needs ridge > 0 (with n < d, XᵀX is singular)"
            )
        self.method = method
        self.dim: int = d
        self.dtype: Any = X.dtype
        self.device = array_api_compat.device(X)
        self._torch = is_torch(X)
        X = detached(X)
        xp = namespace(X)
        self._solve: Any = None
        if method is PreconditionerMethod.DENSE:
            K = X.mT @ X + self.ridge * eye_like(d, X)
            self._solve = cholesky_solver(K)
            if self._solve is None:
                raise ValueError(
                    f"XᵀX + {self.ridge}·I is not positive definite (X has rank < d = {d}); "
                    "use ridge > 0"
                )
        else:
            _, s, vh = xp.linalg.svd(X, full_matrices=False)
            self._v = vh.mT
            self._inv_shifted = 1.0 / (s * s + self.ridge)

    def apply(self, grad: Array) -> Array:
        r"""Return :math:`G (X^\top X + \lambda I)^{-1}` for ``G`` of shape k × d."""
        grad = check_matrix(grad, "grad")
        device = array_api_compat.device(grad)
        if is_torch(grad) != self._torch or grad.dtype != self.dtype or device != self.device:
            raise TypeError(
                f"grad is {type(grad).__name__} {grad.dtype} on {device} but the "
                f"preconditioner was built from {self.dtype} data on {self.device}; convert "
                "grad to the data's backend, dtype and device"
            )
        if grad.shape[1] != self.dim:
            raise ValueError(
                f"grad has {grad.shape[1]} columns but the preconditioner's input dimension is "
                f"{self.dim}; pass the k × d weight gradient of Linear(d, k)"
            )
        if self.method is PreconditionerMethod.DENSE:
            solved: Array = self._solve(grad.mT).mT
            return solved
        # G/λ + G V diag(1/(σ²+λ) − 1/λ) Vᵀ, fused into one addmm
        gv: Array = (grad @ self._v) * (self._inv_shifted - 1.0 / self.ridge)
        product: Array = add_product(grad, gv, self._v.mT, beta=1.0 / self.ridge)
        return product
