"""What a method is: its spec, its own options, and the hooks the trainers call.

A method has a linear version (:class:`LinearVersion`: a :data:`LinearHook` that returns a
:class:`LinearPlan` for the linear trainer, :mod:`condimmune.linear.train`), a deep version
(:class:`DeepVersion`: a :data:`DeepPenalty` added to the task loss of
:mod:`condimmune.deep.trainer`, and/or a :data:`DeepFeatureMap` on frozen features), or both.
Each version declares its hyperparameters as its own :class:`MethodOptions` model (pydantic):
the config's ``method`` section is validated against it, and its hooks receive an instance.
A :class:`ConfiguredMethod` is a method with its options, resolved once; below it nothing
looks a method up by name again. Everything here takes tensors and small option objects,
never an experiment config.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from pydantic import ValidationError

from condimmune.methods.options import (
    Float,
    MethodOptions,
    NoOptions,
    OptionValue,
    method_label,
)

if TYPE_CHECKING:  # the CLI's --help imports ModelFamily through the experiment registry
    import torch
    from torch import Tensor, nn

__all__ = [
    "ConfiguredMethod",
    "DeepFeatureMap",
    "DeepPenalty",
    "DeepSolver",
    "DeepVersion",
    "FeatureMap",
    "FeatureMapInputs",
    "Float",
    "LinearHook",
    "LinearPlan",
    "LinearProblem",
    "LinearVersion",
    "MethodOptions",
    "MethodSpec",
    "ModelFamily",
    "NoOptions",
    "OptionValue",
    "PenaltyInputs",
    "WholeNetworkObjective",
    "method_label",
    "require_configured",
]


class ModelFamily(StrEnum):
    """The two kinds of model a method can immunize (and an experiment runs)."""

    LINEAR = "linear"
    """A linear extractor ``W`` (k × d) on raw inputs, trained with its benign head."""
    DEEP = "deep"
    """A deep backbone: its trained blocks and head, or a map on its frozen features."""


OptionsT = TypeVar("OptionsT", bound=MethodOptions)


@dataclass(frozen=True)
class LinearProblem:
    """The training rows a linear method sees (float64): benign ``X_P, y_P``, harmful
    ``X_H, y_H``, all four numpy arrays (the linear pipeline's, which never imports torch) or
    all four torch tensors (:data:`condimmune.core.arrays.Array`); a hook answers in the
    backend it was given. ``shared_rows``: the trainer's exact-rank reductions of ``X_P``
    and ``X_H`` (:class:`~condimmune.core.rows.SharedReduction`), for a method's regularizer
    step to use instead of reducing the same rows again."""

    benign_x: Any
    benign_y: Any
    harmful_x: Any
    harmful_y: Any
    shared_rows: tuple[Any, Any] = (None, None)


@dataclass
class LinearPlan:
    """How the linear trainer runs a method.

    ``initial_weight``: the extractor ``W`` (k × d) training starts from; with
    ``train_extractor=False`` it stays fixed and only the head trains. Per minibatch the
    trainer adds ``gradient_direction(W)`` to ``∇_W`` of the task loss before the optimizer
    step, then takes ``W ← W − regularizer_step(W)`` and rescales ``W`` to keep the benign
    feature energy (the head absorbs the factor). Every array is in the problem's backend.
    """

    initial_weight: Any
    train_extractor: bool
    gradient_direction: Callable[[Any], Any] | None = None
    regularizer_step: Callable[[Any], Any] | None = None
    notes: list[str] = field(default_factory=list)


LinearHook = Callable[[LinearProblem, OptionsT], LinearPlan]
"""A method's linear version: the plan for the training rows, given its options."""


@dataclass(frozen=True)
class PenaltyInputs:
    """One step's gathered feature batches (float64, normalised if configured).

    ``harmful_on`` is False on steps where the benign guard (Def. 3.1 (b): the benign batch
    κ is above θ0's first batch κ) asks a method to leave its harmful term out; a method may
    ignore it. ``harmful_labels``/``harmful_classes`` serve the methods that simulate an
    attacker."""

    benign: Tensor
    harmful: Tensor
    harmful_labels: Tensor | None
    harmful_classes: int
    harmful_on: bool


DeepPenalty = Callable[[PenaltyInputs, OptionsT], "Tensor"]


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


DeepFeatureMap = Callable[[FeatureMapInputs, OptionsT], FeatureMap]


class WholeNetworkObjective(Protocol):
    """What a ``WHOLE_NETWORK`` method tells its loop (:mod:`condimmune.deep.whole_network`)
    at each step; the method builds it from its options, so the loop reads none of them."""

    def tap_terms(
        self, taps: list[Tensor], original: list[Tensor], harmful_labels: Tensor, benign_rows: int
    ) -> tuple[Tensor, float]:
        """The terms on the taps' outputs of one mixed batch, as recorded (not pooled;
        benign rows first; ``original``: θ0's benign taps), and a number to record (e.g. the
        tap adversaries' mean error)."""

    def simulates_at(self, step: int) -> bool:
        """Whether step ``step`` (from 0) simulates an attack."""

    def simulated_attack(
        self,
        model: nn.Module,
        feature_dim: int,
        fit: tuple[Tensor, Tensor],
        held_out: Tensor,
        generator: torch.Generator,
    ) -> tuple[dict[str, Tensor], float]:
        """The suppression's first-order gradient per parameter name after a simulated attack
        on ``model`` (left unchanged), already weighted, and the weighted suppression."""

    def checks_at(self, step: int) -> bool:
        """Whether the guard checks after ``step`` steps."""

    def rolls_back(self, original_accuracy: float, accuracy: float) -> bool:
        """Whether the guard rolls back at this benign accuracy."""


class DeepSolver(StrEnum):
    """How a method runs on a deep backbone."""

    PENALTY = "penalty"
    """Iterative: train the last blocks and the head on CE + the method's penalty (then apply
    the method's feature map, if it has one)."""
    CLOSED_FORM = "closed-form"
    """One map on θ0's frozen features (the method's feature map), no training."""
    WHOLE_NETWORK = "whole-network"
    """Iterative on every parameter from the input, with the method's own loop
    (:mod:`condimmune.deep.whole_network`; the ``full-depth`` method's options)."""


@dataclass(frozen=True)
class LinearVersion(Generic[OptionsT]):
    """A method on a linear extractor: its options model and the plan hook."""

    options: type[OptionsT]
    plan: LinearHook[OptionsT]


@dataclass(frozen=True)
class DeepVersion(Generic[OptionsT]):
    """A method on a deep backbone: its options model, the solver, the penalty (with
    ``PENALTY`` and only with it) and the feature map it applies to the features of the
    trained model (``PENALTY``, optional) or of θ0 (``CLOSED_FORM``, required);
    ``WHOLE_NETWORK`` takes neither but its ``objective`` (options and the harmful task's
    class count → :class:`WholeNetworkObjective`)."""

    options: type[OptionsT]
    solver: DeepSolver
    penalty: DeepPenalty[OptionsT] | None = None
    feature_map: DeepFeatureMap[OptionsT] | None = None
    objective: Callable[[OptionsT, int], WholeNetworkObjective] | None = None

    def __post_init__(self) -> None:
        if (self.solver is DeepSolver.PENALTY) != (self.penalty is not None):
            raise ValueError("a deep penalty goes with solver=PENALTY and only with it")
        if self.solver is DeepSolver.CLOSED_FORM and self.feature_map is None:
            raise ValueError("solver=CLOSED_FORM needs a feature map")
        if (self.solver is DeepSolver.WHOLE_NETWORK) != (self.objective is not None):
            raise ValueError("an objective goes with solver=WHOLE_NETWORK and only with it")
        if self.solver is DeepSolver.WHOLE_NETWORK and self.feature_map is not None:
            raise ValueError("solver=WHOLE_NETWORK takes no feature map")


def _options_class(value: object, what: str) -> None:
    if not (isinstance(value, type) and issubclass(value, MethodOptions)):
        raise TypeError(f"{what} must be a MethodOptions subclass, got {value!r}")


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: its name, what it does, and its versions (``None``: the method
    does not run on that family)."""

    name: str
    description: str
    linear: LinearVersion[Any] | None = None
    deep: DeepVersion[Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"a method's name must be a non-empty str, got {self.name!r}")
        if self.linear is None and self.deep is None:
            raise ValueError(f"method {self.name!r} has neither a linear nor a deep version")
        for version, what in ((self.linear, "linear"), (self.deep, "deep")):
            if version is not None:
                _options_class(version.options, f"method {self.name!r}: {what}.options")

    @property
    def supports_linear(self) -> bool:
        return self.linear is not None

    @property
    def supports_deep(self) -> bool:
        return self.deep is not None

    def supports(self, family: ModelFamily) -> bool:
        return self.options_model(family) is not None

    def options_model(self, family: ModelFamily) -> type[MethodOptions] | None:
        """The options model of this method on ``family`` (``None``: no such version)."""
        version = self.linear if family is ModelFamily.LINEAR else self.deep
        return None if version is None else version.options

    def configure(
        self, family: ModelFamily | str, options: MethodOptions | Mapping[str, Any] | None = None
    ) -> ConfiguredMethod:
        """This method on ``family`` with ``options`` (an instance of its options model, or a
        mapping validated against it; ``None``: its defaults). An option the model does not
        declare, a value of the wrong type or out of range is a ``ValueError`` naming it."""
        family = ModelFamily(family)
        model = self.options_model(family)
        if model is None:
            raise ValueError(f"method {self.name!r} has no {family.value} version")
        if options is None:
            options = {}
        if isinstance(options, MethodOptions):
            if type(options) is not model:
                raise TypeError(
                    f"method {self.name!r} ({family.value}) takes {model.__name__}, got "
                    f"{type(options).__name__}"
                )
            return ConfiguredMethod(self, family, options)
        if not isinstance(options, Mapping):
            raise TypeError(f"options must be a mapping or {model.__name__}, got {options!r}")
        try:
            return ConfiguredMethod(self, family, model.model_validate(dict(options)))
        except ValidationError as exc:
            first = exc.errors()[0]
            key = ".".join(str(p) for p in first["loc"]) or "options"
            raise ValueError(
                f"method {self.name!r} option {key}: {first['msg']} (got {first['input']!r})"
            ) from None


@dataclass(frozen=True)
class ConfiguredMethod:
    """A method on one family with its options: what the trainers and evaluators take."""

    spec: MethodSpec
    family: ModelFamily
    options: MethodOptions

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def linear(self) -> LinearVersion[Any]:
        if self.spec.linear is None or self.family is not ModelFamily.LINEAR:
            raise ValueError(f"method {self.name!r} is configured for {self.family.value} models")
        return self.spec.linear

    @property
    def deep(self) -> DeepVersion[Any]:
        if self.spec.deep is None or self.family is not ModelFamily.DEEP:
            raise ValueError(f"method {self.name!r} is configured for {self.family.value} models")
        return self.spec.deep

    def plan(self, problem: LinearProblem) -> LinearPlan:
        """The linear version's plan for ``problem``."""
        return self.linear.plan(problem, self.options)

    def changed_options(self, baseline: Mapping[str, Any] | None = None) -> dict[str, OptionValue]:
        """The options that differ from the method's defaults, or from ``baseline`` (an
        experiment's own defaults for this method) where given: what ``metrics.json``
        records as ``method_options``, so that two variants of a method are never combined."""
        reference = type(self.options).model_validate(dict(baseline or {}))
        mine: dict[str, OptionValue] = self.options.model_dump(mode="json")
        theirs = reference.model_dump(mode="json")
        return {k: v for k, v in mine.items() if v != theirs[k]}


def require_configured(method: object, family: ModelFamily) -> None:
    """Refuse anything but a :class:`ConfiguredMethod` for ``family`` (a bare name, say)."""
    if not isinstance(method, ConfiguredMethod) or method.family is not family:
        raise TypeError(
            f"method must be a ConfiguredMethod for {family.value} models, e.g. "
            f"configure_method('condnum', '{family.value}'); got {method!r}"
        )
