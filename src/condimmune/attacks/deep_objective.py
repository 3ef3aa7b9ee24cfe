"""One attacker's pieces shared by the deep suite's searches and its settling runs: the
objective a search maximises, the step and trial budgets, the seed of a trial and the
harmful task's curves in FLOPs (Eq. Y2 of :mod:`condimmune.attacks.yardstick`)."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import replace

from torch import nn

from condimmune.attacks.deep_cost import ExtractionFlops, attacker_curves
from condimmune.attacks.deep_inputs import ReleasedModel, Task, attacker_inputs
from condimmune.attacks.deep_records import DeepAttackOptions
from condimmune.attacks.deep_train import (
    Budget,
    TaskTensors,
    best_so_far_area,
    curvature,
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
from condimmune.attacks.ridge_head import RidgeSystem
from condimmune.attacks.search import Objective, Study, StudyTrials, TrialResult
from condimmune.attacks.yardstick import AttackerCurves

__all__ = [
    "EXTRACTING",
    "attacker_objective",
    "harmful_curves",
    "heal_phase",
    "step_budget",
    "studies",
    "trial_budget",
    "trial_seed",
]


_Prepared = tuple[
    TaskTensors, Callable[[], nn.Module] | None, int, float | None, RidgeSystem | None
]
"""What an objective's trials share: the attacker's data, its network factory and width,
the momentum probe's curvature, the ridge head's system."""


def trial_seed(seed: int, attacker: DeepAttacker, task: Task, number: int) -> int:
    text = f"{seed}/{attacker.value}/{task.value}/{number}".encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:4], "little")


def attacker_objective(
    attacker: DeepAttacker,
    spec: DeepAttackerSpec,
    model: ReleasedModel,
    task: Task,
    budget: Budget,
    options: DeepAttackOptions,
) -> Objective:
    """``(params, trial number) → TrialResult`` of one attacker on one model and task, for
    ``budget`` (the common one, or Eq. R1's longer one: the heal phase of an attacker that
    heals first stays the common budget's, as its FLOPs count it)."""
    seed = options.seed

    # made at the first trial, once: a search whose trials are all read back from its
    # storage (θ0's, shared by every method's run) never pays for them (the heal phase of
    # heal-adam trains the network; whitening is an SVD of the features)
    @functools.cache
    def prepared() -> _Prepared:
        data, make_network, width = attacker_inputs(
            attacker, spec, model, task, heal=heal_phase(options)
        )
        scale = curvature(data) if spec.optimizer is Optimizer.MOMENTUM else None
        ridge = (  # the Gram or kernel matrix, formed once for every trial's ρ
            RidgeSystem.of(data.train_x, data.train_y, data.classes)
            if spec.optimizer is Optimizer.LSTSQ
            else None
        )
        return data, make_network, width, scale, ridge

    def run(params: Mapping[str, float], number: int) -> TrialResult:
        seeded = trial_seed(seed, attacker, task, number)
        data, make_network, width, scale, ridge = prepared()
        if make_network is None:
            curve = probe_curve(
                data,
                spec.optimizer,
                dict(params),
                budget,
                hidden=spec.hidden,
                seed=seeded,
                lr_scale=scale,
                ridge=ridge,
            )
        else:
            curve = network_curve(
                make_network,
                width,
                data,
                spec.optimizer,
                dict(params),
                budget,
                reinit=spec.reinit,
                recalibrate=spec.recalibrate,
                seed=seeded,
            )
        return TrialResult(best_so_far_area(curve), curve)

    return run


def trial_budget(spec: DeepAttackerSpec, task: Task, options: DeepAttackOptions) -> int:
    """The trial budget of one search per model (``paired_search`` runs one trial when the
    search space is empty)."""
    trials = options.finetune_trials if spec.trains_network else options.trials
    if task is Task.BENIGN and options.benign_trials is not None:
        trials = min(trials, options.benign_trials)
    return trials


def step_budget(spec: DeepAttackerSpec, options: DeepAttackOptions) -> Budget:
    """``spec``'s budget under ``options``: its family's common one, the weight-free
    attackers' ``weight_free_steps`` and the iterating raw-pixel probe's (``raw-adam``)
    ``raw_probe_steps`` when set."""
    iterates = spec.optimizer is not Optimizer.LSTSQ
    if spec.family is DeepFamily.RAW and iterates and options.raw_probe_steps is not None:
        return Budget(options.raw_probe_steps)
    free = options.weight_free_steps if spec.weight_free else None
    if spec.trains_network:
        steps = options.finetune_steps if free is None else free
        return Budget(steps, options.finetune_eval_every, options.batch_size)
    return Budget(options.probe_steps if free is None else free)


def heal_phase(options: DeepAttackOptions) -> tuple[int, int, int]:
    """(steps, minibatch, seed) of the benign phase of an attacker that heals first: the
    network attackers' common budget, whatever budget its harmful phase is given."""
    return options.finetune_steps, options.batch_size, options.seed


def harmful_curves(
    attacker: DeepAttacker,
    model: ReleasedModel,
    trials: StudyTrials,
    eval_steps: list[int],
    options: DeepAttackOptions,
) -> AttackerCurves | None:
    """The harmful task's :class:`AttackerCurves` of ``attacker`` on ``model`` (``None``
    when the model's extraction FLOPs are unknown and the attacker needs them)."""
    spec = DEEP_ATTACKERS[attacker]
    if model.extraction is None and spec.family in EXTRACTING:
        return None
    # a step's FLOPs depend on the network's architecture, not its weights: heal-adam's is
    # counted on the unhealed copy (its heal phase is counted apart, as steps), so the
    # counting never trains it
    _, batch, seed = heal_phase(options)
    data, make_network, width = attacker_inputs(
        attacker, spec, model, Task.HARMFUL, heal=(0, batch, seed)
    )
    # an extended weight-free budget measures the cost of τ; the common budget sets τ
    common = step_budget(spec, replace(options, weight_free_steps=None, raw_probe_steps=None)).steps
    return attacker_curves(
        attacker.value,
        spec,
        list(zip(trials.params, trials.curves, strict=True)),
        eval_steps,
        data,
        model.extraction or ExtractionFlops(0.0, 0.0),
        network=None if make_network is None else (make_network, width, options.batch_size),
        target_steps=common if common < eval_steps[-1] else None,
    )


EXTRACTING = frozenset({DeepFamily.PROBE, DeepFamily.SKIP, DeepFamily.BLOCKS, DeepFamily.TAP})
"""The families that run the released model's layers once before training."""


def studies(attacker: DeepAttacker, task: Task, options: DeepAttackOptions) -> tuple[Study, Study]:
    """Where ``attacker``'s searches on θ0 and θ_I live: θ0's with θ0's
    (``original_storage``, shared by every method's run of that θ0), θ_I's with the run's;
    one study for both when the attacker reads no released weight. The spec's digest (and
    its revision, when above 0) is in the names: a changed search space or a revised
    attacker never reuses stored trials."""
    spec = DEEP_ATTACKERS[attacker]
    revised = f" revision {spec.revision}" if spec.revision else ""
    tag = hashlib.sha256((repr(spec) + revised).encode()).hexdigest()[:8]
    name = f"{attacker.value}-{tag}/{task.value}"
    theta0 = Study(
        options.original_storage or options.storage,
        f"{options.original_study_name or options.study_name}/{name}/original",
    )
    if spec.weight_free:
        return theta0, theta0
    return theta0, Study(options.storage, f"{options.study_name}/{name}/immunized")
