"""The metrics of a linear run, recomputable from its files alone (``condimmune evaluate``)."""

from __future__ import annotations

from typing import Any

from condimmune.attacks.probes import ProbeComparison, compare_probe_attacks
from condimmune.attacks.registry import TRANSFORMED_ATTACKERS
from condimmune.core.arrays import Array, namespace, no_grad
from condimmune.core.bound import immunization_bound_features
from condimmune.core.metrics import (
    ConditionNumbers,
    check_immunization,
    immunization_condition_numbers,
)
from condimmune.experiments.pipelines.linear.options import LinearRunOptions
from condimmune.experiments.plan import RunPlan
from condimmune.experiments.records import (
    BenignTaskScores,
    BoundRecord,
    CheckRecord,
    KappaPair,
    LinearAttackRecord,
    LinearRunMetrics,
    OriginalImmunized,
    RescalingAttack,
)
from condimmune.linear.tasks import LinearTaskData, TaskKind
from condimmune.linear.train import LinearModel, predict, task_loss

__all__ = ["compute_metrics"]


def _benign_metric(kind: TaskKind, model: LinearModel[Array], x: Array, y: Array) -> float:
    """Held-out accuracy (the sign of the output against 0/1 labels) or mean squared error."""
    ns = namespace(x)
    with no_grad(x):
        out = predict(model, x)
        if kind is TaskKind.CLASSIFICATION:
            hits = ns.astype(ns.astype(out > 0, y.dtype) == y, ns.float64)
            return float(ns.mean(hits))
        return float(ns.mean((out - y) ** 2))


def _train_loss(kind: TaskKind, model: LinearModel[Array], x: Array, y: Array) -> float:
    with no_grad(x):
        return float(task_loss(kind, predict(model, x), y))


def compute_metrics(
    plan: RunPlan[LinearRunOptions],
    data: LinearTaskData,
    model: LinearModel[Any],
    raw_model: LinearModel[Any],
    *,
    notes: list[str],
    train_seconds: float = 0.0,
    wall_seconds: float = 0.0,
) -> tuple[LinearRunMetrics, dict[str, ProbeComparison[Any]]]:
    """All metrics of a run from its data and models (used by ``run`` and ``evaluate``),
    and the attack trajectories behind them (plotted by the report). The rows and models are
    numpy arrays in the pipeline (torch tensors work too: every function here takes both)."""
    target, budget = plan.options.attack.target, plan.options.attack.budget
    xp, xh = data.benign.x_train, data.harmful.x_train
    honest = immunization_condition_numbers(xp, xh, model.weight)
    compat = immunization_condition_numbers(xp, xh, model.weight, rule="paper-compatible")
    bound = immunization_bound_features(xp, xh)

    def attack(x: Any, y: Any, transform: str = "none") -> ProbeComparison[Any]:
        return compare_probe_attacks(
            x,
            y,
            model.weight,
            target=target,
            budget=budget,
            transform=transform,
        )

    harmful_attack = attack(xh, data.harmful.y_train)
    benign_attack = attack(xp, data.benign.y_train)
    rescaling = {
        attacker.value: attack(xh, data.harmful.y_train, transform)
        for attacker, transform in TRANSFORMED_ATTACKERS.items()
    }
    loss_raw = _train_loss(data.kind, raw_model, xp, data.benign.y_train)
    loss_imm = _train_loss(data.kind, model, xp, data.benign.y_train)
    check = check_immunization(
        honest, benign_loss_original=loss_raw, benign_loss_immunized=loss_imm
    )
    metric_name = "accuracy" if data.kind is TaskKind.CLASSIFICATION else "mse"
    fraction = None if bound.value is None else honest.rir / bound.value

    def kappas(c: ConditionNumbers) -> KappaPair:
        return KappaPair(
            benign=OriginalImmunized(c.benign_original, c.benign_immunized),
            harmful=OriginalImmunized(c.harmful_original, c.harmful_immunized),
        )

    metrics = LinearRunMetrics(
        experiment=plan.name,
        method=plan.method.name,
        method_options=plan.method_changes() or None,
        seed=plan.seed,
        rir=honest.rir,
        kappa=kappas(honest),
        harmful_ratio=honest.harmful_ratio,
        benign_ratio=honest.benign_ratio,
        rir_paper_compatible=compat.rir,
        kappa_paper_compatible=kappas(compat),
        rir_bound=BoundRecord(bound.value, bound.unbounded, bound.reason),
        rir_fraction_of_bound=fraction,
        benign_task=BenignTaskScores(
            metric=metric_name,
            original=_benign_metric(data.kind, raw_model, data.benign.x_test, data.benign.y_test),
            immunized=_benign_metric(data.kind, model, data.benign.x_test, data.benign.y_test),
            train_loss_original=loss_raw,
            train_loss_immunized=loss_imm,
        ),
        attack=LinearAttackRecord(
            target=target,
            steps_original=harmful_attack.original.steps_to_target,
            steps_immunized=harmful_attack.immunized.steps_to_target,
            harmful_slowdown=harmful_attack.slowdown,
            benign_steps_original=benign_attack.original.steps_to_target,
            benign_steps_immunized=benign_attack.immunized.steps_to_target,
            benign_slowdown=benign_attack.slowdown,
            rescaling_attackers={
                name: RescalingAttack(
                    cmp.original.steps_to_target, cmp.immunized.steps_to_target, cmp.slowdown
                )
                for name, cmp in rescaling.items()
            },
        ),
        immunization_check=CheckRecord(
            immunized=check.immunized,
            harmful_ok=check.harmful_ok,
            harmful_margin=check.harmful_margin,
            benign_ok=check.benign_ok,
            benign_margin=check.benign_margin,
            utility_ok=check.utility_ok,
            utility_gap=check.utility_gap,
        ),
        train_seconds=train_seconds,
        notes=notes,
        wall_seconds=wall_seconds,
    )
    return metrics, {"harmful": harmful_attack, "benign": benign_attack}
