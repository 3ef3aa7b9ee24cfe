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
import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file, save_file

from condimmune.experiments.rundir import new_output_dir, package_versions, write_directory_atomically
from condimmune.deep.backbones import SPECS, Backbone, DeepModel, build_model
from condimmune.core.bound import closed_form_immunizer
from condimmune.experiments.config import (
    DeepExperimentConfig,
    Experiment,
    Method,
    config_from_dict,
    config_to_dict,
)
from condimmune.deep.trainer import DeepHistory, immunize, make_fabric, pretrain
from condimmune.deep.evaluate import (
    ProbeCurve,
    extract_features,
    group_immunization_ratios,
    linear_probe_curve,
    one_hot_targets,
    probe_pair,
    top1_accuracy,
)
from condimmune.deep.images import (
    ImageDataset,
    ImageSplit,
    KeyedDataset,
    digit_group_tasks,
    folder_dataset,
    image_transform,
    parse_digits,
)

__all__ = ["DeepRunArtifacts", "run_deep_experiment"]


@dataclass(frozen=True)
class DeepTaskData:
    """Each task's training images twice (train and eval transforms) and held-out images."""

    benign: ImageSplit
    harmful: ImageSplit
    benign_train_eval: KeyedDataset
    harmful_train_eval: KeyedDataset


@dataclass(frozen=True)
class DeepRunArtifacts:
    config: DeepExperimentConfig
    metrics: dict[str, Any]
    history: DeepHistory
    curves: dict[str, Any]
    """Attack curves and spectra for the figures (tensors)."""
    primary: bool = True
    """False on the non-zero ranks of a multi-process run (they write nothing)."""


_HARMFUL_DATASET = {
    Experiment.IMAGENET_CARS_RESNET18: ImageDataset.STANFORD_CARS,
    Experiment.IMAGENET_CARS_VIT: ImageDataset.STANFORD_CARS,
    Experiment.IMAGENET_COUNTRY211_RESNET18: ImageDataset.COUNTRY211,
    Experiment.IMAGENET_COUNTRY211_VIT: ImageDataset.COUNTRY211,
}


def load_deep_data(config: DeepExperimentConfig) -> DeepTaskData:
    """The benign (pre-training) and harmful tasks of a deep experiment."""
    exp = Experiment(config.experiment)
    d = config.data
    if exp is Experiment.MNIST_CNN:
        from condimmune.linear.data import _mnist_arrays

        x, y, source = _mnist_arrays(d.root)
        benign, harmful = digit_group_tasks(
            x,
            y,
            (
                parse_digits(d.benign_digits, "data.benign_digits"),
                parse_digits(d.harmful_digits, "data.harmful_digits"),
            ),
            train_per_class=d.train_per_class,
            test_per_class=d.test_per_class,
            seed=config.seed,
            description=source,
        )
        return DeepTaskData(benign, harmful, benign.train, harmful.train)
    spec = SPECS[Backbone(config.model.backbone)]
    size = config.model.image_size
    tf_train = image_transform(size, spec.mean, spec.std, train=True)
    tf_eval = image_transform(size, spec.mean, spec.std, train=False)
    splits = []
    for dataset, root, key in (
        (ImageDataset.IMAGENET, d.root, "data.root"),
        (_HARMFUL_DATASET[exp], d.harmful_root, "data.harmful_root"),
    ):

        def make(split: str, tf, limit: int, dataset=dataset, root=root, key=key) -> KeyedDataset:
            return folder_dataset(
                dataset, root, split, tf, key=key, max_images=limit, seed=config.seed
            )

        train = make("train", tf_train, d.max_train_images)
        test = make("test", tf_eval, d.max_test_images)
        train_eval = make("train", tf_eval, d.max_train_images)
        splits.append(
            (ImageSplit(train, test, len(train.classes), f"{dataset.value} at {root}"), train_eval)
        )
    (benign, benign_eval), (harmful, harmful_eval) = splits
    return DeepTaskData(benign, harmful, benign_eval, harmful_eval)


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
        from tqdm.auto import tqdm

        def bar(it):
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
    """#7 on a frozen backbone: T from the ridge-regularized feature covariances, T⁻¹ folded
    into the head (benign logits unchanged up to rounding)."""
    phi_p, _, _ = extract_features(model, data.benign_train_eval, batch_size=config.eval.batch_size)
    phi_h, _, _ = extract_features(
        model, data.harmful_train_eval, batch_size=config.eval.batch_size
    )
    k = phi_p.shape[1]
    rows = []
    for phi in (phi_p, phi_h):
        ridge = config.train.closed_form_ridge * float(phi.square().sum()) / k
        rows.append(torch.cat([phi, math.sqrt(ridge) * torch.eye(k, dtype=phi.dtype)]))
    model.set_feature_map(closed_form_immunizer(rows[0], rows[1]))


def run_deep_experiment(
    config: DeepExperimentConfig, out_dir: str | Path | None, *, progress: bool = True
) -> DeepRunArtifacts:
    """Pre-train or load θ0, immunize, evaluate, and (if ``out_dir``) write the run directory."""
    config = config_from_dict(config_to_dict(config))
    start = time.perf_counter()
    fabric = make_fabric(config.train)
    final = new_output_dir(out_dir) if out_dir is not None and _is_rank_zero() else None
    ckpt = (
        Path(f"{Path(out_dir).expanduser().resolve()}.checkpoints") if out_dir is not None else None
    )
    data = load_deep_data(config)
    original, pretrain_losses = _original_model(config, data, ckpt, progress)
    model = copy.deepcopy(original)
    method = Method(config.train.method)
    history = DeepHistory()
    if method is Method.CLOSED_FORM:
        _closed_form(model, data, config)
    elif config.train.epochs:
        with tempfile.TemporaryDirectory(prefix="condimmune-train-") as handoff:
            result = Path(handoff) / "trained.safetensors"
            fabric.launch(
                _train_worker, model, data, config, ckpt, _fingerprint(config), progress, result
            )
            if fabric.global_rank != 0:
                return DeepRunArtifacts(config, {}, history, {}, primary=False)
            history = _read_trained(result, model)
    train_seconds = history.seconds
    metrics, curves = evaluate_deep(config, data, original, model)
    metrics.update(
        {
            "train_seconds": train_seconds,
            "training": {
                "steps": history.global_step,
                "pretrain_steps": len(pretrain_losses),
                "resumed_from_step": history.resumed_from,
                "rank_deficient_steps": history.rank_deficient_steps,
                "processes": config.train.devices,
            },
            "wall_seconds": time.perf_counter() - start,
        }
    )
    curves["pretrain_loss"] = pretrain_losses
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


def _train_worker(fabric, model, data, config, ckpt, fingerprint, progress, result: Path) -> None:
    """Immunize on every process; rank 0 hands the weights and history back through a file
    (a spawned process's return value goes through a pipe and must stay tiny)."""
    history = immunize(
        fabric,
        model,
        data.benign.train,
        data.harmful.train,
        config.train,
        harmful_classes=data.harmful.num_classes,
        seed=config.seed,
        checkpoint_dir=ckpt,
        fingerprint=fingerprint,
        progress=progress,
    )
    if fabric.global_rank == 0:
        save_file(_state_tensors(model), result, metadata={"history": json.dumps(history.__dict__)})


_PAPER_GROUPS, _PAPER_GROUP_SIZE = 20, 100


def evaluate_deep(
    config: DeepExperimentConfig, data: DeepTaskData, original: DeepModel, immunized: DeepModel
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Metrics and figure data of θ0 vs θ_I (module docstring of :mod:`condimmune.deep.evaluate`)."""
    e = config.eval
    bs = e.batch_size
    feats = {}
    for name, model in (("original", original), ("immunized", immunized)):
        pb, _, _ = extract_features(model, data.benign_train_eval, batch_size=bs)
        ph, _, yh = extract_features(model, data.harmful_train_eval, batch_size=bs)
        _, logits, yb_test = extract_features(model, data.benign.test, batch_size=bs)
        ph_test, _, yh_test = extract_features(model, data.harmful.test, batch_size=bs)
        feats[name] = {"benign": pb, "harmful": ph, "logits": logits, "harmful_test": ph_test}
    o, i = feats["original"], feats["immunized"]

    def ratios(groups: int, size: int) -> dict[str, Any]:
        return {
            rule: group_immunization_ratios(
                (o["benign"], i["benign"]),
                (o["harmful"], i["harmful"]),
                groups=groups,
                group_size=size,
                seed=config.seed,
                paper_compatible=rule == "paper_compatible",
            ).to_dict()
            for rule in ("honest", "paper_compatible")
        }

    rir = ratios(e.groups, e.group_size)
    # the paper's own protocol (20 groups of 100), whenever the data allow it
    enough = min(o["benign"].shape[0], o["harmful"].shape[0]) >= _PAPER_GROUP_SIZE
    paper_protocol = ratios(_PAPER_GROUPS, _PAPER_GROUP_SIZE) if enough else None
    targets = one_hot_targets(yh, data.harmful.num_classes)
    gd = probe_pair(
        o["harmful"], i["harmful"], targets, target=e.attack_target, budget=e.attack_budget
    )
    wh = probe_pair(
        o["harmful"],
        i["harmful"],
        targets,
        target=e.attack_target,
        budget=e.attack_budget,
        whiten=True,
    )
    probes: dict[str, ProbeCurve] = {
        name: linear_probe_curve(
            (f["harmful"], yh),
            (f["harmful_test"], yh_test),
            data.harmful.num_classes,
            steps=e.probe_steps,
        )
        for name, f in feats.items()
    }
    raw_best = float(probes["original"].accuracy.max())
    level = 0.95 * raw_best
    steps_o, steps_i = probes["original"].steps_to(level), probes["immunized"].steps_to(level)
    metrics: dict[str, Any] = {
        "experiment": config.experiment,
        "method": config.train.method,
        "seed": config.seed,
        "backbone": config.model.backbone,
        "feature_dim": int(o["benign"].shape[1]),
        "benign_task": data.benign.description,
        "harmful_task": data.harmful.description,
        "rir_theta0": rir,
        "rir_theta0_paper_protocol": paper_protocol,
        "benign_accuracy": {
            "original": top1_accuracy(o["logits"], yb_test),
            "immunized": top1_accuracy(i["logits"], yb_test),
        },
        "attack": {
            "gd": _pair_dict(gd),
            "gd_whitened": _pair_dict(wh),
            "linear_probe": {
                "level": level,
                "steps_original": steps_o,
                "steps_immunized": steps_i,
                "slowdown": (steps_i if steps_i is not None else e.probe_steps + 1)
                / max(steps_o or 1, 1),
                "final_accuracy_original": float(probes["original"].accuracy[-1]),
                "final_accuracy_immunized": float(probes["immunized"].accuracy[-1]),
                "setting_original": probes["original"].setting,
                "setting_immunized": probes["immunized"].setting,
            },
        },
    }
    curves = {
        "gd": gd,
        "gd_whitened": wh,
        "probe": probes,
        "spectra": {
            task: {
                name: torch.linalg.svdvals(feats[name][task][: e.group_size]) ** 2
                for name in ("original", "immunized")
            }
            for task in ("benign", "harmful")
        },
    }
    return metrics, curves


def _pair_dict(pair) -> dict[str, Any]:
    orig, imm = pair
    return {
        "steps_original": orig.steps_to_target,
        "steps_immunized": imm.steps_to_target,
        "slowdown": imm.steps_to_target / max(orig.steps_to_target, 1),
        "condition_number_original": orig.condition_number,
        "condition_number_immunized": imm.condition_number,
    }


def _state_tensors(model: DeepModel) -> dict[str, torch.Tensor]:
    """The model's state as contiguous CPU tensors, as safetensors wants them."""
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def _write(final: Path, art: DeepRunArtifacts, original: DeepModel, model: DeepModel) -> None:
    from condimmune.experiments.deep_report import write_deep_report

    def write(tmp: Path) -> None:
        resolved = config_to_dict(art.config)
        resolved["versions"] = package_versions("torchvision", "timm", "lightning")
        (tmp / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
        for name, m in (("original", original), ("immunized", model)):
            save_file(_state_tensors(m), tmp / f"{name}.safetensors")
        (tmp / "metrics.json").write_text(json.dumps(art.metrics, indent=2, allow_nan=True) + "\n")
        write_deep_report(tmp, art)

    write_directory_atomically(final, write)
