"""The deep attack suite: every :class:`~condimmune.attacks.registry.DeepAttacker` on a
released model θ0 and its immunized θ_I, harmful and benign task, each with its own Optuna
search (the same trial budget for both models), and the worst case over attackers under
the utility cap (:mod:`condimmune.attacks.deep_records` defines the numbers).

The suite sees tensors and modules only (:class:`ReleasedModel`); building them from a
deep network and its data is :mod:`condimmune.deep.surface`'s job.
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

from torch import nn

from condimmune.attacks.deep_records import (
    DeepAttackerSummary,
    DeepAttackOptions,
    DeepAttackSuite,
    DeepWorstCase,
    TaskAttack,
    UtilityCheck,
    redact,
)
from condimmune.attacks.deep_train import (
    Budget,
    TaskTensors,
    best_so_far_area,
    curvature,
    fit_task_transform,
    network_curve,
    probe_curve,
)
from condimmune.attacks.registry import (
    DEEP_ATTACKERS,
    DeepAttacker,
    DeepAttackerSpec,
    DeepFamily,
    Optimizer,
)
from condimmune.attacks.search import Objective, SearchOptions, TrialResult, paired_search
from condimmune.core._choices import parse_choice

__all__ = ["ReleasedModel", "Task", "run_deep_suite", "suite_record"]


class Task(StrEnum):
    HARMFUL = "harmful"
    BENIGN = "benign"


@dataclass(frozen=True)
class ReleasedModel:
    """What an attacker takes from one released model, per task: the released features,
    the (pooled) activations entering the immunized blocks (``skip``), the activations
    themselves (``prefix``) and the images; ``blocks`` maps ``prefix`` activations to the
    released features, ``network`` maps images to them. Families an attacker list does not
    use may be left ``None``."""

    features: Mapping[Task, TaskTensors]
    feature_dim: int
    skip: Mapping[Task, TaskTensors] | None = None
    prefix: Mapping[Task, TaskTensors] | None = None
    images: Mapping[Task, TaskTensors] | None = None
    blocks: nn.Module | None = None
    network: nn.Module | None = None


def _trial_seed(seed: int, attacker: DeepAttacker, task: Task, number: int) -> int:
    text = f"{seed}/{attacker.value}/{task.value}/{number}".encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:4], "little")


def _missing(attacker: DeepAttacker, field: str) -> ValueError:
    return ValueError(f"attacker {attacker.value} needs the model's {field}, which is missing")


def _objective(
    attacker: DeepAttacker,
    spec: DeepAttackerSpec,
    model: ReleasedModel,
    task: Task,
    budget: Budget,
    seed: int,
) -> Objective:
    """``(params, trial number) → TrialResult`` of one attacker on one model and task."""
    family = spec.family
    module: nn.Module | None = None
    scale: float | None = None
    if family is DeepFamily.PROBE:
        data = fit_task_transform(spec.transform, model.features[task])
        scale = curvature(data) if spec.optimizer is Optimizer.MOMENTUM else None
    elif family is DeepFamily.SKIP:
        if model.skip is None:
            raise _missing(attacker, "skip features")
        data = model.skip[task]
    else:
        blocks = family is DeepFamily.BLOCKS
        inputs = model.prefix if blocks else model.images
        module = model.blocks if blocks else model.network
        if inputs is None or module is None:
            raise _missing(attacker, "prefix activations" if blocks else "images")
        data = inputs[task]

    def run(params: Mapping[str, float], number: int) -> TrialResult:
        trial_seed = _trial_seed(seed, attacker, task, number)
        if module is None:
            curve = probe_curve(
                data,
                spec.optimizer,
                dict(params),
                budget,
                hidden=spec.hidden,
                seed=trial_seed,
                lr_scale=scale,
            )
        else:
            network = module
            curve = network_curve(
                lambda: copy.deepcopy(network),
                model.feature_dim,
                data,
                spec.optimizer,
                dict(params),
                budget,
                reinit=spec.reinit,
                seed=trial_seed,
            )
        return TrialResult(best_so_far_area(curve), curve)

    return run


def _attack(
    attacker: DeepAttacker,
    original: ReleasedModel,
    immunized: ReleasedModel,
    task: Task,
    options: DeepAttackOptions,
) -> tuple[TaskAttack, list[int]]:
    spec = DEEP_ATTACKERS[attacker]
    network = spec.family in (DeepFamily.BLOCKS, DeepFamily.FULL)
    budget = (
        Budget(options.finetune_steps, options.finetune_eval_every, options.batch_size)
        if network
        else Budget(options.probe_steps)
    )
    trials = options.finetune_trials if network else options.trials
    if task is Task.BENIGN and options.benign_trials is not None:
        trials = min(trials, options.benign_trials)
    # the spec's digest in the name: a changed search space never reuses stored trials
    tag = hashlib.sha256(repr(spec).encode()).hexdigest()[:8]
    search = SearchOptions(
        trials=trials,
        seconds=options.seconds,
        storage=options.storage,
        study_name=f"{options.study_name}/{attacker.value}-{tag}/{task.value}",
        seed=options.seed,
    )
    first, second = paired_search(
        spec.space,
        (
            _objective(attacker, spec, original, task, budget, options.seed),
            _objective(attacker, spec, immunized, task, budget, options.seed),
        ),
        search,
    )
    steps = budget.eval_steps
    return TaskAttack.of(first, second, steps, options.target_fraction), steps


def run_deep_suite(
    attackers: list[DeepAttacker | str],
    original: ReleasedModel,
    immunized: ReleasedModel,
    options: DeepAttackOptions,
    *,
    on_progress: Callable[[str], None] | None = None,
) -> DeepAttackSuite:
    """Every attacker of ``attackers`` on θ0 (``original``) and θ_I (``immunized``), both
    tasks; the record stores ``options`` with the storage URL's password removed."""
    chosen = [parse_choice(DeepAttacker, a, "attacker") for a in attackers]
    if not chosen:
        raise ValueError("name at least one attacker")
    if len(set(chosen)) != len(chosen):
        raise ValueError("an attacker is named twice")
    start = time.perf_counter()
    summaries: dict[DeepAttacker, DeepAttackerSummary] = {}
    for attacker in chosen:
        family = DEEP_ATTACKERS[attacker].family
        harmful, steps = _attack(attacker, original, immunized, Task.HARMFUL, options)
        network = family in (DeepFamily.BLOCKS, DeepFamily.FULL)
        benign = (
            _attack(attacker, original, immunized, Task.BENIGN, options)[0]
            if options.finetune_benign or not network
            else None
        )
        summaries[attacker] = DeepAttackerSummary(family, steps, harmful, benign)
        if on_progress is not None:
            on_progress(attacker.value)
    return suite_record(summaries, options, time.perf_counter() - start)


def suite_record(
    summaries: dict[DeepAttacker, DeepAttackerSummary],
    options: DeepAttackOptions,
    wall_seconds: float,
) -> DeepAttackSuite:
    """The ``attack_suite`` record of ``summaries`` (of one suite, or of attacks made under
    the same ``options`` and merged): the worst case over them and the utility check of
    their linear probes; the storage URL's password removed."""
    probes = [
        s.benign
        for a, s in summaries.items()
        if DEEP_ATTACKERS[a].linear_probe and s.benign is not None
    ]
    utility = (
        UtilityCheck.of(
            max(b.original.best_accuracy for b in probes),
            max(b.immunized.best_accuracy for b in probes),
            options.utility_cap,
        )
        if probes
        else None
    )
    return DeepAttackSuite(
        settings=replace(options, storage=redact(options.storage)),
        attackers={a.value: s for a, s in summaries.items()},
        worst_case=DeepWorstCase.of(summaries, options.target_fraction),
        wall_seconds=wall_seconds,
        utility=utility,
    )
