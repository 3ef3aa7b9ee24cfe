"""What a method is: its spec, its options, and the two hooks the trainers call.

A method plugs into the linear trainer (:mod:`condimmune.linear.train`) through a
:data:`LinearMethod` that returns a :class:`LinearPlan`, and into the deep trainer
(:mod:`condimmune.deep.trainer`) through a :data:`DeepPenalty` added to the task loss, or
as a closed form on frozen features. Everything here takes tensors and small option
dataclasses, never an experiment config.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from torch import Tensor

__all__ = [
    "DeepFeatureMap",
    "DeepPenalty",
    "DeepSolver",
    "FeatureMap",
    "FeatureMapInputs",
    "LinearMethod",
    "LinearPlan",
    "LinearProblem",
    "MethodOptions",
    "MethodSpec",
    "PenaltyInputs",
]


@dataclass(frozen=True)
class MethodOptions:
    """The hyperparameters any method may read (each reads only its own).

    Linear extractors (Alg. 1): ``benign_weight``/``harmful_weight`` are the fractions
    [0, 1) of the spectral step taken by each preconditioned regularizer step
    (``step_rule``: ``unit`` or ``monotone``), ``benign_ridge``/``harmful_ridge`` the ridges
    of the preconditioners ``(XᵀX + ρI)⁻¹``. Deep nets (Eq. 13): ``benign_weight`` and
    ``harmful_weight`` are λ_P and λ_H of ``CE + λ_P R_well(S_P) + λ_H R_ill(S_H)``.
    """

    benign_weight: float = 0.5
    harmful_weight: float = 0.2
    benign_ridge: float = 1.0
    harmful_ridge: float = 1e-7
    step_rule: str = "unit"
    opt_kappa_weight: float = 1.0
    imma_weight: float = 1.0
    imma_inner_steps: int = 5
    closed_form_ridge: float = 1e-6


@dataclass(frozen=True)
class LinearProblem:
    """The training rows a linear method sees (float64): benign ``X_P, y_P``, harmful
    ``X_H, y_H``."""

    benign_x: Tensor
    benign_y: Tensor
    harmful_x: Tensor
    harmful_y: Tensor


@dataclass
class LinearPlan:
    """How the linear trainer runs a method.

    ``initial_weight``: the extractor ``W`` (k × d) training starts from; with
    ``train_extractor=False`` it stays fixed and only the head trains. Per minibatch the
    trainer adds ``gradient_direction(W)`` to ``∇_W`` of the task loss before the optimizer
    step, then takes ``W ← W − regularizer_step(W)`` and rescales ``W`` to keep the benign
    feature energy (the head absorbs the factor).
    """

    initial_weight: Tensor
    train_extractor: bool
    gradient_direction: Callable[[Tensor], Tensor] | None = None
    regularizer_step: Callable[[Tensor], Tensor] | None = None
    notes: list[str] = field(default_factory=list)


LinearMethod = Callable[[LinearProblem, MethodOptions], LinearPlan]


@dataclass(frozen=True)
class PenaltyInputs:
    """One step's gathered feature batches (float64, normalised if configured).

    ``harmful_on`` is False on steps where the benign guard (Def. 3.1 (b)) asks a method to
    leave its harmful term out. ``harmful_labels``/``harmful_classes`` serve the methods
    that simulate an attacker."""

    benign: Tensor
    harmful: Tensor
    harmful_labels: Tensor | None
    harmful_classes: int
    harmful_on: bool


DeepPenalty = Callable[[PenaltyInputs, MethodOptions], Tensor]


@dataclass(frozen=True)
class FeatureMapInputs:
    """A model's features (float64, ``n × k``) of both tasks' training images (eval
    transforms), and the harmful labels, for a method that computes a feature map."""

    benign: Tensor
    harmful: Tensor
    harmful_labels: Tensor
    harmful_classes: int


@dataclass(frozen=True)
class FeatureMap:
    """A ``k × k`` map ``T`` inserted after the pooled features. ``invertible``: the benign
    head absorbs ``T⁻¹`` exactly (logits unchanged); otherwise the head is refitted by least
    squares to the benign logits it had before (:mod:`condimmune.deep.feature_maps`)."""

    transform: Tensor
    invertible: bool


DeepFeatureMap = Callable[[FeatureMapInputs, MethodOptions], FeatureMap]


class DeepSolver(StrEnum):
    """How a method runs on a deep backbone."""

    PENALTY = "penalty"
    """Iterative: train the last blocks and the head on CE + the method's penalty (then apply
    the method's feature map, if it has one)."""
    CLOSED_FORM = "closed-form"
    """One map on θ0's frozen features (the method's feature map), no training."""


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: its name, what it does, and where it runs.

    ``linear`` is ``None`` when the method has no linear-extractor version; ``deep_solver``
    is ``None`` when it has no deep version, else ``deep_penalty`` is its penalty
    (``DeepSolver.PENALTY``) and ``deep_feature_map`` the map it applies to the features of
    the trained model (``PENALTY``, optional) or of θ0 (``CLOSED_FORM``, required)."""

    name: str
    description: str
    linear: LinearMethod | None
    deep_solver: DeepSolver | None
    deep_penalty: DeepPenalty | None = None
    deep_feature_map: DeepFeatureMap | None = None

    def __post_init__(self) -> None:
        if (self.deep_solver is DeepSolver.PENALTY) != (self.deep_penalty is not None):
            raise ValueError(
                f"method {self.name!r}: a deep penalty goes with deep_solver=PENALTY and only "
                "with it"
            )
        if (self.deep_solver is DeepSolver.CLOSED_FORM) and self.deep_feature_map is None:
            raise ValueError(f"method {self.name!r}: deep_solver=CLOSED_FORM needs a feature map")
        if self.deep_solver is None and self.deep_feature_map is not None:
            raise ValueError(f"method {self.name!r}: a feature map needs a deep solver")

    @property
    def supports_linear(self) -> bool:
        return self.linear is not None

    @property
    def supports_deep(self) -> bool:
        return self.deep_solver is not None
