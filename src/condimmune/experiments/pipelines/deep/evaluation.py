"""θ0 vs θ_I of a deep run: RIR_θ0 on random groups, benign accuracy, three probing attackers
(:mod:`condimmune.deep.evaluate` has the definitions, Eq. 17–18 and Fig. 3)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from condimmune.attacks.probes import ProbeAttackResult
from condimmune.core.progress import Progress, ProgressCallback, report, steps_within
from condimmune.deep.backbones import DeepModel
from condimmune.deep.evaluate import (
    ProbeCurve,
    extract_features,
    group_immunization_ratios,
    linear_probe_curve,
    one_hot_targets,
    probe_pair,
    top1_accuracy,
)
from condimmune.deep.head import linear_probe_top1
from condimmune.experiments.pipelines.deep.data import DeepTaskData
from condimmune.experiments.pipelines.deep.options import DeepRunOptions
from condimmune.experiments.plan import RunPlan
from condimmune.experiments.records import (
    DeepAttackRecord,
    DeepRunMetrics,
    DeepTrainingRecord,
    GdPairRecord,
    GroupRatioPair,
    OriginalImmunized,
    ProbeCurveRecord,
)

__all__ = ["DeepCurves", "evaluate_deep"]

_PAPER_GROUPS, _PAPER_GROUP_SIZE = 20, 100


@dataclass(frozen=True)
class DeepCurves:
    """What the figures of a deep run plot: GD trajectories (θ0, θ_I), the softmax probes'
    accuracy curves, one group's covariance spectra per task, and θ0's pre-training loss."""

    gd: tuple[ProbeAttackResult[Tensor], ProbeAttackResult[Tensor]]
    gd_whitened: tuple[ProbeAttackResult[Tensor], ProbeAttackResult[Tensor]]
    probe: dict[str, ProbeCurve]
    spectra: dict[str, dict[str, Tensor]]
    pretrain_loss: list[float] = field(default_factory=list)


def _pair_record(pair: tuple[ProbeAttackResult[Tensor], ProbeAttackResult[Tensor]]) -> GdPairRecord:
    orig, imm = pair
    return GdPairRecord(
        steps_original=orig.steps_to_target,
        steps_immunized=imm.steps_to_target,
        slowdown=imm.steps_to_target / max(orig.steps_to_target, 1),
        condition_number_original=orig.condition_number,
        condition_number_immunized=imm.condition_number,
    )


class _Stages:
    """Reports the evaluation's stages (depth 0, task ``"evaluate"``); :meth:`start` returns
    the callback of the stage's own steps (depth 1)."""

    def __init__(self, callback: ProgressCallback | None, names: list[str]) -> None:
        self.callback, self.names = callback, names

    def start(
        self, name: str, parts: int = 1, part: int = 0, item: str = ""
    ) -> ProgressCallback | None:
        """Say that stage ``name`` starts (at its first part); the callback of part ``part``
        of its ``parts``, named ``item``."""
        if part == 0:
            index = self.names.index(name)
            report(self.callback, Progress("evaluate", index, len(self.names), name, "stage"))
        return steps_within(self.callback, name, parts, part, item)

    def end(self) -> None:
        report(self.callback, Progress("evaluate", len(self.names), len(self.names), unit="stage"))


def evaluate_deep(
    plan: RunPlan[DeepRunOptions],
    data: DeepTaskData,
    original: DeepModel,
    immunized: DeepModel,
    *,
    on_progress: ProgressCallback | None = None,
) -> tuple[DeepRunMetrics, DeepCurves]:
    """Metrics and figure data of θ0 vs θ_I; the training fields of the record are left at
    zero for the runner to fill in. ``on_progress`` hears the stages (task ``"evaluate"``)
    and, at depth 1, the steps of each."""
    e = plan.options.evaluation
    bs = e.batch_size
    stages = _Stages(
        on_progress,
        [
            "features θ0",
            "features θ_I",
            *(["benign probes"] if e.benign_probe_steps else []),
            "RIR groups",
            "GD attacks",
            "probe θ0",
            "probe θ_I",
        ],
    )
    feats = {}
    for name, model in (("original", original), ("immunized", immunized)):
        stage = f"features {'θ0' if name == 'original' else 'θ_I'}"
        sets = (
            ("benign train", data.benign_train_eval),
            ("harmful train", data.harmful_train_eval),
            ("benign test", data.benign.test),
            ("harmful test", data.harmful.test),
        )
        (pb, _, yb), (ph, _, yh), (pb_test, logits, yb_test), (ph_test, _, yh_test) = (
            extract_features(
                model, images, batch_size=bs, on_progress=stages.start(stage, 4, part, label)
            )
            for part, (label, images) in enumerate(sets)
        )
        feats[name] = {
            "benign": pb,
            "harmful": ph,
            "logits": logits,
            "benign_test": pb_test,
            "harmful_test": ph_test,
        }
    o, i = feats["original"], feats["immunized"]
    benign_probe = None
    if e.benign_probe_steps:  # a fresh softmax head on each extractor's benign features
        stages.start("benign probes")
        top1 = {
            name: linear_probe_top1(
                (f["benign"], yb),
                (f["benign_test"], yb_test),
                data.benign.num_classes,
                steps=e.benign_probe_steps,
            )
            for name, f in feats.items()
        }
        benign_probe = OriginalImmunized(original=top1["original"], immunized=top1["immunized"])

    # the paper's own protocol (20 groups of 100), whenever the data allow it
    enough = min(o["benign"].shape[0], o["harmful"].shape[0]) >= _PAPER_GROUP_SIZE
    same = (e.groups, e.group_size) == (_PAPER_GROUPS, _PAPER_GROUP_SIZE)
    parts = 4 if enough and not same else 2

    def ratios(groups: int, size: int, first: int) -> GroupRatioPair:
        honest, compatible = (
            group_immunization_ratios(
                (o["benign"], i["benign"]),
                (o["harmful"], i["harmful"]),
                groups=groups,
                group_size=size,
                seed=plan.seed,
                paper_compatible=paper,
                on_progress=stages.start(
                    "RIR groups",
                    parts,
                    first + int(paper),
                    f"{groups}×{size}, {'paper-compatible' if paper else 'honest'} κ",
                ),
            )
            for paper in (False, True)
        )
        return GroupRatioPair(honest=honest, paper_compatible=compatible)

    rir = ratios(e.groups, e.group_size, 0)
    paper_protocol: GroupRatioPair | None = None
    if same:
        paper_protocol = rir  # the same groups (same seed): computed once
    else:
        paper_protocol = ratios(_PAPER_GROUPS, _PAPER_GROUP_SIZE, 2) if enough else None
    targets = one_hot_targets(yh, data.harmful.num_classes)
    stages.start("GD attacks")
    gd = probe_pair(
        o["harmful"], i["harmful"], targets, target=e.attack_target, budget=e.attack_budget
    )
    wh = probe_pair(
        o["harmful"],
        i["harmful"],
        targets,
        target=e.attack_target,
        budget=e.attack_budget,
        whiten=True,
    )
    probes: dict[str, ProbeCurve] = {
        name: linear_probe_curve(
            (f["harmful"], yh),
            (f["harmful_test"], yh_test),
            data.harmful.num_classes,
            steps=e.probe_steps,
            on_progress=stages.start(f"probe {'θ0' if name == 'original' else 'θ_I'}"),
        )
        for name, f in feats.items()
    }
    stages.end()
    level = 0.95 * float(probes["original"].accuracy.max())
    steps_o, steps_i = probes["original"].steps_to(level), probes["immunized"].steps_to(level)
    metrics = DeepRunMetrics(
        experiment=plan.name,
        method=plan.method.name,
        method_options=plan.method_changes() or None,
        seed=plan.seed,
        backbone=plan.options.model.backbone.value,
        feature_dim=int(o["benign"].shape[1]),
        benign_task=data.benign.description,
        harmful_task=data.harmful.description,
        rir_theta0=rir,
        rir_theta0_paper_protocol=paper_protocol,
        benign_accuracy=OriginalImmunized(
            original=top1_accuracy(o["logits"], yb_test),
            immunized=top1_accuracy(i["logits"], yb_test),
        ),
        attack=DeepAttackRecord(
            gd=_pair_record(gd),
            gd_whitened=_pair_record(wh),
            linear_probe=ProbeCurveRecord(
                level=level,
                steps_original=steps_o,
                steps_immunized=steps_i,
                slowdown=(steps_i if steps_i is not None else e.probe_steps + 1)
                / max(steps_o or 1, 1),
                final_accuracy_original=float(probes["original"].accuracy[-1]),
                final_accuracy_immunized=float(probes["immunized"].accuracy[-1]),
                setting_original=probes["original"].setting,
                setting_immunized=probes["immunized"].setting,
            ),
        ),
        train_seconds=0.0,
        training=DeepTrainingRecord(0, 0, None, 0, plan.options.fabric.devices),
        wall_seconds=0.0,
        benign_probe=benign_probe,
    )
    curves = DeepCurves(
        gd=gd,
        gd_whitened=wh,
        probe=probes,
        spectra={
            task: {
                name: torch.linalg.svdvals(feats[name][task][: e.group_size]) ** 2
                for name in ("original", "immunized")
            }
            for task in ("benign", "harmful")
        },
    )
    return metrics, curves
