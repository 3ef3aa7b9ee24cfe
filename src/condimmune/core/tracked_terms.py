r"""R_well and R_ill terms of the regularizer step on large matrices, from the spectrum's
extremes tracked instead of a full ``eigh``.

:func:`r_well_tracked` and :func:`r_ill_tracked` give the
:class:`~condimmune.core.regularizers.SpectralTerm` of Eq. 3 and Eq. 12 (value, analytic
gradient, step sizes, log κ) from σ₁, σ₂, v₁, the numerical rank k, σ_min and u_k of
:class:`~condimmune.core.tracking.ExtremeEigenTracker`, with the formulas of
:func:`~condimmune.core.regularizers.r_well_term` and
:func:`~condimmune.core.regularizers.r_ill_term`:

.. math:: \nabla_M R_{\text{well}} = \sigma_1v_1v_1^\top - M/p,\qquad
          \nabla_M R_{\text{ill}} = (\sigma_ku_ku_k^\top - M/k)/D^2,\quad
          D = \|M\|_F^2/(2k) - \sigma_k^2/2.

When the tracker cannot certify its extremes the dense ``eigh`` path answers, and the
term's ``fallback`` says so.

Thresholds are those of the dense path: σ_min and k over
:math:`\lambda > \mathrm{rtol}\cdot\sigma_{\max}` with ``rtol = p · eps`` by default, ``p`` the
size of :math:`S = \Psi^\top\Psi` (R_well's log κ always with the default).
"""

from __future__ import annotations

import math
from dataclasses import replace

from condimmune.core.arrays import Array
from condimmune.core.blas import symmetric_gram
from condimmune.core.eigenpairs import EigenvectorMethod
from condimmune.core.regularizers import (
    RankDeficiency,
    SpectralTerm,
    check_ill_rank,
    r_ill_term,
    r_ill_value_and_gradient,
    r_well_term,
    r_well_value_and_gradient,
)
from condimmune.core.spectral import default_rtol, log_condition_number_features
from condimmune.core.tracking import ExtremeEigenTracker

__all__ = ["log_condition_number_tracked", "r_ill_tracked", "r_well_tracked"]


def r_well_tracked(mat: Array, p: int, tracker: ExtremeEigenTracker) -> SpectralTerm[Array]:
    """:func:`~condimmune.core.regularizers.r_well_value_and_gradient` of the symmetric PSD
    float64 ``mat`` from its tracked extremes; the dense path (``fallback=True``) when they
    are not certified."""
    spectrum = tracker.track(
        mat, rtol=default_rtol(p, mat.dtype), top_vector=True, low_vector=False
    )
    if spectrum is None or spectrum.top_vector is None:
        return replace(r_well_value_and_gradient(mat, p, EigenvectorMethod.DENSE), fallback=True)
    v1 = spectrum.top_vector
    extremes = (spectrum.top, max(spectrum.second, 0.0), spectrum.low)
    return r_well_term(mat, p, extremes, v1, fallback=False)


def r_ill_tracked(
    mat: Array,
    p: int,
    rtol: float | None,
    policy: RankDeficiency,
    tracker: ExtremeEigenTracker,
) -> SpectralTerm[Array]:
    """:func:`~condimmune.core.regularizers.r_ill_value_and_gradient` of the symmetric PSD
    float64 ``mat`` from its tracked extremes (the same rank checks and errors); the dense
    path (``fallback=True``) when they are not certified."""
    spectrum = tracker.track(
        mat,
        rtol=default_rtol(p, mat.dtype) if rtol is None else rtol,
        top_vector=False,
        low_vector=True,
    )
    if spectrum is None or spectrum.low_vector is None:
        dense = r_ill_value_and_gradient(mat, p, rtol, policy, EigenvectorMethod.DENSE)
        return replace(dense, fallback=True)
    check_ill_rank(spectrum.rank, p, policy, stacklevel=7)  # the caller of step.gradient
    u = spectrum.low_vector
    return r_ill_term(mat, (spectrum.low, spectrum.top), spectrum.rank, u, fallback=False)


def log_condition_number_tracked(phi: Array, tracker: ExtremeEigenTracker) -> float:
    r""":math:`\log\kappa(\Phi^\top\Phi) = \log\sigma_{\max} - \log\sigma_{\min}` (Eq. 1, default
    ``rtol``) of float64 CPU features ``phi`` (n × k) from the tracked extremes of the smaller
    Gram matrix; :func:`~condimmune.core.spectral.log_condition_number_features` when they
    are not certified."""
    n, k = phi.shape
    mat = symmetric_gram(phi, rows=n < k)
    spectrum = tracker.track(
        mat, rtol=default_rtol(k, mat.dtype), top_vector=False, low_vector=False
    )
    if spectrum is None:
        return float(log_condition_number_features(phi))
    return math.log(spectrum.top) - math.log(spectrum.low)
