r"""The regularized loss of one deep immunization step, on the gathered global batch.

.. math::
    \mathcal L = \mathrm{CE}_{\text{smooth}}(\text{head}(f_\theta(X_P)), y_P)
      + \lambda_P R_{\text{well}}(S_P) + \lambda_H R_{\text{ill}}(S_H),
    \qquad S = \Phi^\top\Phi,\ \Phi = f_\theta(X)  \quad\text{(Alg. 1, Eq. 13)}

with the covariances of the **global** batch: under data-parallel training every process
gathers the features of all processes (with gradients) before forming ``S``, so the
regularizers see the same matrix as one process on the concatenated batch. With ``n``
gathered rows and ``k`` features, ``n < k`` is the normal case (64 × 512 for ResNet18,
32 × 768 for ViT-B/16): ``S`` is then rank-deficient, both regularizers are evaluated on
the ``n × n`` Gram matrix ``ΦΦᵀ`` (same non-zero spectrum), and ``R_ill`` takes σ_min over
the non-zero spectrum with the relative threshold (docs/deep.md). The spectral parts
always run in float64 with autocast off, whatever the training precision. The method's
term is its deep version's penalty (:class:`~condimmune.methods.base.ConfiguredMethod`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from lightning.fabric import Fabric
from torch import Tensor, nn

from condimmune.core.spectral import log_condition_number_features
from condimmune.methods.base import ConfiguredMethod, DeepSolver, PenaltyInputs

__all__ = [
    "PenaltyTerms",
    "StepOptions",
    "immunization_penalty",
    "normalized_features",
    "step_loss",
]


def normalized_features(phi: Tensor) -> Tensor:
    r"""``Φ · sqrt(k / ‖Φ‖_F²)``: its covariance is ``S · k / tr S`` (mean eigenvalue 1).

    κ is scale-free, but the regularizers are not (``R_well`` grows like scale⁴, ``R_ill``
    shrinks like scale⁻⁴), so raw regularizers can be lowered by rescaling the features
    without changing κ; normalised ones cannot.
    """
    out: Tensor = phi * math.sqrt(phi.shape[1]) / torch.linalg.vector_norm(phi)
    return out


@dataclass(frozen=True)
class PenaltyTerms:
    """The regularization added to the task loss, and what it saw (for the history)."""

    total: Tensor
    log_kappa_benign: float
    log_kappa_harmful: float
    harmful_rank_deficient: bool


def immunization_penalty(
    method: ConfiguredMethod,
    benign: Tensor,
    harmful: Tensor,
    *,
    normalize: bool = False,
    harmful_labels: Tensor | None = None,
    harmful_classes: int = 0,
    benign_log_kappa_cap: float | None = None,
) -> PenaltyTerms:
    r"""The method's term, e.g. ``λ_P R_well(S_P) + λ_H R_ill(S_H)`` (Eq. 3, 12, 13), in float64.

    ``method`` is a method configured for deep models whose solver is ``PENALTY``;
    ``benign`` and ``harmful`` are the (gathered) feature batches ``n × k``; with
    ``normalize`` the regularizers see ``S · k / tr S``. With ``benign_log_kappa_cap``, the
    method is told (``PenaltyInputs.harmful_on``) to leave its harmful term out of this step
    while the benign batch's log κ exceeds the cap (the guard of Def. 3.1 (b), as for linear
    extractors).
    """
    deep = method.deep
    if deep.solver is not DeepSolver.PENALTY or deep.penalty is None:
        raise ValueError(f"method {method.name!r} is not trained with a penalty on deep nets")
    if not (bool(torch.isfinite(benign).all()) and bool(torch.isfinite(harmful).all())):
        raise FloatingPointError(
            "the features contain NaN or Inf (training diverged); lower the learning rate or "
            "the method's weights"
        )
    with torch.autocast(device_type=benign.device.type, enabled=False):
        pb, ph = benign.to(torch.float64), harmful.to(torch.float64)
        if normalize:
            pb, ph = normalized_features(pb), normalized_features(ph)
        with torch.no_grad():
            log_kb = float(log_condition_number_features(pb.detach()))
            log_kh = float(log_condition_number_features(ph.detach()))
        harmful_on = benign_log_kappa_cap is None or log_kb <= benign_log_kappa_cap
        inputs = PenaltyInputs(pb, ph, harmful_labels, harmful_classes, harmful_on)
        total = deep.penalty(inputs, method.options)
    return PenaltyTerms(total, log_kb, log_kh, min(ph.shape) < ph.shape[1])


def _gather(fabric: Fabric | None, x: Tensor) -> Tensor:
    """All processes' rows, in rank order, with gradients flowing back to each process."""
    if fabric is None or fabric.world_size == 1:
        return x
    gathered = fabric.all_gather(x, sync_grads=True)
    if not isinstance(gathered, Tensor):
        raise TypeError(f"all_gather of a tensor returned {type(gathered).__name__}")
    return gathered.reshape(-1, *x.shape[1:])


@dataclass(frozen=True)
class StepOptions:
    """What one step's loss needs besides the data: the method with its options, the
    label smoothing of the task loss and whether the covariances are normalised."""

    method: ConfiguredMethod
    label_smoothing: float = 0.1
    normalize_covariance: bool = False


def step_loss(
    fabric: Fabric | None,
    model: nn.Module,
    benign: tuple[Tensor, Tensor],
    harmful: tuple[Tensor, Tensor],
    options: StepOptions,
    *,
    harmful_classes: int,
    benign_log_kappa_cap: float | None = None,
) -> tuple[Tensor, float, PenaltyTerms]:
    """One step's loss on this process's share of the global batch: ``(loss, task, penalty)``.

    One forward pass on the concatenated benign and harmful images (DDP sees exactly one).
    The task loss is this share's mean (DDP averages it over processes); the penalty is
    evaluated on the gathered global batch, identically on every process: the all-gather's
    backward sums the processes' gradients, and DDP's averaging then yields exactly the
    single-process gradient.
    """
    (xb, yb), (xh, yh) = benign, harmful
    features, logits = model(torch.cat([xb, xh]))
    nb = xb.shape[0]
    task = F.cross_entropy(logits[:nb], yb, label_smoothing=options.label_smoothing)
    penalty = immunization_penalty(
        options.method,
        _gather(fabric, features[:nb]),
        _gather(fabric, features[nb:]),
        normalize=options.normalize_covariance,
        harmful_labels=_gather(fabric, yh),
        harmful_classes=harmful_classes,
        benign_log_kappa_cap=benign_log_kappa_cap,
    )
    return task + penalty.total.to(task.dtype), float(task.detach()), penalty
