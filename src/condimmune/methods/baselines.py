r"""The paper's baselines: ``none``, ``opt-kappa`` and ``imma``.

* ``none``: no immunization. Linear: ``W`` frozen at the identity, only the head trains.
  Deep: the last blocks and the head train on the task loss alone.
* ``opt-kappa``: ``λ ∇(log κ(S_P) − log κ(S_H))`` through the eigenvalue gradients,
  unpreconditioned (the paper's "Opt κ").
* ``imma`` (Zheng & Yeh 2024, adapted): ``−λ L_H(w_T)``, the harmful squared probing loss
  after ``T`` unrolled GD steps (step ``1/L``) of a simulated attacker from ``w = 0``,
  maximised (bi-level).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from condimmune.core.arrays import detached, eye_like, namespace, no_grad
from condimmune.core.eigenpairs import (
    EigenvectorChooser,
    EigenvectorMethod,
    log_condition_number_features_gradient,
    psd_eigenpair,
)
from condimmune.core.rows import nonzero_columns
from condimmune.core.spectral import log_condition_number_features
from condimmune.methods.base import (
    DeepSolver,
    DeepVersion,
    Float,
    LinearPlan,
    LinearProblem,
    LinearVersion,
    MethodOptions,
    MethodSpec,
    NoOptions,
    PenaltyInputs,
)

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "IMMA",
    "NONE",
    "OPT_KAPPA",
    "ImmaOptions",
    "OptKappaOptions",
    "imma_linear_direction",
    "imma_penalty",
]


class OptKappaOptions(MethodOptions):
    """λ of ``λ (log κ(S_P) − log κ(S_H))``."""

    weight: Float = Field(default=1.0, ge=0, description="λ, ≥ 0")


class ImmaOptions(MethodOptions):
    """The weight of −L_H(w_T) and the simulated attacker's unrolled steps T."""

    weight: Float = Field(default=1.0, ge=0, description="weight of the bi-level term, ≥ 0")
    inner_steps: int = Field(
        default=5, ge=1, le=1000, description="unrolled GD steps of the simulated attack, 1–1000"
    )


def _identity(problem: LinearProblem) -> Any:
    """The identity extractor, in the rows' backend, dtype and device."""
    x = problem.benign_x
    return eye_like(x.shape[1], x)


def _none_linear(problem: LinearProblem, options: NoOptions) -> LinearPlan:
    return LinearPlan(_identity(problem), train_extractor=False)


def _none_penalty(inputs: PenaltyInputs, options: NoOptions) -> Tensor:
    return inputs.benign.new_zeros(())


class _OptKappaDirection:
    r"""``λ ∇_W (log κ(S_P) − log κ(S_H))`` for ``Φ = X Wᵀ``: ``λ (A_Pᵀ X_P − A_Hᵀ X_H)``
    with ``A = ∂ log κ / ∂Φ`` from
    :func:`~condimmune.core.eigenpairs.log_condition_number_features_gradient` (the eigenvalue
    gradients autograd would take, from ``eigvalsh`` and inverse iteration), in the rows'
    backend.
    All-zero input columns (raw-MNIST borders) are left out of the products: they add exact
    zeros to ``Φ``, and the gradient is zero there."""

    def __init__(self, problem: LinearProblem, scale: float) -> None:
        self.scale = scale
        self.tasks: list[tuple[Any, Any | None]] = []
        for x in (problem.benign_x, problem.harmful_x):
            columns = nonzero_columns(x)
            self.tasks.append((x if columns is None else x[:, columns], columns))
        self.choosers = [EigenvectorChooser(EigenvectorMethod.AUTO) for _ in self.tasks]

    def __call__(self, weight: Any) -> Any:
        w = detached(weight)
        direction = namespace(w).zeros_like(w)
        for (x, columns), chooser, sign in zip(self.tasks, self.choosers, (1.0, -1.0), strict=True):
            w_x = w if columns is None else w[:, columns]
            term = log_condition_number_features_gradient(
                x @ w_x.mT, eigenvectors=chooser.next_method()
            )
            chooser.record(term.fallback)
            _add_columns(direction, columns, term.gradient.mT @ x, sign * self.scale)
        return direction


def _add_columns(direction: Any, columns: Any | None, grad: Any, alpha: float) -> None:
    """``direction[:, columns] += alpha · grad`` in place (every column when ``None``): a
    tensor's fused ``add_``/``index_add_`` (the numbers of the torch-only code), numpy's
    indexed ``+=`` for an array (``columns`` are unique, so no update is lost)."""
    if not isinstance(direction, np.ndarray):
        if columns is None:
            direction.add_(grad, alpha=alpha)
        else:
            direction.index_add_(1, columns, grad, alpha=alpha)
    elif columns is None:
        direction += alpha * grad
    else:
        direction[:, columns] += alpha * grad


def _opt_kappa_linear(problem: LinearProblem, options: OptKappaOptions) -> LinearPlan:
    return LinearPlan(
        _identity(problem),
        train_extractor=True,
        gradient_direction=_OptKappaDirection(problem, options.weight),
    )


def _opt_kappa_penalty(inputs: PenaltyInputs, options: OptKappaOptions) -> Tensor:
    return options.weight * (
        log_condition_number_features(inputs.benign) - log_condition_number_features(inputs.harmful)
    )


def _top_eigenvector(phi: Any) -> tuple[bool, Any]:
    """Whether σ_max(ΦᵀΦ) is read on the Gram side (``n < k``), and its top eigenvector there
    (``u``, n × 1, else ``v``, k × 1), outside autograd."""
    with no_grad(phi):
        gram = phi.shape[0] < phi.shape[1]
        mat = phi @ phi.mT if gram else phi.mT @ phi
        _, top, _ = psd_eigenpair(
            mat, EigenvectorMethod.AUTO, lambda values: len(values) - 1, "Phi's covariance"
        )
    return gram, top


def _largest_eigenvalue(phi: Tensor) -> Tensor:
    r""":math:`\sigma_{\max}(\Phi^\top\Phi) = \|\Phi v\|^2` with ``v`` its top eigenvector held
    fixed (on the Gram side, :math:`\|\Phi^\top u\|^2`), differentiable in ``Φ``.

    The value is ``matrix_norm(Φ, 2)²`` and so is the gradient, :math:`2\Phi vv^\top`: the
    Rayleigh quotient is stationary at its maximiser, so ``v``'s own dependence on ``Φ``
    contributes nothing. One ``eigvalsh`` and an inverse iteration (the dense ``eigh`` when
    the top eigenvalue is clustered) replace the full SVD that autograd needs for
    ``matrix_norm``, which was two thirds of the raw-pixel IMMA step (issue 13).
    """
    gram, top = _top_eigenvector(phi)
    value: Tensor = (top.mT @ phi if gram else phi @ top).square().sum()
    return value


def imma_linear_direction(weight: Any, x: Any, y: Any, steps: int) -> Any:
    """∇_W of −L_H(w_T): the harmful squared probing loss after ``steps`` unrolled GD steps
    of size 1/L from ``w = 0``. The step 1/L is part of the simulated attack and is
    differentiated too (as in :func:`imma_penalty`): the objective is then invariant to
    rescaling ``W``, so its gradient has no component along ``W`` itself.

    Tensors: autograd through the unrolled steps (its rounding: the numbers the goldens
    pin); numpy arrays: the same gradient written out, :func:`imma_linear_direction_reverse_mode`.
    """
    if isinstance(weight, np.ndarray):
        return imma_linear_direction_reverse_mode(weight, x, y, steps)
    import torch

    w = weight.detach().requires_grad_(True)
    phi = x @ w.mT
    n = phi.shape[0]
    lipschitz = 2.0 / n * _largest_eigenvalue(phi)
    head = torch.zeros(phi.shape[1], dtype=phi.dtype)
    for _ in range(steps):
        resid = phi @ head - y
        head = head - (2.0 / n / lipschitz) * (phi.mT @ resid)
    loss = ((phi @ head - y) ** 2).mean()
    (grad,) = torch.autograd.grad(-loss, w)
    return grad


def imma_linear_direction_reverse_mode(weight: Any, x: Any, y: Any, steps: int) -> Any:
    r""":func:`imma_linear_direction` by reverse mode written out, in the array API (either
    backend, no autograd).

    Forward, with ``Φ = X Wᵀ``, :math:`h_0 = 0` and :math:`c = 1/\lambda` (the step
    ``2/n / L`` with ``L = 2λ/n``, :math:`\lambda = \sigma_{\max}(\Phi^\top\Phi)`):

    .. math:: r_t = \Phi h_t - y,\quad s_t = \Phi^\top r_t,\quad h_{t+1} = h_t - c\,s_t,
              \qquad f = -\tfrac1n \|\Phi h_T - y\|^2.

    Backward from :math:`\bar r_T = -\tfrac2n r_T`, :math:`\bar\Phi = \bar r_T h_T^\top`,
    :math:`\bar h_T = \Phi^\top \bar r_T`, for ``t = T−1 … 0``:

    .. math:: \bar c \mathrel{-}= \bar h_{t+1}^\top s_t,\quad
              \bar s_t = -c\,\bar h_{t+1},\quad \bar r_t = \Phi \bar s_t,\quad
              \bar\Phi \mathrel{+}= r_t \bar s_t^\top + \bar r_t h_t^\top,\quad
              \bar h_t = \bar h_{t+1} + \Phi^\top \bar r_t;

    then through the step, :math:`\bar\lambda = -\bar c\,c^2` and
    :math:`\bar\Phi \mathrel{+}= 2\bar\lambda\,\Phi vv^\top` (Gram side:
    :math:`2\bar\lambda\,uu^\top\Phi`; ``v``'s own change contributes nothing, see
    :func:`_largest_eigenvalue`), and :math:`\nabla_W f = \bar\Phi^\top X`.
    """
    xp = namespace(x)
    phi = x @ detached(weight).mT
    n = phi.shape[0]
    gram, top = _top_eigenvector(phi)
    projected = top.mT @ phi if gram else phi @ top  # uᵀΦ (1 × k) or Φv (n × 1)
    step = 2.0 / n / (2.0 / n * xp.sum(projected**2))
    head = xp.zeros_like(phi[0, :])
    tape = []  # (h_t, r_t, s_t) of each step, read back by the backward pass
    for _ in range(steps):
        resid = phi @ head - y
        tape.append((head, resid, phi.mT @ resid))
        head = head - step * tape[-1][2]
    resid_bar = (-2.0 / n) * (phi @ head - y)
    phi_bar = xp.linalg.outer(resid_bar, head)
    head_bar = phi.mT @ resid_bar
    step_bar = 0.0
    for head, resid, gradient in reversed(tape):
        step_bar = step_bar - xp.sum(head_bar * gradient)
        gradient_bar = -step * head_bar
        resid_bar = phi @ gradient_bar
        phi_bar = phi_bar + xp.linalg.outer(resid, gradient_bar) + xp.linalg.outer(resid_bar, head)
        head_bar = head_bar + phi.mT @ resid_bar
    lam_bar = -step_bar * step**2
    rank_one = top @ projected if gram else projected @ top.mT
    return (phi_bar + (2.0 * lam_bar) * rank_one).mT @ x


def _imma_linear(problem: LinearProblem, options: ImmaOptions) -> LinearPlan:
    xh, yh = problem.harmful_x, problem.harmful_y

    def direction(weight: Any) -> Any:
        return options.weight * imma_linear_direction(weight, xh, yh, options.inner_steps)

    return LinearPlan(_identity(problem), train_extractor=True, gradient_direction=direction)


def imma_penalty(phi: Tensor, y: Tensor, num_classes: int, steps: int) -> Tensor:
    """Minus the harmful squared probing loss after ``steps`` unrolled GD steps (step 1/L)
    from ``w = 0`` on centred one-hot targets: minimising it makes the simulated attack fail."""
    import torch
    import torch.nn.functional as F

    target = F.one_hot(y, num_classes).to(phi.dtype)
    target = target - target.mean(dim=0)
    n = phi.shape[0]
    lipschitz = 2.0 / n * torch.linalg.matrix_norm(phi, ord=2) ** 2
    w = torch.zeros(phi.shape[1], num_classes, dtype=phi.dtype, device=phi.device)
    for _ in range(steps):
        w = w - (2.0 / n) * phi.mT @ (phi @ w - target) / lipschitz
    return -((phi @ w - target) ** 2).sum() / n


def _imma_penalty(inputs: PenaltyInputs, options: ImmaOptions) -> Tensor:
    if inputs.harmful_labels is None or inputs.harmful_classes < 2:
        raise ValueError("imma needs the harmful labels and their number of classes")
    return options.weight * imma_penalty(
        inputs.harmful, inputs.harmful_labels, inputs.harmful_classes, options.inner_steps
    )


NONE = MethodSpec(
    name="none",
    description="no immunization: identity extractor, head trained on the benign task",
    linear=LinearVersion(NoOptions, _none_linear),
    deep=DeepVersion(NoOptions, DeepSolver.PENALTY, penalty=_none_penalty),
)
OPT_KAPPA = MethodSpec(
    name="opt-kappa",
    description="baseline: task loss + λ_P log κ(benign) − λ_H log κ(harmful) through "
    "eigenvalue gradients",
    linear=LinearVersion(OptKappaOptions, _opt_kappa_linear),
    deep=DeepVersion(OptKappaOptions, DeepSolver.PENALTY, penalty=_opt_kappa_penalty),
)
IMMA = MethodSpec(
    name="imma",
    description="baseline (Zheng & Yeh 2024, adapted): maximize the harmful probing loss after "
    "an unrolled simulated attack",
    linear=LinearVersion(ImmaOptions, _imma_linear),
    deep=DeepVersion(ImmaOptions, DeepSolver.PENALTY, penalty=_imma_penalty),
)
