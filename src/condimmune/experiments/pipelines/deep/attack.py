"""The worst-case attack suite on a saved deep run (``condimmune attack RUN_DIR``,
docs/attacks.md).

Reloads the run's data, computes each task's prefix activations once (shared by θ0 and θ_I
when their frozen prefix is the same), runs every attacker of ``attack.attackers`` with its
Optuna search, and returns the run's metrics with ``attack_suite`` and the report. An
attack adds its attackers to those of an earlier attack under the same settings (the worst
case and the utility check are recomputed over all of them) and replaces an earlier attack
under other settings, saying which attackers it dropped. The Optuna studies live in
``attack.storage`` (default ``sqlite:///<run dir>/attack_studies.db``); a re-run with the
same settings reads the finished trials back instead of repeating them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from condimmune.attacks.deep_records import DeepAttackOptions, DeepAttackSuite
from condimmune.attacks.deep_suite import Task, run_deep_suite, suite_record
from condimmune.attacks.deep_train import TaskTensors
from condimmune.attacks.registry import DeepAttacker
from condimmune.deep.backbones import DeepModel
from condimmune.deep.images import KeyedDataset
from condimmune.deep.prefix import prefix_dataset
from condimmune.deep.surface import TaskImages, prefix_tensors, released_model, same_prefix
from condimmune.experiments.pipeline import AttackOutcome
from condimmune.experiments.pipelines.deep.attack_report import attack_page
from condimmune.experiments.pipelines.deep.data import DeepTaskData, load_deep_data
from condimmune.experiments.pipelines.deep.options import DeepRunOptions
from condimmune.experiments.pipelines.deep.run import DeepLoaded
from condimmune.experiments.plan import RunPlan
from condimmune.experiments.report import Table
from condimmune.experiments.report import format_number as f

__all__ = ["STUDIES_FILE", "attack_deep", "attack_options"]

STUDIES_FILE = "attack_studies.db"


def attack_options(plan: RunPlan[DeepRunOptions], run_dir: Path, tag: str) -> DeepAttackOptions:
    """The suite's options from the plan; the studies are named by ``tag`` (the models and
    every setting a trial's outcome depends on)."""
    a = plan.options.attack
    storage = a.storage or f"sqlite:///{(run_dir / STUDIES_FILE).resolve()}"
    return DeepAttackOptions(
        trials=a.trials,
        finetune_trials=a.finetune_trials,
        probe_steps=a.probe_steps,
        finetune_steps=a.finetune_steps,
        finetune_eval_every=a.finetune_eval_every,
        batch_size=a.batch_size,
        finetune_benign=a.finetune_benign,
        benign_trials=a.benign_trials,
        seconds=a.seconds,
        target_fraction=a.target_fraction,
        utility_cap=a.utility_cap,
        seed=plan.seed,
        study_name=f"condimmune-{tag}",
        storage=storage,
    )


def _tasks(data: DeepTaskData) -> dict[Task, tuple[KeyedDataset, KeyedDataset, int]]:
    """Each task's training images (eval transforms), held-out images and classes."""
    return {
        Task.HARMFUL: (data.harmful_train_eval, data.harmful.test, data.harmful.num_classes),
        Task.BENIGN: (data.benign_train_eval, data.benign.test, data.benign.num_classes),
    }


def _prefix(
    model: DeepModel, data: DeepTaskData, options: DeepRunOptions
) -> dict[Task, TaskTensors]:
    """Each task's prefix activations; a run with ``model.cache_prefix`` reads them from its
    prefix cache (computed there if missing) instead of running the prefix again."""
    bs = options.evaluation.batch_size
    if not options.model.cache_prefix:
        images = {t: TaskImages(*split) for t, split in _tasks(data).items()}
        return prefix_tensors(model, images, batch_size=bs)[0]

    def cached(images: KeyedDataset) -> KeyedDataset:
        return prefix_dataset(
            model,
            images,
            preprocessing=data.preprocessing,
            batch_size=bs,
            cache_dir=options.model.cache_dir,
        )

    outputs = {
        t: TaskImages(cached(train), cached(test), classes)
        for t, (train, test, classes) in _tasks(data).items()
    }
    return prefix_tensors(model, outputs, batch_size=bs, prefix_inputs=True)[0]


def _tag(plan: RunPlan[DeepRunOptions], digests: tuple[bytes, bytes]) -> str:
    a = plan.options.attack
    settings = [
        a.probe_steps,
        a.finetune_steps,
        a.finetune_eval_every,
        a.batch_size,
        a.skip_dims,
        plan.seed,
    ]
    digest = hashlib.sha256(b"".join(digests) + json.dumps(settings).encode())
    return digest.hexdigest()[:16]


def _comparable(settings: DeepAttackOptions) -> DeepAttackOptions:
    return replace(settings, storage=None, study_name="")


def _merged(
    earlier: DeepAttackSuite | None, new: DeepAttackSuite
) -> tuple[DeepAttackSuite, list[str]]:
    """``new`` with the attackers of an ``earlier`` suite under the same settings added (an
    attacker run again is replaced; the worst case and the utility check are over all of
    them); under other settings ``new`` alone, and the earlier attackers it replaces."""
    if earlier is None:
        return new, []
    if _comparable(earlier.settings) != _comparable(new.settings):
        return new, sorted(set(earlier.attackers) - set(new.attackers))
    summaries = {DeepAttacker(k): v for k, v in {**earlier.attackers, **new.attackers}.items()}
    wall = earlier.wall_seconds + new.wall_seconds
    return suite_record(summaries, new.settings, wall), []


def attack_deep(loaded: DeepLoaded, on_progress: Callable[[str], None]) -> AttackOutcome:
    """Run the deep suite on ``loaded`` (module docstring)."""
    plan = loaded.plan
    options: DeepRunOptions = plan.options
    original, immunized = loaded.original, loaded.immunized
    names: list[DeepAttacker | str] = list(options.attack.attackers)
    data = load_deep_data(options.data, options.model, plan.seed)
    bs = options.evaluation.batch_size
    images = None
    if DeepAttacker.FULL_ADAM in names:
        tasks = {t: TaskImages(*split) for t, split in _tasks(data).items()}
        _, images = prefix_tensors(original, tasks, batch_size=bs, keep_images=True)
    acts0 = _prefix(original, data, options)
    acts1 = acts0 if same_prefix(original, immunized) else _prefix(immunized, data, options)
    dims = options.attack.skip_dims
    suite, dropped = _merged(
        loaded.metrics.attack_suite,
        run_deep_suite(
            names,
            released_model(original, acts0, images, batch_size=bs, skip_dims=dims),
            released_model(immunized, acts1, images, batch_size=bs, skip_dims=dims),
            attack_options(plan, loaded.run_dir, _tag(plan, loaded.digests)),
            on_progress=on_progress,
        ),
    )
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
