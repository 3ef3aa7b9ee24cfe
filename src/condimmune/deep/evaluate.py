r"""Evaluating a deep immunization: RIR_θ0 over random groups, accuracy, probing attacks.

The reference code's deep evaluation passes the same trained extractor as "original" and
"immunized" (paper.md §6), so its ratios compare a model with itself. Here the original
extractor θ0 (before immunization) and the immunized θ_I are evaluated on the **same**
random subsets: for each of ``groups`` subsets of ``group_size`` samples,

.. math::
    \mathrm{RIR}_{\theta_0} = \frac{\kappa(H_H(\theta_I))/\kappa(H_H(\theta_0))}
                                   {\kappa(H_P(\theta_I))/\kappa(H_P(\theta_0))},
    \qquad H(\theta) = \Phi(\theta)^\top\Phi(\theta)  \quad\text{(Eq. 17–18)}

and the mean ± std over the groups is reported, for both κ rules (honest: σ_min over the
numerical range; paper-compatible: the reference's 1e-6 ridge, :mod:`condimmune.core.spectral`).
With ``group_size < k`` the covariance of a group is rank-deficient by construction, so the
honest κ is over its ``group_size`` non-zero eigenvalues, and the paper-compatible κ is
σ_max / 1e-6 (a ratio of σ_max only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from condimmune.attacks.probes import ProbeAttackResult, attacker_features, probe_attack
from condimmune.core.errors import ArgumentError
from condimmune.core.progress import Progress, ProgressCallback, report, step_counter
from condimmune.core.spectral import (
    log_condition_number_features,
    paper_compatible_condition_number,
)
from condimmune.deep.records import GroupRatios

__all__ = [
    "ProbeCurve",
    "extract_features",
    "group_immunization_ratios",
    "linear_probe_curve",
    "one_hot_targets",
    "top1_accuracy",
]


@torch.no_grad()
def extract_features(
    model: nn.Module,
    data: Dataset[tuple[Tensor, Tensor]],
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    on_progress: ProgressCallback | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(features float64, logits float64, labels)`` of every sample, model in eval mode;
    ``on_progress`` hears the batches."""
    model.eval()
    feats, logits, labels = [], [], []
    loader = DataLoader(data, batch_size=batch_size, shuffle=False)
    for done, (x, y) in enumerate(loader):
        report(on_progress, Progress("features", done, max(len(loader), 1), unit="batch"))
        phi, out = model(x.to(device))
        feats.append(phi.double().cpu())
        logits.append(out.double().cpu())
        labels.append(y)
    report(on_progress, Progress("features", len(loader), max(len(loader), 1), unit="batch"))
    return torch.cat(feats), torch.cat(logits), torch.cat(labels)


def top1_accuracy(logits: Tensor, labels: Tensor) -> float:
    return float((logits.argmax(dim=1) == labels).double().mean())


def _log_kappa(phi: Tensor, paper_compatible: bool) -> float:
    if paper_compatible:
        return math.log(float(paper_compatible_condition_number(phi.mT @ phi)))
    return float(log_condition_number_features(phi))


def group_immunization_ratios(
    benign: tuple[Tensor, Tensor],
    harmful: tuple[Tensor, Tensor],
    *,
    groups: int,
    group_size: int,
    seed: int,
    paper_compatible: bool = False,
    on_progress: ProgressCallback | None = None,
) -> GroupRatios:
    """RIR_θ0 (Eq. 17–18) on paired random groups.

    ``benign`` and ``harmful`` are ``(Φ(θ0), Φ(θ_I))`` pairs of feature matrices of the same
    samples (rows aligned). Each group draws ``group_size`` rows of each task (seeded);
    ``groups ≥ 2`` so that the spread over groups is defined. ``on_progress`` hears the
    groups.
    """
    if groups < 2:
        raise ArgumentError(
            "{groups} = {value}: at least 2 groups are needed for mean ± std", value=groups
        )
    if group_size < 2:
        raise ArgumentError(
            "{group_size} = {value}: a κ needs at least 2 samples per group", value=group_size
        )
    for name, (a, b) in (("benign", benign), ("harmful", harmful)):
        if a.shape != b.shape:
            raise ValueError(f"{name}: original and immunized features differ in shape")
        if a.shape[0] < group_size:
            raise ArgumentError(
                "{group_size} = {value} exceeds the {n} {task} samples available",
                value=group_size,
                n=a.shape[0],
                task=name,
            )
    gen = torch.Generator().manual_seed(seed)
    log_i, log_ii = [], []
    for group in range(groups):
        report(on_progress, Progress("RIR groups", group, groups, unit="group"))
        ratios = []
        for orig, imm in (harmful, benign):
            rows = torch.randperm(orig.shape[0], generator=gen)[:group_size]
            ratios.append(
                _log_kappa(imm[rows], paper_compatible) - _log_kappa(orig[rows], paper_compatible)
            )
        log_i.append(ratios[0])
        log_ii.append(ratios[1])
    report(on_progress, Progress("RIR groups", groups, groups, unit="group"))
    li, lii = torch.tensor(log_i, dtype=torch.float64), torch.tensor(log_ii, dtype=torch.float64)
    i, ii, rir = li.exp(), lii.exp(), (li - lii).exp()
    return GroupRatios(
        float(i.mean()),
        float(i.std()),
        float(ii.mean()),
        float(ii.std()),
        float(rir.mean()),
        float(rir.std()),
        float((li - lii).mean()),
        groups,
        group_size,
    )


def one_hot_targets(labels: Tensor, num_classes: int) -> Tensor:
    """Centred one-hot targets (n × m, float64): the squared-loss probing task of Eq. 16."""
    y = F.one_hot(labels, num_classes).double()
    return y - y.mean(dim=0)


@dataclass(frozen=True)
class ProbeCurve:
    """Cross-entropy linear probing (Fig. 3): held-out accuracy after each full-batch step."""

    accuracy: Tensor
    setting: str

    def steps_to(self, level: float) -> int | None:
        hits = torch.nonzero(self.accuracy >= level)
        return int(hits[0]) if hits.numel() else None


_PROBE_LRS = (1e-3, 1e-2, 1e-1)


def linear_probe_curve(
    train: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    num_classes: int,
    *,
    steps: int,
    on_progress: ProgressCallback | None = None,
) -> ProbeCurve:
    """The attacker of the paper's Fig. 3: a softmax head on frozen features, trained by
    full-batch Adam from zero; the best learning rate of {1e-3, 1e-2, 1e-1} (by the area
    under its held-out accuracy curve) is reported. ``on_progress`` hears the steps."""
    x, y = train
    xt, yt = test
    best: ProbeCurve | None = None
    best_area = -math.inf
    for index, lr in enumerate(_PROBE_LRS):
        count = step_counter(on_progress, "probe", len(_PROBE_LRS), steps + 1, index, f"lr={lr:g}")
        w = torch.zeros(x.shape[1], num_classes, dtype=x.dtype, requires_grad=True)
        b = torch.zeros(num_classes, dtype=x.dtype, requires_grad=True)
        opt = torch.optim.Adam([w, b], lr=lr)
        acc = []
        for step in range(steps + 1):
            count(step)
            with torch.no_grad():
                acc.append(float(((xt @ w + b).argmax(1) == yt).double().mean()))
            opt.zero_grad()
            torch.autograd.backward(F.cross_entropy(x @ w + b, y))
            opt.step()
        count(steps + 1)
        curve = torch.tensor(acc, dtype=torch.float64)
        if float(curve.sum()) > best_area:
            best, best_area = ProbeCurve(curve, f"adam lr={lr:g}"), float(curve.sum())
    assert best is not None
    return best


def probe_pair(
    original: Tensor,
    immunized: Tensor,
    targets: Tensor,
    *,
    target: float,
    budget: int,
    whiten: bool = False,
) -> tuple[ProbeAttackResult[Tensor], ProbeAttackResult[Tensor]]:
    """The paper's attacker (GD, step 1/L, exact) on θ0's and θ_I's features; ``whiten``
    first PCA-whitens each (the attacker that undoes any invertible linear re-scaling)."""
    if whiten:
        original, immunized = (attacker_features(f, "whiten") for f in (original, immunized))
    return (
        probe_attack(original, targets, target=target, budget=budget),
        probe_attack(immunized, targets, target=target, budget=budget),
    )
