"""condimmune: model immunization from a condition-number perspective.

Public API: everything in ``__all__`` (docs/architecture.md lists it by module). Names are
imported on first use (PEP 562), so ``import condimmune`` and the command line's ``--help``
do not pay for torch, Lightning and timm until something needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from condimmune.attacks.deep_headline import DeepAttackSuite
    from condimmune.attacks.deep_records import DeepAttackOptions
    from condimmune.attacks.probes import (
        AttackerTransform,
        ProbeAttackResult,
        ProbeComparison,
        attacker_features,
        compare_probe_attacks,
        probe_attack,
    )
    from condimmune.attacks.registry import Attacker, DeepAttacker
    from condimmune.core.bound import (
        ImmunizationBound,
        closed_form_immunizer,
        immunization_bound,
        immunization_bound_features,
    )
    from condimmune.core.errors import DegenerateSpectrumError, RankDeficientWarning
    from condimmune.core.metrics import (
        ConditionNumbers,
        ImmunizationCheck,
        KappaRule,
        ProbingLoss,
        check_immunization,
        immunization_condition_numbers,
        log_probing_hessian_condition_number,
        probing_hessian,
        relative_immunization_ratio,
    )
    from condimmune.core.preconditioner import InputPreconditioner, PreconditionerMethod
    from condimmune.core.records import JsonRecord, RecordError
    from condimmune.core.regularizers import (
        RankDeficiency,
        r_ill,
        r_ill_features,
        r_ill_gradient,
        r_well,
        r_well_features,
        r_well_gradient,
    )
    from condimmune.core.spectral import (
        condition_number,
        condition_number_features,
        covariance_eigenvalues,
        default_rtol,
        log_condition_number,
        log_condition_number_features,
        nonzero_eigenvalues,
        numerical_rank,
        paper_compatible_condition_number,
    )
    from condimmune.deep.api import ImmunizedModel, attack_models, immunize_model
    from condimmune.deep.backbones import Backbone, DeepModel, build_model, load_weights
    from condimmune.deep.custom import wrap_model
    from condimmune.deep.evaluate import group_immunization_ratios, linear_probe_curve
    from condimmune.deep.penalty import immunization_penalty, normalized_features, step_loss
    from condimmune.deep.records import GroupRatios
    from condimmune.deep.trainer import FabricOptions, ImmunizeOptions, immunize
    from condimmune.experiments.library import attack_run, evaluate_run, load_run, run
    from condimmune.experiments.pipeline import AttackOutcome, LoadedRun, RunResult, resolve_plan
    from condimmune.experiments.plan import RunPlan
    from condimmune.linear.train import LinearTrainOptions, train_linear
    from condimmune.methods.base import (
        ConfiguredMethod,
        DeepSolver,
        DeepVersion,
        FeatureMap,
        FeatureMapInputs,
        LinearPlan,
        LinearProblem,
        LinearVersion,
        MethodOptions,
        MethodSpec,
        ModelFamily,
        NoOptions,
        PenaltyInputs,
    )
    from condimmune.methods.registry import (
        Method,
        configure_method,
        method_spec,
        register_method,
        registered_methods,
        unregister_method,
    )

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "AttackerTransform": "condimmune.attacks.probes",
    "ProbeAttackResult": "condimmune.attacks.probes",
    "ProbeComparison": "condimmune.attacks.probes",
    "attacker_features": "condimmune.attacks.probes",
    "compare_probe_attacks": "condimmune.attacks.probes",
    "probe_attack": "condimmune.attacks.probes",
    "ImmunizationBound": "condimmune.core.bound",
    "closed_form_immunizer": "condimmune.core.bound",
    "immunization_bound": "condimmune.core.bound",
    "immunization_bound_features": "condimmune.core.bound",
    "DegenerateSpectrumError": "condimmune.core.errors",
    "RankDeficientWarning": "condimmune.core.errors",
    "ConditionNumbers": "condimmune.core.metrics",
    "ImmunizationCheck": "condimmune.core.metrics",
    "KappaRule": "condimmune.core.metrics",
    "ProbingLoss": "condimmune.core.metrics",
    "check_immunization": "condimmune.core.metrics",
    "immunization_condition_numbers": "condimmune.core.metrics",
    "log_probing_hessian_condition_number": "condimmune.core.metrics",
    "probing_hessian": "condimmune.core.metrics",
    "relative_immunization_ratio": "condimmune.core.metrics",
    "InputPreconditioner": "condimmune.core.preconditioner",
    "PreconditionerMethod": "condimmune.core.preconditioner",
    "JsonRecord": "condimmune.core.records",
    "RecordError": "condimmune.core.records",
    "RankDeficiency": "condimmune.core.regularizers",
    "r_ill": "condimmune.core.regularizers",
    "r_ill_features": "condimmune.core.regularizers",
    "r_ill_gradient": "condimmune.core.regularizers",
    "r_well": "condimmune.core.regularizers",
    "r_well_features": "condimmune.core.regularizers",
    "r_well_gradient": "condimmune.core.regularizers",
    "condition_number": "condimmune.core.spectral",
    "condition_number_features": "condimmune.core.spectral",
    "covariance_eigenvalues": "condimmune.core.spectral",
    "default_rtol": "condimmune.core.spectral",
    "log_condition_number": "condimmune.core.spectral",
    "log_condition_number_features": "condimmune.core.spectral",
    "nonzero_eigenvalues": "condimmune.core.spectral",
    "numerical_rank": "condimmune.core.spectral",
    "paper_compatible_condition_number": "condimmune.core.spectral",
    "DeepAttackOptions": "condimmune.attacks.deep_records",
    "DeepAttackSuite": "condimmune.attacks.deep_headline",
    "Attacker": "condimmune.attacks.registry",
    "DeepAttacker": "condimmune.attacks.registry",
    "ImmunizedModel": "condimmune.deep.api",
    "attack_models": "condimmune.deep.api",
    "immunize_model": "condimmune.deep.api",
    "wrap_model": "condimmune.deep.custom",
    "attack_run": "condimmune.experiments.library",
    "evaluate_run": "condimmune.experiments.library",
    "load_run": "condimmune.experiments.library",
    "run": "condimmune.experiments.library",
    "AttackOutcome": "condimmune.experiments.pipeline",
    "LoadedRun": "condimmune.experiments.pipeline",
    "RunResult": "condimmune.experiments.pipeline",
    "RunPlan": "condimmune.experiments.plan",
    "resolve_plan": "condimmune.experiments.pipeline",
    "Backbone": "condimmune.deep.backbones",
    "DeepModel": "condimmune.deep.backbones",
    "build_model": "condimmune.deep.backbones",
    "load_weights": "condimmune.deep.backbones",
    "GroupRatios": "condimmune.deep.records",
    "group_immunization_ratios": "condimmune.deep.evaluate",
    "linear_probe_curve": "condimmune.deep.evaluate",
    "immunization_penalty": "condimmune.deep.penalty",
    "normalized_features": "condimmune.deep.penalty",
    "step_loss": "condimmune.deep.penalty",
    "FabricOptions": "condimmune.deep.trainer",
    "ImmunizeOptions": "condimmune.deep.trainer",
    "immunize": "condimmune.deep.trainer",
    "LinearTrainOptions": "condimmune.linear.train",
    "train_linear": "condimmune.linear.train",
    "ConfiguredMethod": "condimmune.methods.base",
    "DeepSolver": "condimmune.methods.base",
    "DeepVersion": "condimmune.methods.base",
    "FeatureMap": "condimmune.methods.base",
    "FeatureMapInputs": "condimmune.methods.base",
    "LinearPlan": "condimmune.methods.base",
    "LinearProblem": "condimmune.methods.base",
    "LinearVersion": "condimmune.methods.base",
    "MethodOptions": "condimmune.methods.base",
    "MethodSpec": "condimmune.methods.base",
    "ModelFamily": "condimmune.methods.base",
    "NoOptions": "condimmune.methods.base",
    "PenaltyInputs": "condimmune.methods.base",
    "Method": "condimmune.methods.registry",
    "configure_method": "condimmune.methods.registry",
    "method_spec": "condimmune.methods.registry",
    "register_method": "condimmune.methods.registry",
    "registered_methods": "condimmune.methods.registry",
    "unregister_method": "condimmune.methods.registry",
}

__all__ = [
    "AttackOutcome",
    "Attacker",
    "AttackerTransform",
    "Backbone",
    "ConditionNumbers",
    "ConfiguredMethod",
    "DeepAttackOptions",
    "DeepAttackSuite",
    "DeepAttacker",
    "DeepModel",
    "DeepSolver",
    "DeepVersion",
    "DegenerateSpectrumError",
    "FabricOptions",
    "FeatureMap",
    "FeatureMapInputs",
    "GroupRatios",
    "ImmunizationBound",
    "ImmunizationCheck",
    "ImmunizeOptions",
    "ImmunizedModel",
    "InputPreconditioner",
    "JsonRecord",
    "KappaRule",
    "LinearPlan",
    "LinearProblem",
    "LinearTrainOptions",
    "LinearVersion",
    "LoadedRun",
    "Method",
    "MethodOptions",
    "MethodSpec",
    "ModelFamily",
    "NoOptions",
    "PenaltyInputs",
    "PreconditionerMethod",
    "ProbeAttackResult",
    "ProbeComparison",
    "ProbingLoss",
    "RankDeficiency",
    "RankDeficientWarning",
    "RecordError",
    "RunPlan",
    "RunResult",
    "__version__",
    "attack_models",
    "attack_run",
    "attacker_features",
    "build_model",
    "check_immunization",
    "closed_form_immunizer",
    "compare_probe_attacks",
    "condition_number",
    "condition_number_features",
    "configure_method",
    "covariance_eigenvalues",
    "default_rtol",
    "evaluate_run",
    "group_immunization_ratios",
    "immunization_bound",
    "immunization_bound_features",
    "immunization_condition_numbers",
    "immunization_penalty",
    "immunize",
    "immunize_model",
    "linear_probe_curve",
    "load_run",
    "load_weights",
    "log_condition_number",
    "log_condition_number_features",
    "log_probing_hessian_condition_number",
    "method_spec",
    "nonzero_eigenvalues",
    "normalized_features",
    "numerical_rank",
    "paper_compatible_condition_number",
    "probe_attack",
    "probing_hessian",
    "r_ill",
    "r_ill_features",
    "r_ill_gradient",
    "r_well",
    "r_well_features",
    "r_well_gradient",
    "register_method",
    "registered_methods",
    "relative_immunization_ratio",
    "resolve_plan",
    "run",
    "step_loss",
    "train_linear",
    "unregister_method",
    "wrap_model",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'condimmune' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
