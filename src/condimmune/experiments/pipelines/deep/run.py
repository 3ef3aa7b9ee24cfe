"""A deep run: θ0 (loaded, pre-trained or both), the method's immunization θ_I on Lightning
Fabric, and the metrics of θ0 vs θ_I.

While training, checkpoints go to the sibling ``<run dir>.checkpoints/`` (safetensors:
model, optimizer, history, and θ0), and the logger writes to ``<run dir>.checkpoints/logs/``
(watch a long run with ``tensorboard --logdir <run dir>.checkpoints/logs``). Re-running the
same command after a kill resumes from the last checkpoint; a successful run removes that
folder.
"""

from __future__ import annotations

import copy
import functools
import json
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from lightning.fabric import Fabric
from lightning.fabric.utilities.exceptions import MisconfigurationException
from safetensors.torch import save_file

from condimmune.core.errors import UserError
from condimmune.core.progress import ProgressCallback
from condimmune.deep.backbones import DeepModel
from condimmune.deep.checkpoint import DeepHistory
from condimmune.deep.evaluate import extract_features
from condimmune.deep.feature_maps import apply_feature_map
from condimmune.deep.trainer import immunize, make_fabric, release_processes
from condimmune.deep.whole_network import immunize_whole_network
from condimmune.experiments.pipeline import LoadedRun, RunResult
from condimmune.experiments.pipelines.deep.data import DeepTaskData, load_deep_data
from condimmune.experiments.pipelines.deep.evaluation import DeepCurves, evaluate_deep
from condimmune.experiments.pipelines.deep.options import DeepRunOptions
from condimmune.experiments.pipelines.deep.original import prepare_original, state_tensors
from condimmune.experiments.plan import RunPlan
from condimmune.experiments.records import DeepRunMetrics, DeepTrainingRecord
from condimmune.methods.base import DeepSolver, FeatureMapInputs

__all__ = ["DeepLoaded", "DeepRun", "checkpoint_dir", "fabric_for", "run_deep"]


@dataclass(frozen=True)
class DeepRun(RunResult):
    """A deep run in memory: θ0 and θ_I, the training history, the curves its figures plot,
    and where Lightning's logger wrote (copied into the run directory)."""

    metrics: DeepRunMetrics
    history: DeepHistory
    curves: DeepCurves
    original: DeepModel
    immunized: DeepModel
    logs: Path | None


@dataclass(frozen=True)
class DeepLoaded(LoadedRun):
    """A deep run directory read back: θ0 and θ_I (``original``/``immunized``) and the
    sha256 of their files."""

    metrics: DeepRunMetrics
    original: DeepModel
    immunized: DeepModel
    digests: tuple[bytes, bytes]


def checkpoint_dir(out: Path | None) -> Path | None:
    """``<run dir>.checkpoints``: where a run keeps what a resume needs."""
    return None if out is None else Path(f"{out.expanduser().resolve()}.checkpoints")


def fabric_for(options: DeepRunOptions, log_dir: Path | None = None) -> Fabric:
    """Lightning Fabric for the run; settings this machine cannot run (no GPU, a precision
    the device lacks) are a :class:`UserError` naming the keys."""
    f = options.fabric
    try:
        return make_fabric(replace(f, log_dir=log_dir))
    except (RuntimeError, MisconfigurationException) as exc:
        raise UserError(
            f"Lightning cannot run this configuration here ({' '.join(str(exc).split())})",
            f"train.accelerator={f.accelerator}, train.devices={f.devices}, "
            f"train.strategy={f.strategy}, train.precision={f.precision}",
            "set them to what this machine has, e.g. --set train.accelerator=cpu",
        ) from None


def _apply_feature_map(plan: RunPlan[DeepRunOptions], model: DeepModel, data: DeepTaskData) -> None:
    """The method's feature map on the model's frozen features (θ0 for ``closed-form`` and
    ``leace``, the trained model for ``condnum-leace``), folded into the model: an invertible
    ``T`` into the head exactly, a singular one by refitting the head
    (:mod:`condimmune.deep.feature_maps`)."""
    method = plan.method
    hook = method.deep.feature_map
    if hook is None:
        raise ValueError(f"method {method.name!r} has no feature map")
    bs = plan.options.evaluation.batch_size
    phi_p, _, _ = extract_features(model, data.benign_train_eval, batch_size=bs)
    phi_h, _, labels = extract_features(model, data.harmful_train_eval, batch_size=bs)
    inputs = FeatureMapInputs(phi_p, phi_h, labels, data.harmful.num_classes)
    apply_feature_map(model, hook(inputs, method.options), phi_p)


def run_deep(
    plan: RunPlan[DeepRunOptions],
    out: Path | None,
    *,
    progress: bool,
    on_progress: ProgressCallback | None = None,
) -> DeepRun | None:
    """Pre-train or load θ0, immunize, evaluate; ``None`` on the processes of a
    multi-process run that do not write the run directory. ``on_progress`` hears the
    evaluation (:func:`~condimmune.experiments.pipelines.deep.evaluation.evaluate_deep`)."""
    start = time.perf_counter()
    options = plan.options
    ckpt = checkpoint_dir(out)
    logs = ckpt / "logs" if ckpt is not None else None
    fabric = fabric_for(options, logs)
    data = load_deep_data(options.data, options.model, plan.seed)
    setup = prepare_original(plan, data, ckpt, progress, fabric.local_rank)
    original, data = setup.original, setup.data
    model = copy.deepcopy(original)
    deep = plan.method.deep
    history = DeepHistory()
    trains = deep.solver in (DeepSolver.PENALTY, DeepSolver.WHOLE_NETWORK)
    if trains and options.immunize.epochs:
        with tempfile.TemporaryDirectory(prefix="condimmune-train-") as handoff:
            result = Path(handoff) / "trained.safetensors"
            fabric.launch(
                functools.partial(
                    _train_worker,
                    model=model,
                    data=data,
                    plan=plan,
                    ckpt=ckpt,
                    progress=progress,
                    result=result,
                )
            )
            if fabric.global_rank != 0:
                return None
            history = _read_trained(result, model)
    if deep.feature_map is not None:
        _apply_feature_map(plan, model, data)
    metrics, curves = evaluate_deep(plan, data, original, model, on_progress=on_progress)
    metrics = replace(
        metrics,
        train_seconds=history.seconds,
        training=DeepTrainingRecord(
            steps=history.global_step,
            pretrain_steps=len(setup.pretrain_losses),
            resumed_from_step=history.resumed_from,
            rank_deficient_steps=history.rank_deficient_steps,
            processes=options.fabric.devices,
            guard_rollbacks=history.rollbacks if deep.solver is DeepSolver.WHOLE_NETWORK else None,
            last_tap_error=history.tap_error[-1] if history.tap_error else None,
        ),
        wall_seconds=time.perf_counter() - start,
        prefix_seconds=setup.prefix_seconds,
    )
    curves = replace(curves, pretrain_loss=setup.pretrain_losses)
    return DeepRun(plan, metrics, history, curves, original, model, logs)


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
    plan: RunPlan[DeepRunOptions],
    ckpt: Path | None,
    progress: bool,
    result: Path,
) -> None:
    """Immunize on every process; rank 0 hands the weights and history back through a file
    (a spawned process's return value goes through a pipe and must stay tiny). A
    whole-network method runs its own loop (one process, no checkpoints)."""
    if plan.method.deep.solver is DeepSolver.WHOLE_NETWORK:
        history = immunize_whole_network(
            fabric,
            model,
            data.benign.train,
            data.harmful_immunize,
            data.benign_train_eval,
            plan.options.immunize,
            harmful_classes=data.harmful.num_classes,
            seed=plan.seed,
            progress=progress,
        )
    else:
        history = immunize(
            fabric,
            model,
            data.benign.train,
            data.harmful_immunize,
            plan.options.immunize,
            harmful_classes=data.harmful.num_classes,
            seed=plan.seed,
            checkpoint_dir=ckpt,
            fingerprint=plan.fingerprint(),
            progress=progress,
        )
    if fabric.global_rank == 0:
        save_file(state_tensors(model), result, metadata={"history": json.dumps(asdict(history))})
    release_processes(fabric)
