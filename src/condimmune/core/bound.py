r"""The ceiling of linear immunization (Prop. 3.2 made quantitative; ``docs/theory.md``).

For an invertible linear extractor θ, :math:`H_P = \theta^\top K_P\theta`,
:math:`H_H = \theta^\top K_H\theta`. :math:`H_P^{-1}H_H` is similar to
:math:`K_P^{-1}K_H`, whose eigenvalues Λ solve :math:`K_H v = \lambda K_P v` whatever θ is,
so :math:`\kappa(H_H)\le\kappa(H_P)\,\kappa(\Lambda)` and

.. math:: \mathrm{RIR}(\theta) \le \kappa(\Lambda)\,\kappa(K_P)/\kappa(K_H).

All κ are over the non-zero spectrum (relative threshold). If
:math:`\mathrm{range}(K_H)\not\subseteq\mathrm{range}(K_P)` the ratio is **unbounded**:
scaling a direction of ``null(K_P)`` that the harmful data excites leaves ``H_P``
unchanged and grows κ(H_H) without limit.

Numerics: everything goes through symmetric eigendecompositions / thin SVDs of the data
factors (``K = FᵀF``), never an explicit inverse. With ``K_P = V_P Σ_P² V_Pᵀ`` over its
range, Λ are the squared singular values of :math:`B = F_H V_P \Sigma_P^{-1}`. Matrices are
torch tensors or numpy arrays (:mod:`condimmune.core.arrays`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Generic

import numpy as np

from condimmune.core._validation import (
    check_matrix,
    check_rtol,
    check_same_device_dtype,
    check_symmetric_psd,
)
from condimmune.core.arrays import Array, namespace, no_grad
from condimmune.core.errors import DegenerateSpectrumError
from condimmune.core.records import JsonRecord
from condimmune.core.spectral import nonzero_mask

__all__ = [
    "ImmunizationBound",
    "closed_form_immunizer",
    "immunization_bound",
    "immunization_bound_features",
]


@dataclass(frozen=True)
class ImmunizationBound(JsonRecord):
    r"""The RIR ceiling :math:`\kappa(\Lambda)\,\kappa(K_P)/\kappa(K_H)` over all invertible
    linear extractors (RIR of Eq. 15; Prop. 3.2 made quantitative).

    ``value`` is ``None`` exactly when ``unbounded``; ``reason`` says why in words and
    ``offending_dim`` is the dimension of the part of ``range(K_H)`` outside
    ``range(K_P)`` (0 when bounded). ``generalized_eigenvalues`` are the non-zero Λ
    (ascending) of ``K_H v = λ K_P v`` restricted to ``range(K_P)``. A JSON record
    (:class:`~condimmune.core.records.JsonRecord`).
    """

    value: float | None
    unbounded: bool
    reason: str
    offending_dim: int
    kappa_lambda: float
    kappa_benign: float
    kappa_harmful: float
    generalized_eigenvalues: tuple[float, ...]


@dataclass(frozen=True)
class _Decomposition(Generic[Array]):
    v_p: Array  # d × r_P orthonormal basis of range(K_P)
    s_p: Array  # r_P singular values of F_P (√ eigenvalues of K_P), descending
    lam: Array  # generalized eigenvalues, descending, r_P of them (zeros kept)
    u_b: Array  # r_P × r_P eigenvectors of BᵀB
    offending_dim: int
    kappa_benign: float
    kappa_harmful: float


def _range_basis(F: Array, rtol: float | None) -> tuple[Array, Array]:
    """Orthonormal basis (d × r) of the row space of F and its singular values.

    The eigenvalues of ``K = FᵀF`` are the squared singular values; those that
    :func:`~condimmune.core.spectral.nonzero_mask` keeps (for a d × d matrix) span the range.
    """
    s: Any
    vh: Any
    _, s, vh = namespace(F).linalg.svd(F, full_matrices=False)
    keep = nonzero_mask(s * s, rtol=rtol, size=F.shape[1])
    return vh[keep].mT, s[keep]


def _decompose(f_p: Array, f_h: Array, rtol: float | None) -> _Decomposition[Array]:
    v_p, s_p = _range_basis(f_p, rtol)
    v_h, s_h = _range_basis(f_h, rtol)
    if v_h.shape[1] == 0 or v_p.shape[1] == 0:
        raise DegenerateSpectrumError("K_P or K_H is numerically zero; no bound exists")
    # Part of range(K_H) outside range(K_P): singular values of (I − V_P V_Pᵀ) F_Hᵀ, non-zero
    # relative to σ_max(K_H).
    xp = namespace(f_p)
    outside = f_h.mT - v_p @ (v_p.mT @ f_h.mT)
    out_s = xp.linalg.svdvals(outside)
    outside_mask = nonzero_mask(
        out_s * out_s, rtol=rtol, size=f_p.shape[1], sigma_max=s_h[0] * s_h[0]
    )
    offending = int(outside_mask.sum())
    b = (f_h @ v_p) / s_p
    lam_b, u_b = xp.linalg.eigh(b.mT @ b)
    lam_b, u_b = xp.clip(xp.flip(lam_b, axis=0), min=0.0), xp.flip(u_b, axis=1)
    return _Decomposition(
        v_p=v_p,
        s_p=s_p,
        lam=lam_b,
        u_b=u_b,
        offending_dim=offending,
        kappa_benign=float(s_p[0] ** 2 / s_p[-1] ** 2),
        kappa_harmful=float(s_h[0] ** 2 / s_h[-1] ** 2),
    )


def _bound_from(dec: _Decomposition[Array], rtol: float | None) -> ImmunizationBound:
    xp = namespace(dec.lam)
    lam_nz = dec.lam[nonzero_mask(dec.lam, rtol=rtol)]
    if lam_nz.shape[0] == 0:
        raise DegenerateSpectrumError("K_H vanishes on range(K_P): every Λ is zero")
    kappa_lambda = float(lam_nz[0] / lam_nz[-1])
    if dec.offending_dim > 0:
        return ImmunizationBound(
            value=None,
            unbounded=True,
            reason=(
                f"range(K_H) is not contained in range(K_P): {dec.offending_dim} direction(s) "
                "excited by the harmful data are never seen by the benign data, so scaling "
                "them leaves the benign Hessian unchanged while κ(H_H) grows without limit"
            ),
            offending_dim=dec.offending_dim,
            kappa_lambda=kappa_lambda,
            kappa_benign=dec.kappa_benign,
            kappa_harmful=dec.kappa_harmful,
            generalized_eigenvalues=tuple(xp.flip(lam_nz, axis=0).tolist()),
        )
    value = kappa_lambda * dec.kappa_benign / dec.kappa_harmful
    reason = (
        "range(K_H) ⊆ range(K_P): RIR ≤ κ(Λ)·κ(K_P)/κ(K_H)"
        if value > 1 + 1e-9
        else "bound = 1: no invertible linear extractor can immunize (RIR ≤ 1)"
    )
    return ImmunizationBound(
        value=value,
        unbounded=False,
        reason=reason,
        offending_dim=0,
        kappa_lambda=kappa_lambda,
        kappa_benign=dec.kappa_benign,
        kappa_harmful=dec.kappa_harmful,
        generalized_eigenvalues=tuple(xp.flip(lam_nz, axis=0).tolist()),
    )


def _factor(K: Array) -> Array:
    """A factor F with FᵀF = K (rows = √eigenvalue · eigenvector)."""
    xp = namespace(K)
    lam, vecs = xp.linalg.eigh(K)
    factor: Array = (vecs * xp.sqrt(xp.clip(lam, min=0.0))).mT
    return factor


def _checked_pair(a: Array, b: Array, names: tuple[str, str]) -> None:
    check_same_device_dtype(**{names[0]: a, names[1]: b})
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same number of columns, got "
            f"{tuple(a.shape)} and {tuple(b.shape)}"
        )


def immunization_bound(K_P: Array, K_H: Array, *, rtol: float | None = None) -> ImmunizationBound:
    """RIR ceiling from the covariances ``K_P = X_PᵀX_P``, ``K_H = X_HᵀX_H`` (d × d)."""
    K_P = check_symmetric_psd(K_P, "K_P")
    K_H = check_symmetric_psd(K_H, "K_H")
    _checked_pair(K_P, K_H, ("K_P", "K_H"))
    rtol = check_rtol(rtol)
    with no_grad(K_P):
        return _bound_from(_decompose(_factor(K_P), _factor(K_H), rtol), rtol)


def immunization_bound_features(
    X_P: Array, X_H: Array, *, rtol: float | None = None
) -> ImmunizationBound:
    """RIR ceiling from the data (n_P × d, n_H × d) directly; thin SVDs, no d × d inverse."""
    X_P = check_matrix(X_P, "X_P")
    X_H = check_matrix(X_H, "X_H")
    _checked_pair(X_P, X_H, ("X_P", "X_H"))
    rtol = check_rtol(rtol)
    with no_grad(X_P):
        return _bound_from(_decompose(X_P, X_H, rtol), rtol)


def closed_form_immunizer(X_P: Array, X_H: Array, *, rtol: float | None = None) -> Array:
    r"""The extractor weight ``W = θᵀ`` (d × d) that attains the bound.

    θ's columns are the generalized eigenvectors (:math:`V^\top K_P V = I`,
    :math:`V^\top K_H V = \Lambda`) scaled by :math:`\lambda_i^{a}`, which keeps RIR at
    the bound for every :math:`a\ge 0` while :math:`\kappa(H_P)=\kappa(\Lambda)^{2a}` and
    :math:`\kappa(H_H)=\kappa(\Lambda)^{1+2a}`. We take the largest ``a`` that still meets
    Def. 3.1 (b), :math:`a^* = \log\kappa(K_P)/(2\log\kappa(\Lambda))`, so that
    :math:`\kappa(H_P)=\kappa(K_P)` and the harmful κ is as large as (b) allows.
    Directions outside ``range(K_P)`` are completed by an orthonormal basis (scaled to
    the smallest used scale) so θ is invertible; the overall scale makes ``‖X_P θ‖_F =
    ‖X_P‖_F``. When the problem is unbounded this is
    the optimum over ``range(K_P)`` only; ``docs/theory.md`` shows how the RIR can then be
    pushed without limit.
    """
    X_P = check_matrix(X_P, "X_P")
    X_H = check_matrix(X_H, "X_H")
    _checked_pair(X_P, X_H, ("X_P", "X_H"))
    rtol = check_rtol(rtol)
    xp = namespace(X_P)
    with no_grad(X_P):
        dec = _decompose(X_P, X_H, rtol)
        nonzero = nonzero_mask(dec.lam, rtol=rtol)
        if not bool(xp.any(nonzero)):
            raise DegenerateSpectrumError("K_H vanishes on range(K_P); nothing to immunize")
        lam_nz = dec.lam[nonzero]
        log_kappa_lambda = math.log(float(lam_nz[0] / lam_nz[-1]))
        a = 0.0 if log_kappa_lambda <= 0 else math.log(dec.kappa_benign) / (2 * log_kappa_lambda)
        # zero Λ (harmful data silent in that direction) get the smallest non-zero scale
        scale = xp.where(nonzero, dec.lam, lam_nz[-1]) ** a
        theta = (dec.v_p / dec.s_p) @ dec.u_b * scale  # d × r_P
        d, r = X_P.shape[1], theta.shape[1]
        if r < d:
            # orthonormal basis of null(K_P): the last d − r columns of a complete QR of V_P
            q, _ = xp.linalg.qr(dec.v_p, mode="complete")
            null_basis = q[:, r:]
            smallest = xp.min(xp.linalg.vector_norm(theta, axis=0))
            theta = xp.concat([theta, null_basis * smallest], axis=1)
        # κ and RIR are scale-free; give the benign features the raw inputs' energy so a
        # head trained on them sees inputs of the usual size.
        theta = theta * xp.sqrt(xp.sum(xp.square(X_P)) / xp.sum(xp.square(X_P @ theta)))
        weight: Array = _contiguous(theta.mT)
        return weight


def _contiguous(x: Array) -> Array:
    """``x`` in row-major memory (a copy of a transposed view)."""
    return np.ascontiguousarray(x) if isinstance(x, np.ndarray) else x.contiguous()
