"""condimmune: model immunization from a condition-number perspective.

Public API: everything in ``__all__``. See README.md and docs/ for the maths.
"""

from condimmune.attacks.probes import (
    AttackerTransform,
    ProbeAttackResult,
    ProbeComparison,
    attacker_features,
    compare_probe_attacks,
    probe_attack,
)
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
from condimmune.deep.backbones import Backbone, DeepModel, build_model, load_weights
from condimmune.deep.evaluate import GroupRatios, group_immunization_ratios, linear_probe_curve
from condimmune.deep.penalty import immunization_penalty, normalized_features, step_loss
from condimmune.deep.trainer import FabricOptions, ImmunizeOptions, immunize
from condimmune.linear.train import LinearTrainOptions, train_linear
from condimmune.methods.base import LinearPlan, LinearProblem, MethodOptions, MethodSpec
from condimmune.methods.registry import (
    Method,
    method_spec,
    register_method,
    registered_methods,
    unregister_method,
)

__version__ = "0.1.0"

__all__ = [
    "AttackerTransform",
    "Backbone",
    "ConditionNumbers",
    "DeepModel",
    "DegenerateSpectrumError",
    "FabricOptions",
    "GroupRatios",
    "ImmunizationBound",
    "ImmunizationCheck",
    "ImmunizeOptions",
    "InputPreconditioner",
    "JsonRecord",
    "KappaRule",
    "LinearPlan",
    "LinearProblem",
    "LinearTrainOptions",
    "Method",
    "MethodOptions",
    "MethodSpec",
    "PreconditionerMethod",
    "ProbeAttackResult",
    "ProbeComparison",
    "ProbingLoss",
    "RankDeficiency",
    "RankDeficientWarning",
    "RecordError",
    "__version__",
    "attacker_features",
    "build_model",
    "check_immunization",
    "closed_form_immunizer",
    "compare_probe_attacks",
    "condition_number",
    "condition_number_features",
    "covariance_eigenvalues",
    "default_rtol",
    "group_immunization_ratios",
    "immunization_bound",
    "immunization_bound_features",
    "immunization_condition_numbers",
    "immunization_penalty",
    "immunize",
    "linear_probe_curve",
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
    "step_loss",
    "train_linear",
    "unregister_method",
]
