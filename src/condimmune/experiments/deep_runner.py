"""Run one deep experiment and write its run directory (same contract as the linear runs).

Run directory::

    config.yaml              resolved config + seed + package versions
    metrics.json             RIR_θ0 (honest and paper-compatible, mean ± std over groups),
                             benign top-1 before/after, attack results, training record
    original.safetensors     θ0: the released model before immunization (backbone + head)
    immunized.safetensors    θ_I: the immunized model
    report.md, *.png         report with attack curves, spectra and training curves

While training, checkpoints go to the sibling ``<run dir>.checkpoints/`` (safetensors:
model, optimizer, history, and θ0). Re-running the same command after a kill resumes
from the last checkpoint; a successful run removes that folder. The run directory itself
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
from collections.abc import Iterable
from dataclasses import asdict, replace
from pathlib import Path

import torch
import yaml
from lightning.fabric import Fabric
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from condimmune.deep.backbones import DeepModel, build_model
from condimmune.deep.checkpoint import DeepHistory
from condimmune.deep.evaluate import extract_features
from condimmune.deep.trainer import (
    Batch,
    FabricOptions,
    ImmunizeOptions,
    immunize,
    make_fabric,
    pretrain,
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
from condimmune.experiments.records import DeepTrainingRecord
from condimmune.experiments.rundir import (
    new_output_dir,
    package_versions,
    write_directory_atomically,
)
from condimmune.methods.base import DeepSolver, MethodOptions
from condimmune.methods.closed_form import closed_form_feature_map
from condimmune.methods.registry import method_spec

__all__ = ["DeepRunArtifacts", "fabric_options", "immunize_options", "run_deep_experiment"]


def fabric_options(train: DeepTrainConfig) -> FabricOptions:
    """Where the config's ``train`` section asks to run."""
    return FabricOptions(train.accelerator, train.devices, train.strategy, train.precision)


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


def _original_model(
    config: DeepExperimentConfig, data: DeepTaskData, ckpt: Path | None, progress: bool
) -> tuple[DeepModel, list[float]]:
    """θ0: the given weights, or (``train.pretrain_epochs``) pre-trained here on the benign task."""
    model = build_model(
        config.model.backbone,
        num_classes=data.benign.num_classes,
        image_size=config.model.image_size,
        weights=config.model.weights,
        seed=config.seed,
    )
    cached = ckpt / "original.safetensors" if ckpt is not None else None
    if cached is not None and cached.is_file():
        model.load_state_dict(load_file(cached))
        return model, []
    losses: list[float] = []
    if config.train.pretrain_epochs:

        def bar(it: Iterable[Batch]) -> Iterable[Batch]:
            return tqdm(it, disable=not progress, desc="pre-train θ0", leave=False)

        losses = pretrain(
            model,
            data.benign.train,
            epochs=config.train.pretrain_epochs,
            lr=config.train.pretrain_lr,
            batch_size=config.train.pretrain_batch_size,
            seed=config.seed,
            progress=bar,
        )
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        save_file(_state_tensors(model), cached)
    return model, losses


def _closed_form(model: DeepModel, data: DeepTaskData, config: DeepExperimentConfig) -> None:
    """The closed form on a frozen backbone: T from the ridge-regularized feature
    covariances, T⁻¹ folded into the head (benign logits unchanged up to rounding)."""
    phi_p, _, _ = extract_features(model, data.benign_train_eval, batch_size=config.eval.batch_size)
    phi_h, _, _ = extract_features(
        model, data.harmful_train_eval, batch_size=config.eval.batch_size
    )
    model.set_feature_map(
        closed_form_feature_map(phi_p, phi_h, ridge=config.train.closed_form_ridge)
    )


def run_deep_experiment(
    config: DeepExperimentConfig, out_dir: str | Path | None, *, progress: bool = True
) -> DeepRunArtifacts:
    """Pre-train or load θ0, immunize, evaluate, and (if ``out_dir``) write the run directory."""
    checked = config_from_dict(config_to_dict(config))
    if not isinstance(checked, DeepExperimentConfig):
        raise ValueError(f"{config.experiment} is a linear experiment; use run_experiment")
    config = checked
    start = time.perf_counter()
    fabric = make_fabric(fabric_options(config.train))
    final = new_output_dir(out_dir) if out_dir is not None and _is_rank_zero() else None
    ckpt = (
        Path(f"{Path(out_dir).expanduser().resolve()}.checkpoints") if out_dir is not None else None
    )
    data = load_deep_data(config)
    original, pretrain_losses = _original_model(config, data, ckpt, progress)
    model = copy.deepcopy(original)
    solver = method_spec(config.train.method).deep_solver
    history = DeepHistory()
    if solver is DeepSolver.CLOSED_FORM:
        _closed_form(model, data, config)
    elif config.train.epochs:
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
    metrics, curves = evaluate_deep(config, data, original, model)
    metrics = replace(
        metrics,
        train_seconds=history.seconds,
        training=DeepTrainingRecord(
            steps=history.global_step,
            pretrain_steps=len(pretrain_losses),
            resumed_from_step=history.resumed_from,
            rank_deficient_steps=history.rank_deficient_steps,
            processes=config.train.devices,
        ),
        wall_seconds=time.perf_counter() - start,
    )
    curves = replace(curves, pretrain_loss=pretrain_losses)
    art = DeepRunArtifacts(config, metrics, history, curves)
    if final is not None:
        _write(final, art, original, model)
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
        save_file(_state_tensors(model), result, metadata={"history": json.dumps(asdict(history))})


def _state_tensors(model: DeepModel) -> dict[str, torch.Tensor]:
    """The model's state as contiguous CPU tensors, as safetensors wants them."""
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def _write(final: Path, art: DeepRunArtifacts, original: DeepModel, model: DeepModel) -> None:
    def write(tmp: Path) -> None:
        resolved = config_to_dict(art.config)
        resolved["versions"] = package_versions("torchvision", "timm", "lightning")
        (tmp / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
        for name, m in (("original", original), ("immunized", model)):
            save_file(_state_tensors(m), tmp / f"{name}.safetensors")
        metrics = art.metrics.to_json() if art.metrics is not None else {}
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=True) + "\n")
        write_deep_report(tmp, art)

    write_directory_atomically(final, write)
