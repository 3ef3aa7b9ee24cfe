"""The deep attack suite: every :class:`~condimmune.attacks.registry.DeepAttacker` on a
released model θ0 and its immunized θ_I, harmful and benign task, each with its own Optuna
search (the same trial budget for both models), and the worst case over attackers under
the utility cap (:mod:`condimmune.attacks.deep_records` defines the numbers).

The suite sees tensors and modules only (:class:`ReleasedModel`); building them from a
deep network and its data is :mod:`condimmune.deep.surface`'s job.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace

from condimmune.attacks.deep_cost import ExtractionFlops, attacker_curves
from condimmune.attacks.deep_headline import DeepAttackSuite, suite_record
from condimmune.attacks.deep_inputs import ReleasedModel, Task, attacker_inputs
from condimmune.attacks.deep_records import DeepAttackerSummary, DeepAttackOptions, TaskAttack
from condimmune.attacks.deep_resolve import extended_curves, to_resolve
from condimmune.attacks.deep_train import (
    Budget,
    TaskTensors,
    best_so_far_area,
    curvature,
    network_curve,
    probe_curve,
)
from condimmune.attacks.prefix_curve import prefix_ceilings, require_prefix_inputs
from condimmune.attacks.registry import (
    CLOSED_FORM,
    DEEP_ATTACKERS,
    WEIGHT_FREE,
    DeepAttacker,
    DeepAttackerSpec,
    DeepFamily,
    Optimizer,
)
from condimmune.attacks.search import (
    Objective,
    SearchOptions,
    Study,
    StudyTrials,
    TrialResult,
    paired_search,
)
from condimmune.attacks.yardstick import AttackerCurves, Yardstick, yardstick
from condimmune.core._choices import parse_choice
from condimmune.core.progress import Progress, ProgressCallback, report

__all__ = ["ReleasedModel", "Task", "run_deep_suite"]


def _trial_seed(seed: int, attacker: DeepAttacker, task: Task, number: int) -> int:
    text = f"{seed}/{attacker.value}/{task.value}/{number}".encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:4], "little")


def _objective(
    attacker: DeepAttacker,
    spec: DeepAttackerSpec,
    model: ReleasedModel,
    task: Task,
    budget: Budget,
    seed: int,
) -> Objective:
    """``(params, trial number) → TrialResult`` of one attacker on one model and task."""
    data, make_network, width = attacker_inputs(
        attacker, spec, model, task, heal=(budget.steps, budget.batch_size, seed)
    )
    scale = curvature(data) if spec.optimizer is Optimizer.MOMENTUM else None

    def run(params: Mapping[str, float], number: int) -> TrialResult:
        trial_seed = _trial_seed(seed, attacker, task, number)
        if make_network is None:
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
            curve = network_curve(
                make_network,
                width,
                data,
                spec.optimizer,
                dict(params),
                budget,
                reinit=spec.reinit,
                recalibrate=spec.recalibrate,
                seed=trial_seed,
            )
        return TrialResult(best_so_far_area(curve), curve)

    return run


def _trials(spec: DeepAttackerSpec, task: Task, options: DeepAttackOptions) -> int:
    """The trial budget of one search per model (``paired_search`` runs one trial when the
    search space is empty)."""
    trials = options.finetune_trials if spec.trains_network else options.trials
    if task is Task.BENIGN and options.benign_trials is not None:
        trials = min(trials, options.benign_trials)
    return trials


class _TrialCount:
    """Reports an attacker's finished trials (depth 1) over all its searches, the task under
    way as the item."""

    def __init__(self, callback: ProgressCallback | None, attacker: str, total: int) -> None:
        self.callback, self.attacker, self.total, self.done = callback, attacker, total, 0

    def tell(self, item: str) -> None:
        # a search that read finished trials back from its storage runs fewer: stay ≤ total
        done = min(self.done, self.total)
        report(self.callback, Progress(self.attacker, done, self.total, item, "trial", depth=1))

    def counted(self, objective: Objective, item: str) -> Objective:
        def run(params: Mapping[str, float], number: int) -> TrialResult:
            result = objective(params, number)
            self.done += 1
            self.tell(item)
            return result

        return run


def _attack(
    attacker: DeepAttacker,
    original: ReleasedModel,
    immunized: ReleasedModel,
    task: Task,
    options: DeepAttackOptions,
    count: _TrialCount,
) -> tuple[TaskAttack, list[int], tuple[StudyTrials, StudyTrials]]:
    spec = DEEP_ATTACKERS[attacker]
    budget = _budget(spec, options)
    count.tell(task.value)
    # the spec's digest in the name: a changed search space never reuses stored trials
    tag = hashlib.sha256(repr(spec).encode()).hexdigest()[:8]
    name = f"{attacker.value}-{tag}/{task.value}"
    search = SearchOptions(
        trials=_trials(spec, task, options),
        seconds=options.seconds,
        storage=options.storage,
        study_name=f"{options.study_name}/{name}",
        seed=options.seed,
    )
    theta0 = Study(
        options.original_storage or options.storage,
        f"{options.original_study_name or options.study_name}/{name}/original",
    )
    studies = (
        theta0,
        theta0 if spec.weight_free else Study(options.storage, f"{search.study_name}/immunized"),
    )
    first, second = paired_search(
        spec.space,
        (
            count.counted(
                _objective(attacker, spec, original, task, budget, options.seed), task.value
            ),
            count.counted(
                _objective(attacker, spec, immunized, task, budget, options.seed), task.value
            ),
        ),
        search,
        studies=studies,
    )
    steps = budget.eval_steps
    return TaskAttack.of(first, second, steps, options.target_fraction), steps, (first, second)


def _budget(spec: DeepAttackerSpec, options: DeepAttackOptions) -> Budget:
    free = options.weight_free_steps if spec.weight_free else None
    if spec.trains_network:
        steps = options.finetune_steps if free is None else free
        return Budget(steps, options.finetune_eval_every, options.batch_size)
    return Budget(options.probe_steps if free is None else free)


def _curves(
    attacker: DeepAttacker,
    model: ReleasedModel,
    trials: StudyTrials,
    eval_steps: list[int],
    options: DeepAttackOptions,
) -> AttackerCurves | None:
    """The harmful task's :class:`AttackerCurves` of ``attacker`` on ``model`` (``None``
    when the model's extraction FLOPs are unknown and the attacker needs them)."""
    spec = DEEP_ATTACKERS[attacker]
    if model.extraction is None and spec.family in _EXTRACTING:
        return None
    heal = (options.finetune_steps, options.batch_size, options.seed)
    data, make_network, width = attacker_inputs(attacker, spec, model, Task.HARMFUL, heal=heal)
    # an extended weight-free budget measures the cost of τ; the common budget sets τ
    common = _budget(spec, replace(options, weight_free_steps=None)).steps
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


_EXTRACTING = frozenset({DeepFamily.PROBE, DeepFamily.SKIP, DeepFamily.BLOCKS, DeepFamily.TAP})
"""The families that run the released model's layers once before training."""


def _few_labels(model: ReleasedModel, per_class: int, seed: int) -> ReleasedModel:
    """``model`` as an attacker with ``per_class`` labelled harmful examples per class sees
    it (:meth:`TaskTensors.few_labels`, the same rows in every representation)."""

    def cut(tasks: Mapping[Task, TaskTensors] | None) -> dict[Task, TaskTensors] | None:
        if tasks is None:
            return None
        return {
            t: d.few_labels(per_class, seed) if t is Task.HARMFUL else d for t, d in tasks.items()
        }

    features = cut(model.features)
    assert features is not None
    return replace(
        model,
        features=features,
        skip=cut(model.skip),
        prefix=cut(model.prefix),
        images=cut(model.images),
        taps=cut(model.taps),
    )


def run_deep_suite(
    attackers: list[DeepAttacker | str],
    original: ReleasedModel,
    immunized: ReleasedModel,
    options: DeepAttackOptions,
    *,
    on_progress: ProgressCallback | None = None,
) -> DeepAttackSuite:
    """Every attacker of ``attackers`` on θ0 (``original``) and θ_I (``immunized``), both
    tasks; the record stores ``options`` with the storage URL's password removed.
    ``on_progress`` hears the attackers (task ``"attackers"``) and, at depth 1, each one's
    search trials."""
    chosen = [parse_choice(DeepAttacker, a, "attacker") for a in attackers]
    if not chosen:
        raise ValueError("name at least one attacker")
    if len(set(chosen)) != len(chosen):
        raise ValueError("an attacker is named twice")
    if options.prefix_curve:
        require_prefix_inputs(original, immunized)
    if options.labels_per_class is not None:
        original, immunized = (
            _few_labels(m, options.labels_per_class, options.seed) for m in (original, immunized)
        )
    start = time.perf_counter()
    summaries: dict[DeepAttacker, DeepAttackerSummary] = {}
    costs: tuple[list[AttackerCurves | None], list[AttackerCurves | None]] = ([], [])
    theta_i: dict[str, StudyTrials] = {}  # each attacker's harmful-task search on θ_I
    for done, attacker in enumerate(chosen):
        report(on_progress, Progress("attackers", done, len(chosen), attacker.value, "attacker"))
        spec = DEEP_ATTACKERS[attacker]
        both = options.finetune_benign or not spec.trains_network
        tasks = [Task.HARMFUL, Task.BENIGN] if both else [Task.HARMFUL]
        per_model = [_trials(spec, t, options) if spec.space else 1 for t in tasks]
        sides = 1 if spec.weight_free else 2  # one search serves both models (paired_search)
        count = _TrialCount(on_progress, attacker.value, sides * sum(per_model))
        harmful, steps, studies = _attack(
            attacker, original, immunized, Task.HARMFUL, options, count
        )
        benign = (
            _attack(attacker, original, immunized, Task.BENIGN, options, count)[0]
            if Task.BENIGN in tasks
            else None
        )
        summaries[attacker] = DeepAttackerSummary(spec.family, steps, harmful, benign)
        theta_i[attacker.value] = studies[1]
        for side, model, trials in zip(costs, (original, immunized), studies, strict=True):
            side.append(_curves(attacker, model, trials, steps, options))
    report(on_progress, Progress("attackers", len(chosen), len(chosen), unit="attacker"))
    original_costs, immunized_costs = ([c for c in side if c is not None] for side in costs)
    measured = all(c is not None for side in costs for c in side)
    stick = (
        yardstick(original_costs, immunized_costs, options.target_fraction) if measured else None
    )
    if stick is not None and options.weight_free_steps is not None:
        stick = replace(stick, cap_steps=options.weight_free_steps)
        stick = _resolved(
            stick, original_costs, immunized_costs, theta_i, immunized, options, on_progress
        )
    if stick is not None and options.prefix_curve:
        spec = DEEP_ATTACKERS[DeepAttacker.FULL_REINIT]  # keep-k's budget and trials
        rest = (_budget(spec, options), _trials(spec, Task.HARMFUL, options), on_progress)
        stick = replace(stick, prefix_curve=prefix_ceilings(stick, original, options, *rest))
    return suite_record(summaries, options, time.perf_counter() - start, stick)


def _resolved(
    stick: Yardstick,
    original_costs: list[AttackerCurves],
    immunized_costs: list[AttackerCurves],
    searches: dict[str, StudyTrials],
    immunized: ReleasedModel,
    options: DeepAttackOptions,
    on_progress: ProgressCallback | None,
) -> Yardstick:
    """``stick`` with the attackers that left ``S`` open run again on θ_I with the budget
    of Eq. R1 (:mod:`condimmune.attacks.deep_resolve`), and Eq. Y1–Y5 recomputed;
    ``on_progress`` hears each of them (task ``"settling S"``)."""
    total, done = len(to_resolve(stick, CLOSED_FORM, WEIGHT_FREE)), [0]

    def extend(name: str, steps: int, picks: Sequence[int]) -> AttackerCurves:
        report(on_progress, Progress("settling S", done[0], total, name, "attacker"))
        done[0] += 1
        attacker = DeepAttacker(name)
        spec = DEEP_ATTACKERS[attacker]
        budget = replace(_budget(spec, options), steps=steps)
        run = _objective(attacker, spec, immunized, Task.HARMFUL, budget, options.seed)
        found = searches[name]
        results = [run(found.params[i], i) for i in picks]
        trials = StudyTrials(
            [found.params[i] for i in picks],
            [r.curve for r in results],
            [r.objective for r in results],
            0.0,
        )
        curves = _curves(attacker, immunized, trials, budget.eval_steps, options)
        assert curves is not None  # the yardstick was measured: the FLOPs are known
        return curves

    by_name = {c.attacker: c for c in immunized_costs}
    every = {n: _budget(DEEP_ATTACKERS[DeepAttacker(n)], options).eval_every for n in by_name}
    new = extended_curves(stick, by_name, searches, CLOSED_FORM, WEIGHT_FREE, every, extend)
    if total:
        report(on_progress, Progress("settling S", total, total, unit="attacker"))
    if not new:
        return stick
    again = [new.get(c.attacker, c) for c in immunized_costs]
    fresh = yardstick(original_costs, again, options.target_fraction)
    return replace(fresh, extended=sorted(new), cap_steps=stick.cap_steps)
