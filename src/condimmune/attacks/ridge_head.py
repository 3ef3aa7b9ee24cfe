r"""The closed-form ridge head of the ``lstsq`` attackers (Eq. A2 of docs/attacks.md), in
the cheaper of its two exact forms. With :math:`\tilde A = [A, 1]` the training features
with a bias column (``n × d'``), :math:`Y` the one-hot labels and
:math:`\lambda = \rho\,\mathrm{tr}(\tilde A^\top\tilde A)/d'`:

.. math::  W = (\tilde A^\top\tilde A + \lambda I)^{-1}\tilde A^\top Y
           \quad \text{(primal, a } d' \times d' \text{ system; Eq. A2)}

.. math::  W = \tilde A^\top(\tilde A\tilde A^\top + \lambda I)^{-1} Y
           \quad \text{(dual, an } n \times n \text{ system; Eq. A2')}

The two are equal for every λ > 0 (the push-through identity
:math:`(\tilde A^\top\tilde A + \lambda I)\tilde A^\top = \tilde A^\top(\tilde A\tilde A^\top +
\lambda I)`). The dual is taken when it is the smaller system, ``n < d'``
(:func:`~condimmune.attacks.cost.ridge_uses_kernel`): raw 64 × 64 × 3 pixels with 2,000
training images give ``d' = 12,289``, where one primal trial forms a 1.2 GB Gram matrix and
costs about 15 times the dual's work. An attacker would take the cheaper form, and the
yardstick counts the form taken (:func:`~condimmune.attacks.cost.lstsq_flops`).

:class:`RidgeSystem` forms the Gram (or kernel) matrix once per search; each trial (one ρ)
then solves one system. The primal trial is the same sequence of operations as before the
system was shared, so its numbers are unchanged to the bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from condimmune.attacks.cost import ridge_uses_kernel

__all__ = ["RidgeSystem"]


@dataclass(frozen=True)
class RidgeSystem:
    r"""The fixed part of Eq. A2 / A2' for one task's training features: ``features`` is
    :math:`\tilde A` (float64), ``matrix`` the Gram :math:`\tilde A^\top\tilde A` or, when
    ``kernel``, :math:`\tilde A\tilde A^\top`; ``rhs`` is :math:`\tilde A^\top Y` or
    :math:`Y`; ``trace`` the trace of either (they are equal)."""

    features: Tensor
    matrix: Tensor
    rhs: Tensor
    trace: float
    kernel: bool

    @classmethod
    def of(cls, train_x: Tensor, train_y: Tensor, classes: int) -> RidgeSystem:
        """The system of training features ``train_x`` (n × d) and labels ``train_y``."""
        a = F.pad(train_x.double(), (0, 1), value=1.0)
        y = F.one_hot(train_y, classes).double()
        if ridge_uses_kernel(a.shape[0], a.shape[1]):
            matrix = a @ a.mT
            return cls(a, matrix, y, float(torch.trace(matrix)), kernel=True)
        matrix = a.mT @ a
        return cls(a, matrix, a.mT @ y, float(torch.trace(matrix)), kernel=False)

    def head(self, ridge: float) -> Tensor:
        """``W`` (d' × c) of Eq. A2 for the relative ridge ``ρ = ridge``: the bias is the
        last row, so predictions are ``[A, 1] W``."""
        scale = ridge * self.trace / self.features.shape[1]
        eye = torch.eye(self.matrix.shape[0], dtype=torch.float64)
        solution: Tensor = torch.linalg.solve(self.matrix + scale * eye, self.rhs)
        return self.features.mT @ solution if self.kernel else solution
