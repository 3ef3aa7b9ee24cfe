"""The deep attack suite: every :class:`~condimmune.attacks.registry.DeepAttacker` on a
released model θ0 and its immunized θ_I, harmful and benign task, each with its own Optuna
search (the same trial budget for both models), and the worst case over attackers under
the utility cap (:mod:`condimmune.attacks.deep_records` defines the numbers).

The suite sees tensors and modules only (:class:`ReleasedModel`); building them from a
deep network and its data is :mod:`condimmune.deep.surface`'s job.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

from condimmune.attacks.deep_headline import DeepAttackSuite, suite_record
from condimmune.attacks.deep_inputs import ReleasedModel, Task
from condimmune.attacks.deep_objective import (
    attacker_objective,
    harmful_curves,
    step_budget,
    studies,
    trial_budget,
)
from condimmune.attacks.deep_records import DeepAttackerSummary, DeepAttackOptions, TaskAttack
from condimmune.attacks.deep_settle import settled
from condimmune.attacks.deep_train import TaskTensors
from condimmune.attacks.prefix_curve import prefix_ceilings, require_prefix_inputs
from condimmune.attacks.registry import DEEP_ATTACKERS, DeepAttacker
from condimmune.attacks.search import (
    Objective,
    SearchOptions,
    StudyTrials,
    TrialResult,
    paired_search,
)
from condimmune.attacks.yardstick import AttackerCurves, yardstick
from condimmune.core._choices import parse_choice
from condimmune.core.progress import Progress, ProgressCallback, report

__all__ = ["ReleasedModel", "Task", "run_deep_searches", "run_deep_suite"]


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
    budget = step_budget(spec, options)
    count.tell(task.value)
    where = studies(attacker, task, options)
    search = SearchOptions(
        trials=trial_budget(spec, task, options),
        seconds=options.seconds,
        storage=options.storage,
        study_name=where[1].name,
        seed=options.seed,
    )
    first, second = paired_search(
        spec.space,
        (
            count.counted(
                attacker_objective(attacker, spec, original, task, budget, options), task.value
            ),
            count.counted(
                attacker_objective(attacker, spec, immunized, task, budget, options),
                task.value,
            ),
        ),
        search,
        studies=where,
    )
    steps = budget.eval_steps
    return TaskAttack.of(first, second, steps, options.target_fraction), steps, (first, second)


def _searched(
    attacker: DeepAttacker,
    original: ReleasedModel,
    immunized: ReleasedModel,
    options: DeepAttackOptions,
    on_progress: ProgressCallback | None,
) -> tuple[DeepAttackerSummary, tuple[StudyTrials, StudyTrials]]:
    """``attacker``'s searches on both models, harmful task and (where it is attacked) benign
    task, and the harmful task's trials of θ0 and θ_I."""
    spec = DEEP_ATTACKERS[attacker]
    # a weight-free attacker's benign search would measure the same thing on θ0 and θ_I
    both = not spec.weight_free and (options.finetune_benign or not spec.trains_network)
    tasks = [Task.HARMFUL, Task.BENIGN] if both else [Task.HARMFUL]
    per_model = [trial_budget(spec, t, options) if spec.space else 1 for t in tasks]
    sides = 1 if spec.weight_free else 2  # one search serves both models (paired_search)
    count = _TrialCount(on_progress, attacker.value, sides * sum(per_model))
    harmful, steps, found = _attack(attacker, original, immunized, Task.HARMFUL, options, count)
    benign = (
        _attack(attacker, original, immunized, Task.BENIGN, options, count)[0]
        if Task.BENIGN in tasks
        else None
    )
    return DeepAttackerSummary(spec.family, steps, harmful, benign), found


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


def _as_attacked(
    original: ReleasedModel, immunized: ReleasedModel, options: DeepAttackOptions
) -> tuple[ReleasedModel, ReleasedModel]:
    """Both models as the attacker sees them (its labelled harmful examples only)."""
    if options.labels_per_class is None:
        return original, immunized
    per_class, seed = options.labels_per_class, options.seed
    return _few_labels(original, per_class, seed), _few_labels(immunized, per_class, seed)


def run_deep_searches(
    attackers: Iterable[DeepAttacker | str],
    original: ReleasedModel,
    immunized: ReleasedModel,
    options: DeepAttackOptions,
    *,
    on_progress: ProgressCallback | None = None,
) -> None:
    """The searches :func:`run_deep_suite` makes for ``attackers`` (taken one at a time, so
    a queue may feed them), stored and nothing else: several processes, each given other
    attackers with the same persistent storage, do a suite's search work at once, and
    :func:`run_deep_suite` then reads every finished trial back. A search's trials depend
    only on its seed, study and stored trials (:func:`~condimmune.attacks.search.paired_search`),
    so the suite's numbers do not depend on which process ran which attacker, or in what
    order. ``on_progress`` hears each attacker's trials (depth 1)."""
    if options.storage is None:
        raise ValueError(
            "searches made apart from their suite must be stored: set options.storage to an "
            "Optuna storage URL (e.g. sqlite:///studies.db)"
        )
    original, immunized = _as_attacked(original, immunized, options)
    for name in attackers:
        attacker = parse_choice(DeepAttacker, name, "attacker")
        _searched(attacker, original, immunized, options, on_progress)


def run_deep_suite(
    attackers: Sequence[DeepAttacker | str],
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
    original, immunized = _as_attacked(original, immunized, options)
    start = time.perf_counter()
    summaries: dict[DeepAttacker, DeepAttackerSummary] = {}
    costs: tuple[list[AttackerCurves | None], list[AttackerCurves | None]] = ([], [])
    searches: dict[str, tuple[StudyTrials, StudyTrials]] = {}  # harmful task, θ0 and θ_I
    for done, attacker in enumerate(chosen):
        report(on_progress, Progress("attackers", done, len(chosen), attacker.value, "attacker"))
        summary, found = _searched(attacker, original, immunized, options, on_progress)
        summaries[attacker] = summary
        searches[attacker.value] = found
        for side, model, trials in zip(costs, (original, immunized), found, strict=True):
            side.append(harmful_curves(attacker, model, trials, summary.eval_steps, options))
    report(on_progress, Progress("attackers", len(chosen), len(chosen), unit="attacker"))
    original_costs, immunized_costs = ([c for c in side if c is not None] for side in costs)
    measured = all(c is not None for side in costs for c in side)
    stick = (
        yardstick(original_costs, immunized_costs, options.target_fraction) if measured else None
    )
    if stick is not None and options.weight_free_steps is not None:
        stick = replace(stick, cap_steps=options.weight_free_steps)
        stick = settled(
            stick,
            (original_costs, immunized_costs),
            searches,
            (original, immunized),
            options,
            on_progress=on_progress,
        )
    if stick is not None and options.prefix_curve:
        spec = DEEP_ATTACKERS[DeepAttacker.FULL_REINIT]  # keep-k's budget and trials
        rest = (step_budget(spec, options), trial_budget(spec, Task.HARMFUL, options), on_progress)
        stick = replace(stick, prefix_curve=prefix_ceilings(stick, original, options, *rest))
    return suite_record(summaries, options, time.perf_counter() - start, stick)
