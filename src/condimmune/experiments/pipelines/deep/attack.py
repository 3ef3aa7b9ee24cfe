"""The worst-case attack suite on a saved deep run (``condimmune attack RUN_DIR``,
docs/attacks.md).

Reloads the run's data, computes each task's prefix activations once (shared by θ0 and θ_I
when their frozen prefix is the same), runs every attacker of ``attack.attackers`` with its
Optuna search (the searches first in ``attack.workers`` forked processes when that is above
one: :mod:`~condimmune.experiments.pipelines.deep.attack_workers`), and returns the run's
metrics with ``attack_suite`` (its ``wall_seconds`` from the first search to the record)
and the report. An
attack adds its attackers to those of an earlier attack under the same settings (the worst
case and the utility check are recomputed over all of them) and replaces an earlier attack
under other settings, saying which attackers it dropped. The Optuna studies live in
``attack.storage`` (default ``sqlite:///<run dir>/attack_studies.db``); a re-run with the
same settings reads the finished trials back instead of repeating them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from condimmune.attacks.deep_headline import DeepAttackSuite, suite_record
from condimmune.attacks.deep_inputs import reads_taps
from condimmune.attacks.deep_records import DeepAttackOptions
from condimmune.attacks.deep_suite import Task, run_deep_suite
from condimmune.attacks.deep_train import TaskTensors
from condimmune.attacks.registry import DeepAttacker
from condimmune.core.progress import Progress, ProgressCallback, report
from condimmune.deep.backbones import DeepModel
from condimmune.deep.images import KeyedDataset
from condimmune.deep.prefix import prefix_dataset
from condimmune.deep.surface import (
    TaskImages,
    prefix_tensors,
    released_model,
    same_prefix,
    stacked_prefix,
    task_images,
)
from condimmune.experiments.pipeline import AttackOutcome
from condimmune.experiments.pipelines.deep.attack_report import attack_page
from condimmune.experiments.pipelines.deep.attack_workers import attack_workers, search_in_workers
from condimmune.experiments.pipelines.deep.data import DeepTaskData, load_deep_data
from condimmune.experiments.pipelines.deep.options import DeepRunOptions
from condimmune.experiments.pipelines.deep.run import DeepLoaded
from condimmune.experiments.plan import RunPlan
from condimmune.experiments.report import Table
from condimmune.experiments.report import format_number as f
from condimmune.experiments.verdict import (
    ceiling_text,
    floor_text,
    prefix_ceiling_text,
    prefix_curve_text,
    settle_hint,
    share_text,
    slowdown_text,
    theta0_unsettled,
)

__all__ = ["STUDIES_FILE", "attack_deep", "attack_options"]

STUDIES_FILE = "attack_studies.db"


def attack_options(
    plan: RunPlan[DeepRunOptions], run_dir: Path, digests: tuple[bytes, bytes]
) -> DeepAttackOptions:
    """The suite's options from the plan; the studies are named by what a trial's outcome
    depends on: θ_I's by both models' file digests and the settings, θ0's by θ0's digest, the
    data and the settings (not θ_I, so every method's run of that θ0 finds them in
    ``attack.theta0_storage``)."""
    a = plan.options.attack
    storage = a.storage or f"sqlite:///{(run_dir / STUDIES_FILE).resolve()}"
    return DeepAttackOptions(
        trials=a.trials,
        finetune_trials=a.finetune_trials,
        probe_steps=a.probe_steps,
        finetune_steps=a.finetune_steps,
        weight_free_steps=a.weight_free_steps,
        raw_probe_steps=a.raw_probe_steps,
        finetune_eval_every=a.finetune_eval_every,
        batch_size=a.batch_size,
        finetune_benign=a.finetune_benign,
        benign_trials=a.benign_trials,
        seconds=a.seconds,
        target_fraction=a.target_fraction,
        utility_cap=a.utility_cap,
        seed=plan.seed,
        study_name=f"condimmune-{_tag(plan, digests)}",
        storage=storage,
        original_study_name=f"condimmune-theta0-{_original_tag(plan, digests[0])}",
        original_storage=a.theta0_storage or storage,
        labels_per_class=a.labels_per_class,
        prefix_curve=a.prefix_curve,
    )


def _tasks(data: DeepTaskData) -> dict[Task, tuple[KeyedDataset, KeyedDataset, int]]:
    """Each task's training images (eval transforms), held-out images and classes."""
    return {
        Task.HARMFUL: (data.harmful_train_eval, data.harmful.test, data.harmful.num_classes),
        Task.BENIGN: (data.benign_train_eval, data.benign.test, data.benign.num_classes),
    }


def _prefix(
    model: DeepModel,
    data: DeepTaskData,
    options: DeepRunOptions,
    images: Mapping[Task, TaskTensors],
) -> dict[Task, TaskTensors]:
    """Each task's prefix activations, from its stacked ``images``; a run with
    ``model.cache_prefix`` reads them from its prefix cache (computed there if missing)
    instead of running the prefix again."""
    bs = options.evaluation.batch_size
    if not options.model.cache_prefix:
        return stacked_prefix(model, images, batch_size=bs)

    def cached(split: KeyedDataset) -> KeyedDataset:
        return prefix_dataset(
            model,
            split,
            preprocessing=data.preprocessing,
            batch_size=bs,
            cache_dir=options.model.cache_dir,
        )

    outputs = {
        t: TaskImages(cached(train), cached(test), classes)
        for t, (train, test, classes) in _tasks(data).items()
    }
    return prefix_tensors(model, outputs, batch_size=bs, prefix_inputs=True)[0]


def _settings(plan: RunPlan[DeepRunOptions]) -> list[int | str]:
    """The attack settings a trial's curve depends on (with the seed of its trials)."""
    a = plan.options.attack
    settings: list[int | str] = [
        a.probe_steps,
        a.finetune_steps,
        a.finetune_eval_every,
        a.batch_size,
        a.skip_dims,
        plan.seed,
    ]
    # appended only when set, so the studies of earlier attacks keep their names
    if a.labels_per_class is not None:
        settings.append(a.labels_per_class)
    if a.weight_free_steps is not None:
        settings += ["weight_free_steps", a.weight_free_steps]
    if a.raw_probe_steps is not None:
        settings += ["raw_probe_steps", a.raw_probe_steps]
    return settings


def _tag(plan: RunPlan[DeepRunOptions], digests: tuple[bytes, bytes]) -> str:
    digest = hashlib.sha256(b"".join(digests) + json.dumps(_settings(plan)).encode())
    return digest.hexdigest()[:16]


def _original_tag(plan: RunPlan[DeepRunOptions], digest: bytes) -> str:
    """θ0's weights, the attack settings, and what the attackers' inputs depend on: the
    experiment, its data and model options (preprocessing, which blocks are immunized) and
    the evaluation batch; not where caches live or how many loader processes run."""
    options = plan.options
    inputs = {
        "experiment": plan.name,
        "data": options.data.identity(),
        "model": {**dataclasses.asdict(options.model), "cache_dir": None},
        "evaluation_batch": options.evaluation.batch_size,
        "settings": _settings(plan),
    }
    text = json.dumps(inputs, sort_keys=True, default=str)
    return hashlib.sha256(digest + text.encode()).hexdigest()[:16]


def _compared(settings: DeepAttackOptions) -> DeepAttackOptions:
    """What two attacks must share for their attackers to be merged: not where the searches
    live, nor whether the prefix ceilings were measured beside them (they change no
    attacker's numbers)."""
    return replace(settings.without_storage(), prefix_curve=False)


def _merged(
    earlier: DeepAttackSuite | None, new: DeepAttackSuite
) -> tuple[DeepAttackSuite, list[str]]:
    """``new`` with the attackers of an ``earlier`` suite under the same settings added (an
    attacker run again is replaced; the worst case and the utility check are over all of
    them; the yardstick only when ``new`` ran every earlier attacker again, since it needs
    each one's costs); under other settings ``new`` alone, and the earlier attackers it
    replaces."""
    if earlier is None:
        return new, []
    if _compared(earlier.settings) != _compared(new.settings):
        return new, sorted(set(earlier.attackers) - set(new.attackers))
    if set(new.attackers) >= set(earlier.attackers):
        return replace(new, wall_seconds=earlier.wall_seconds + new.wall_seconds), []
    summaries = {DeepAttacker(k): v for k, v in {**earlier.attackers, **new.attackers}.items()}
    wall = earlier.wall_seconds + new.wall_seconds
    return suite_record(summaries, new.settings, wall), []


def attack_deep(loaded: DeepLoaded, on_progress: ProgressCallback | None) -> AttackOutcome:
    """Run the deep suite on ``loaded`` (module docstring); ``on_progress`` hears the
    preparation of the attackers' inputs (task ``"attack inputs"``), then the suite."""
    plan = loaded.plan
    options: DeepRunOptions = plan.options
    original, immunized = loaded.original, loaded.immunized
    names = list(options.attack.attackers)
    data = load_deep_data(options.data, options.model, plan.seed)
    bs = options.evaluation.batch_size
    # the images: for the attackers that train on them, and to count the models' FLOPs (the
    # yardstick's cost of extracting features)
    shared = same_prefix(original, immunized)
    stages = ["images", "prefix θ0", *([] if shared else ["prefix θ_I"])]

    def stage(name: str) -> None:
        done = stages.index(name) if name else len(stages)
        report(on_progress, Progress("attack inputs", done, len(stages), name, "stage"))

    stage("images")
    tasks = {t: TaskImages(*split) for t, split in _tasks(data).items()}
    images = task_images(tasks, batch_size=bs)
    stage("prefix θ0")
    acts0 = _prefix(original, data, options, images)
    if not shared:
        stage("prefix θ_I")
    acts1 = acts0 if shared else _prefix(immunized, data, options, images)
    stage("")
    dims = options.attack.skip_dims
    taps = reads_taps(names)
    theta0 = released_model(original, acts0, images, batch_size=bs, skip_dims=dims, taps=taps)
    theta_i = released_model(
        immunized,
        acts1,
        images,
        batch_size=bs,
        skip_dims=dims,
        taps=taps,
        like=theta0 if shared else None,
    )
    settings = attack_options(plan, loaded.run_dir, loaded.digests)
    start = time.perf_counter()
    workers = attack_workers(options.attack.workers, len(names))
    if workers > 1:  # the searches in workers; the suite below reads their trials back
        search_in_workers(names, theta0, theta_i, settings, workers, on_progress=on_progress)
    new = run_deep_suite(names, theta0, theta_i, settings, on_progress=on_progress)
    new = replace(new, wall_seconds=time.perf_counter() - start)
    suite, dropped = _merged(loaded.metrics.attack_suite, new)
    metrics = replace(loaded.metrics, attack_suite=suite)
    rows = []
    for name, e in suite.attackers.items():
        h = e.harmful
        rows.append(
            [
                name,
                f"{f(h.original.steps_to_target)} → {f(h.immunized.steps_to_target)}",
                f(h.slowdown) + ("" if h.reached else " (≥)"),
                f"{h.original.best_accuracy:.3f} → {h.immunized.best_accuracy:.3f}",
                f"{h.rfd:.1f}",
            ]
        )
    w, u = suite.worst_case, suite.utility
    lines = [
        f"worst case: {w.attacker} slowed {f(w.slowdown)}×{'' if w.reached else ' (≥)'}; "
        f"strongest on θ_I: {w.strongest} ({w.accuracy_immunized:.3f} vs "
        f"{w.accuracy_original:.3f} on θ0)"
    ]
    y = suite.yardstick
    if y is not None:
        lines.append(
            f"yardstick: S {slowdown_text(y.s, y.cheapest_immunized.reached)} (cheapest "
            f"attacker: {y.cheapest_original.attacker} on θ0, {y.cheapest_immunized.attacker} "
            f"on θ_I), {ceiling_text(y)}, {prefix_ceiling_text(y)}; {share_text(y)}"
        )
        if floor := floor_text(y):
            lines.append(f"yardstick: {floor}: S is the upper end of what was measured")
        if y.extended_original:
            lines.append(
                f"yardstick: T*(θ0) settled with a longer budget (Eq. R1) for "
                f"{', '.join(y.extended_original)}"
            )
        if open_ := theta0_unsettled(y):
            short = ", ".join(c.attacker for c in open_)
            lines.append(
                f"yardstick: on θ0, {short} stopped short of τ below T*(θ0); with more steps "
                f"T*(θ0) could be lower and S and S_max both larger ({settle_hint(y)})"
            )
        if curve := prefix_curve_text(y):
            lines.append(f"prefix ceilings C(k) across the depth (× T*(θ0)): {curve}")
    if u is not None:
        lines.append(
            f"utility: benign linear probe {u.accuracy_original:.3f} → "
            f"{u.accuracy_immunized:.3f} ({round(-u.drop_points, 1) + 0.0:+.1f} pts, cap "
            f"{u.cap_points:g}): {'passes' if u.passes else 'FAILS the cap'}"
        )
    summary = Table(
        ["attacker", "steps θ0 → θ_I", "slowdown", "best acc. θ0 → θ_I", "RFD %"],
        rows,
        "deep attack suite (harmful task)",
    )
    if dropped:
        lines.append(
            f"replaced the results of {', '.join(dropped)} (an earlier attack with other "
            "attack settings)"
        )
    lines.append(f"report: {loaded.run_dir / 'attack_report.md'}")
    return AttackOutcome(metrics, attack_page(metrics, suite), summary, lines)
