"""``condimmune attack RUN_DIR`` on a deep run: the worst-case attack suite (docs/attacks.md).

Reads the run back (``config.yaml``, ``metrics.json``, θ0 = ``original.safetensors``,
θ_I = ``immunized.safetensors``), reloads its data, computes each task's prefix activations
once (shared by θ0 and θ_I when their frozen prefix is the same), runs every attacker of
``attack.attackers`` with its Optuna search, and records the result: ``metrics.json`` gets
``attack_suite`` (replaced on a re-run), ``attack_report.md`` and its figures are written,
and ``report.md`` gets (or has replaced) an attack section. The Optuna studies live in
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
from condimmune.attacks.deep_suite import Task, run_deep_suite
from condimmune.attacks.deep_train import TaskTensors
from condimmune.attacks.registry import DeepAttacker
from condimmune.core.errors import UserError
from condimmune.core.user_files import read_tensor_file
from condimmune.deep.backbones import DeepModel, build_model
from condimmune.deep.images import KeyedDataset
from condimmune.deep.prefix import prefix_dataset
from condimmune.deep.surface import TaskImages, prefix_tensors, released_model, same_prefix
from condimmune.experiments.config import (
    DeepExperimentConfig,
    apply_overrides,
    config_from_dict,
)
from condimmune.experiments.deep_attack_report import write_deep_attack_report
from condimmune.experiments.deep_data import DeepTaskData, load_deep_data
from condimmune.experiments.deep_setup import cache_dir
from condimmune.experiments.records import DeepRunMetrics, read_metrics
from condimmune.experiments.rundir import (
    read_json,
    read_yaml_mapping,
    replace_atomically,
    run_dir_lock,
)

__all__ = ["STUDIES_FILE", "attack_options", "deep_attack_run", "is_deep_run"]

STUDIES_FILE = "attack_studies.db"
_FIX = "pass a deep run directory written by `condimmune run`"


def is_deep_run(run_dir: Path) -> bool:
    """A deep run directory holds θ_I as ``immunized.safetensors``."""
    return (Path(run_dir) / "immunized.safetensors").is_file()


def attack_options(
    config: DeepExperimentConfig, run_dir: Path, fingerprint: str
) -> DeepAttackOptions:
    """The suite's options from the config's ``attack`` section; the studies are named by
    ``fingerprint`` (the models and every setting a trial's outcome depends on)."""
    a = config.attack
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
        seed=config.seed,
        study_name=f"condimmune-{fingerprint}",
        storage=storage,
    )


def _read_config(run_dir: Path, overrides: list[str]) -> DeepExperimentConfig:
    path = run_dir / "config.yaml"
    raw = read_yaml_mapping(path, _FIX)
    raw.pop("versions", None)
    try:
        config = config_from_dict(raw)
    except ValueError as exc:
        raise UserError(f"not a valid run config ({exc})", path, _FIX) from None
    if not isinstance(config, DeepExperimentConfig):
        raise UserError("the config of a linear run", path, "this reader takes deep runs")
    bad = [o for o in overrides if not o.split("=", 1)[0].strip().startswith("attack.")]
    if bad:
        raise ValueError(f"--set {bad[0]!r}: only attack.* keys can change at attack time")
    checked = apply_overrides(config, overrides)
    assert isinstance(checked, DeepExperimentConfig)
    return checked


def _load_model(path: Path, config: DeepExperimentConfig) -> tuple[DeepModel, bytes]:
    """A model from a run's safetensors file, and the sha256 of its bytes."""
    state = read_tensor_file(path, fix=_FIX, required=("head.weight", "feature_map")).tensors
    model = build_model(
        config.model.backbone,
        num_classes=int(state["head.weight"].shape[0]),
        image_size=config.model.image_size,
        seed=config.seed,
        trainable_blocks=config.model.trainable_blocks,
    )
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise UserError(f"does not fit the run's model ({exc})", path, _FIX) from None
    model.eval()
    return model, hashlib.sha256(path.read_bytes()).digest()


def _tasks(data: DeepTaskData) -> dict[Task, tuple[KeyedDataset, KeyedDataset, int]]:
    """Each task's training images (eval transforms), held-out images and classes."""
    return {
        Task.HARMFUL: (data.harmful_train_eval, data.harmful.test, data.harmful.num_classes),
        Task.BENIGN: (data.benign_train_eval, data.benign.test, data.benign.num_classes),
    }


def _prefix(
    model: DeepModel, data: DeepTaskData, config: DeepExperimentConfig
) -> dict[Task, TaskTensors]:
    """Each task's prefix activations; a run with ``model.cache_prefix`` reads them from its
    prefix cache (computed there if missing) instead of running the prefix again."""
    bs = config.eval.batch_size
    if not config.model.cache_prefix:
        images = {t: TaskImages(*split) for t, split in _tasks(data).items()}
        return prefix_tensors(model, images, batch_size=bs)[0]
    directory = cache_dir(config)

    def cached(images: KeyedDataset) -> KeyedDataset:
        return prefix_dataset(
            model, images, preprocessing=data.preprocessing, batch_size=bs, cache_dir=directory
        )

    outputs = {
        t: TaskImages(cached(train), cached(test), classes)
        for t, (train, test, classes) in _tasks(data).items()
    }
    return prefix_tensors(model, outputs, batch_size=bs, prefix_inputs=True)[0]


def _fingerprint(config: DeepExperimentConfig, digests: list[bytes]) -> str:
    a = config.attack
    settings = [
        a.probe_steps,
        a.finetune_steps,
        a.finetune_eval_every,
        a.batch_size,
        a.skip_dims,
        config.seed,
    ]
    digest = hashlib.sha256(b"".join(digests) + json.dumps(settings).encode())
    return digest.hexdigest()[:16]


def deep_attack_run(
    run_dir: Path,
    *,
    overrides: list[str] | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> tuple[DeepAttackSuite, DeepRunMetrics]:
    """Run the deep suite on ``run_dir`` and record it there (module docstring); returns the
    suite and the run's updated metrics. ``overrides``: ``attack.KEY=VALUE`` strings."""
    run_dir = Path(run_dir).resolve()
    with run_dir_lock(run_dir):
        config = _read_config(run_dir, overrides or [])
        metrics_path = run_dir / "metrics.json"
        metrics = read_metrics(read_json(metrics_path, _FIX), source=str(metrics_path))
        if not isinstance(metrics, DeepRunMetrics):
            raise UserError("the metrics of a linear run", metrics_path, _FIX)
        original, d0 = _load_model(run_dir / "original.safetensors", config)
        immunized, d1 = _load_model(run_dir / "immunized.safetensors", config)
        names = (
            list(DeepAttacker)
            if config.attack.attackers == "all"
            else [DeepAttacker(n) for n in config.attack.attackers.split(",")]
        )
        data = load_deep_data(config)
        bs = config.eval.batch_size
        images = None
        if DeepAttacker.FULL_ADAM in names:
            tasks = {t: TaskImages(*split) for t, split in _tasks(data).items()}
            _, images = prefix_tensors(original, tasks, batch_size=bs, keep_images=True)
        acts0 = _prefix(original, data, config)
        acts1 = acts0 if same_prefix(original, immunized) else _prefix(immunized, data, config)
        dims = config.attack.skip_dims
        suite = run_deep_suite(
            list(names),
            released_model(original, acts0, images, batch_size=bs, skip_dims=dims),
            released_model(immunized, acts1, images, batch_size=bs, skip_dims=dims),
            attack_options(config, run_dir, _fingerprint(config, [d0, d1])),
            on_progress=on_progress,
        )
        metrics = replace(metrics, attack_suite=suite)
        replace_atomically(
            metrics_path,
            lambda tmp: tmp.write_text(
                json.dumps(metrics.to_json(), indent=2, allow_nan=True) + "\n"
            ),
        )
        write_deep_attack_report(run_dir, metrics, suite)
    return suite, metrics
