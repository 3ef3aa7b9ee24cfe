"""Run one deep experiment and write its run directory (same contract as the linear runs).

Run directory::

    config.yaml              resolved config + seed + package versions
    logs/                    per-step training curves through Lightning's logger
                             (``csv/metrics.csv`` or ``tensorboard/`` event files)
    metrics.json             RIR_θ0 (honest and paper-compatible, mean ± std over groups),
                             benign top-1 before/after, attack results, training record
    original.safetensors     θ0: the released model before immunization (backbone + head)
    immunized.safetensors    θ_I: the immunized model
    report.md, *.png         report with attack curves, spectra and training curves

While training, checkpoints go to the sibling ``<run dir>.checkpoints/`` (safetensors:
model, optimizer, history, and θ0), and the logger writes to ``<run dir>.checkpoints/logs/``
(watch a long run with ``tensorboard --logdir <run dir>.checkpoints/logs``). Re-running the
same command after a kill resumes from the last checkpoint; a successful run removes that
folder. The run directory itself
is written into a temporary sibling and renamed into place, never half-written.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import yaml
from lightning.fabric import Fabric
from lightning.fabric.utilities.exceptions import MisconfigurationException
from safetensors.torch import save_file

from condimmune.core.errors import UserError
from condimmune.deep.backbones import DeepModel
from condimmune.deep.checkpoint import DeepHistory
from condimmune.deep.evaluate import extract_features
from condimmune.deep.feature_maps import apply_feature_map
from condimmune.deep.trainer import (
    FabricOptions,
    ImmunizeOptions,
    TrainLogger,
    immunize,
    make_fabric,
)
from condimmune.experiments.artifacts import DeepRunArtifacts
from condimmune.experiments.config import (
    DeepExperimentConfig,
    DeepTrainConfig,
    config_from_dict,
    config_to_dict,
)
from condimmune.experiments.deep_data import DeepTaskData, load_deep_data
from condimmune.experiments.deep_evaluation import evaluate_deep
from condimmune.experiments.deep_report import write_deep_report
from condimmune.experiments.deep_setup import prepare_original, state_tensors
from condimmune.experiments.records import DeepTrainingRecord
from condimmune.experiments.rundir import (
    claim_output_dir,
    package_versions,
    write_directory_atomically,
)
from condimmune.methods.base import DeepSolver, FeatureMapInputs, MethodOptions
from condimmune.methods.registry import method_spec

__all__ = ["DeepRunArtifacts", "fabric_options", "immunize_options", "run_deep_experiment"]


def fabric_options(train: DeepTrainConfig, log_dir: Path | None = None) -> FabricOptions:
    """Where the config's ``train`` section asks to run, logging to ``log_dir``."""
    return FabricOptions(
        train.accelerator,
        train.devices,
        train.strategy,
        train.precision,
        TrainLogger(train.logger),
        log_dir,
    )


def immunize_options(train: DeepTrainConfig) -> ImmunizeOptions:
    """The library's immunization options from the config's ``train`` section."""
    return ImmunizeOptions(
        method=train.method,
        method_options=MethodOptions(
            benign_weight=train.benign_weight,
            harmful_weight=train.harmful_weight,
            opt_kappa_weight=train.opt_kappa_weight,
            imma_weight=train.imma_weight,
            imma_inner_steps=train.imma_inner_steps,
            closed_form_ridge=train.closed_form_ridge,
        ),
        epochs=train.epochs,
        batch_size=train.batch_size,
        lr=train.lr,
        momentum=train.momentum,
        weight_decay=train.weight_decay,
        label_smoothing=train.label_smoothing,
        normalize_covariance=train.normalize_covariance,
        benign_guard=train.benign_guard,
        max_steps=train.max_steps,
        checkpoint_every=train.checkpoint_every,
    )


def _fingerprint(config: DeepExperimentConfig) -> str:
    return hashlib.sha256(json.dumps(config_to_dict(config), sort_keys=True).encode()).hexdigest()[
        :16
    ]


def _fabric(train: DeepTrainConfig, ckpt: Path | None) -> Fabric:
    """Lightning Fabric for the ``train`` section; settings this machine cannot run (no GPU,
    a precision the device lacks) are a :class:`UserError` naming the keys."""
    try:
        return make_fabric(fabric_options(train, ckpt / "logs" if ckpt else None))
    except (RuntimeError, MisconfigurationException) as exc:
        raise UserError(
            f"Lightning cannot run this configuration here ({' '.join(str(exc).split())})",
            f"train.accelerator={train.accelerator}, train.devices={train.devices}, "
            f"train.strategy={train.strategy}, train.precision={train.precision}",
            "set them to what this machine has, e.g. --set train.accelerator=cpu",
        ) from None


def _apply_feature_map(model: DeepModel, data: DeepTaskData, config: DeepExperimentConfig) -> None:
    """The method's feature map on the model's frozen features (θ0 for ``closed-form`` and
    ``leace``, the trained model for ``condnum-leace``), folded into the model: an invertible
    ``T`` into the head exactly, a singular one by refitting the head
    (:mod:`condimmune.deep.feature_maps`)."""
    hook = method_spec(config.train.method).deep_feature_map
    if hook is None:
        raise ValueError(f"train.method={config.train.method} has no feature map")
    bs = config.eval.batch_size
    phi_p, _, _ = extract_features(model, data.benign_train_eval, batch_size=bs)
    phi_h, _, labels = extract_features(model, data.harmful_train_eval, batch_size=bs)
    inputs = FeatureMapInputs(phi_p, phi_h, labels, data.harmful.num_classes)
    apply_feature_map(model, hook(inputs, immunize_options(config.train).method_options), phi_p)


def run_deep_experiment(
    config: DeepExperimentConfig, out_dir: str | Path | None, *, progress: bool = True
) -> DeepRunArtifacts:
    """Pre-train or load θ0, immunize, evaluate, and (if ``out_dir``) write the run directory;
    rank 0 checks and locks the output path before any compute."""
    checked = config_from_dict(config_to_dict(config))
    if not isinstance(checked, DeepExperimentConfig):
        raise ValueError(f"{config.experiment} is a linear experiment; use run_experiment")
    if out_dir is None or not _is_rank_zero():
        return _run(checked, None, out_dir, progress)
    with claim_output_dir(out_dir) as final:
        return _run(checked, final, out_dir, progress)


def _run(
    config: DeepExperimentConfig, final: Path | None, out_dir: str | Path | None, progress: bool
) -> DeepRunArtifacts:
    start = time.perf_counter()
    ckpt = (
        Path(f"{Path(out_dir).expanduser().resolve()}.checkpoints") if out_dir is not None else None
    )
    fabric = _fabric(config.train, ckpt)
    setup = prepare_original(config, load_deep_data(config), ckpt, progress)
    original, data = setup.original, setup.data
    model = copy.deepcopy(original)
    spec = method_spec(config.train.method)
    history = DeepHistory()
    if spec.deep_solver is DeepSolver.PENALTY and config.train.epochs:
        with tempfile.TemporaryDirectory(prefix="condimmune-train-") as handoff:
            result = Path(handoff) / "trained.safetensors"
            fabric.launch(
                functools.partial(
                    _train_worker,
                    model=model,
                    data=data,
                    config=config,
                    ckpt=ckpt,
                    fingerprint=_fingerprint(config),
                    progress=progress,
                    result=result,
                )
            )
            if fabric.global_rank != 0:
                return DeepRunArtifacts(config, None, history, None)
            history = _read_trained(result, model)
    if spec.deep_feature_map is not None:
        _apply_feature_map(model, data, config)
    metrics, curves = evaluate_deep(config, data, original, model)
    metrics = replace(
        metrics,
        train_seconds=history.seconds,
        training=DeepTrainingRecord(
            steps=history.global_step,
            pretrain_steps=len(setup.pretrain_losses),
            resumed_from_step=history.resumed_from,
            rank_deficient_steps=history.rank_deficient_steps,
            processes=config.train.devices,
        ),
        wall_seconds=time.perf_counter() - start,
        prefix_seconds=setup.prefix_seconds,
    )
    curves = replace(curves, pretrain_loss=setup.pretrain_losses)
    art = DeepRunArtifacts(config, metrics, history, curves)
    if final is not None:
        _write(final, art, original, model, ckpt / "logs" if ckpt else None)
        if ckpt is not None:
            shutil.rmtree(ckpt, ignore_errors=True)
    return art


def _is_rank_zero() -> bool:
    return (
        int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0
    )


def _read_trained(path: Path, model: DeepModel) -> DeepHistory:
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        model.load_state_dict({k: f.get_tensor(k) for k in f.keys()})  # noqa: SIM118
        return DeepHistory(**json.loads(f.metadata()["history"]))


def _train_worker(
    fabric: Fabric,
    *,
    model: DeepModel,
    data: DeepTaskData,
    config: DeepExperimentConfig,
    ckpt: Path | None,
    fingerprint: str,
    progress: bool,
    result: Path,
) -> None:
    """Immunize on every process; rank 0 hands the weights and history back through a file
    (a spawned process's return value goes through a pipe and must stay tiny)."""
    history = immunize(
        fabric,
        model,
        data.benign.train,
        data.harmful.train,
        immunize_options(config.train),
        harmful_classes=data.harmful.num_classes,
        seed=config.seed,
        checkpoint_dir=ckpt,
        fingerprint=fingerprint,
        progress=progress,
    )
    if fabric.global_rank == 0:
        save_file(state_tensors(model), result, metadata={"history": json.dumps(asdict(history))})


def _write(
    final: Path, art: DeepRunArtifacts, original: DeepModel, model: DeepModel, logs: Path | None
) -> None:
    def write(tmp: Path) -> None:
        if logs is not None and logs.is_dir():
            shutil.copytree(logs, tmp / "logs")
        resolved = config_to_dict(art.config)
        resolved["versions"] = package_versions("torchvision", "timm", "lightning")
        (tmp / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
        for name, m in (("original", original), ("immunized", model)):
            save_file(state_tensors(m), tmp / f"{name}.safetensors")
        metrics = art.metrics.to_json() if art.metrics is not None else {}
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=True) + "\n")
        write_deep_report(tmp, art)

    write_directory_atomically(final, write)
