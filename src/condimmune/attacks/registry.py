"""The one registry of attackers, in two families with a clear split.

* :class:`Attacker` — the **linear suite** (:mod:`condimmune.attacks.attackers`): a linear
  extractor ``W`` attacked on the squared probing loss, raw inputs vs immunized features,
  steps to a relative suboptimality.
* :class:`DeepAttacker` — the **deep suite** (:mod:`condimmune.attacks.deep_suite`): a
  released deep model, θ0 vs θ_I, attacked on the held-out accuracy of a task, each attacker
  with an Optuna hyperparameter search (:mod:`condimmune.attacks.search`). Its table
  :data:`DEEP_ATTACKERS` says what each one trains, on what, and over which search space.

``condimmune attack RUN_DIR`` picks the family from the run directory; ``--attackers``
names members of that family. docs/attacks.md describes every attacker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from condimmune.attacks.probes import AttackerTransform
from condimmune.attacks.search import IntChoice, LogFloat, Param, Uniform

__all__ = [
    "CLOSED_FORM",
    "DEEP_ATTACKERS",
    "PREFIX_ONLY",
    "TRANSFORMED_ATTACKERS",
    "WEIGHT_FREE",
    "Attacker",
    "DeepAttacker",
    "DeepAttackerSpec",
    "DeepFamily",
    "Optimizer",
]


class Attacker(StrEnum):
    """The linear suite's attackers (table in :mod:`condimmune.attacks.attackers`). Names are
    ``<what is trained>-<optimizer>``, as in :class:`DeepAttacker`: ``linear-*`` a head on the
    released features, ``std-*``/``whiten-*`` the same after that :class:`AttackerTransform`,
    ``full-*`` every parameter (extractor and head), ``reinit-*`` a head on a re-initialised
    extractor; an attacker of either suite with the same name does the same thing to its
    family's model (each family with its task loss: squared probing loss here)."""

    LINEAR_GD = "linear-gd"
    LINEAR_GD_TUNED = "linear-gd-tuned"
    LINEAR_MOMENTUM = "linear-momentum"
    LINEAR_ADAM = "linear-adam"
    LINEAR_LBFGS = "linear-lbfgs"
    LINEAR_LSTSQ = "linear-lstsq"
    FULL_SGD = "full-sgd"
    FULL_ADAM = "full-adam"
    REINIT_GD = "reinit-gd"
    STD_GD = "std-gd"
    WHITEN_GD = "whiten-gd"


TRANSFORMED_ATTACKERS: MappingProxyType[Attacker, AttackerTransform] = MappingProxyType(
    {Attacker.STD_GD: AttackerTransform.STANDARDIZE, Attacker.WHITEN_GD: AttackerTransform.WHITEN}
)
"""The GD 1/L attackers that first apply a fixed map to the features (the rescaled attackers
a linear run reports, :mod:`condimmune.experiments.pipelines.linear.metrics`)."""


class DeepAttacker(StrEnum):
    """The deep suite's attackers (:data:`DEEP_ATTACKERS` has what each does)."""

    LINEAR_GD = "linear-gd"
    LINEAR_MOMENTUM = "linear-momentum"
    LINEAR_ADAM = "linear-adam"
    LINEAR_LBFGS = "linear-lbfgs"
    LINEAR_LSTSQ = "linear-lstsq"
    STD_GD = "std-gd"
    STD_MOMENTUM = "std-momentum"
    STD_ADAM = "std-adam"
    STD_LBFGS = "std-lbfgs"
    WHITEN_GD = "whiten-gd"
    WHITEN_MOMENTUM = "whiten-momentum"
    WHITEN_ADAM = "whiten-adam"
    WHITEN_LBFGS = "whiten-lbfgs"
    MLP_ADAM = "mlp-adam"
    SKIP_ADAM = "skip-adam"
    TAP_ADAM = "tap-adam"
    BLOCKS_SGD = "blocks-sgd"
    BLOCKS_ADAM = "blocks-adam"
    BLOCKS_REINIT = "blocks-reinit"
    FULL_ADAM = "full-adam"
    FULL_REINIT = "full-reinit"
    FULL_RECAL_ADAM = "full-recal-adam"
    HEAL_ADAM = "heal-adam"
    RAW_LSTSQ = "raw-lstsq"
    RAW_ADAM = "raw-adam"
    SCRATCH_ADAM = "scratch-adam"


class DeepFamily(StrEnum):
    """What a deep attacker trains, and on which cached inputs."""

    PROBE = "probe"
    """A new head on the released features (cached once per model)."""
    SKIP = "skip"
    """A new head on the activations that enter the immunized blocks (they are skipped)."""
    TAP = "tap"
    """A new head on the pooled activations of every tap of the network, concatenated
    (:attr:`~condimmune.deep.bodies.SplitBody.TAPS`: several depths, the first blocks
    included)."""
    BLOCKS = "blocks"
    """The immunized blocks and a new head, from the cached activations entering them."""
    FULL = "full"
    """Every parameter and a new head, from the images."""
    RAW = "raw"
    """A new head on the raw pixels: reads no released weight (weight-free)."""
    SCRATCH = "scratch"
    """A small CNN and a head trained from scratch on the images (weight-free)."""


class Optimizer(StrEnum):
    GD_1L = "gd-1/L"
    """Squared loss on one-hot targets, full-batch GD with step 1/L (the paper's attacker)."""
    MOMENTUM = "momentum"
    """Cross-entropy, SGD with Nesterov momentum; lr = c / L (L: the squared loss's)."""
    ADAM = "adam"
    """Cross-entropy, AdamW."""
    LBFGS = "lbfgs"
    """Cross-entropy, full-batch L-BFGS with a strong-Wolfe line search."""
    LSTSQ = "lstsq"
    """The ridge least-squares head on one-hot targets, in closed form (one step)."""
    SGD = "sgd"
    """Cross-entropy, minibatch SGD with Nesterov momentum and weight decay."""


_LR_C = LogFloat("lr_c", 1e-2, 1e2)
_MOMENTUM = Uniform("momentum", 0.0, 0.99)
_WD = LogFloat("weight_decay", 1e-8, 1e-2)


@dataclass(frozen=True)
class DeepAttackerSpec:
    """One deep attacker: what it trains, the optimizer, the feature transform, the search
    space, whether it needs a hidden layer, re-initialises the blocks, re-estimates the
    batch-norm statistics on the attacker's data first (``recalibrate``) or fine-tunes the
    network on the benign task first (``heal``), and whether its benign accuracy counts for
    the utility cap (a linear probe on the released features)."""

    description: str
    family: DeepFamily
    optimizer: Optimizer
    space: tuple[Param, ...]
    transform: AttackerTransform = AttackerTransform.NONE
    hidden: bool = False
    reinit: bool = False
    recalibrate: bool = False
    heal: bool = field(default=False, repr=False)
    """Left out of ``repr``, which names the attackers' stored searches: adding this field
    kept the names (and so the stored trials) of every earlier attacker."""
    revision: int = field(default=0, repr=False)
    """Raised when what the attacker trains changes in a way its fields do not show (its
    network, say): a revision above 0 is in its stored searches' names
    (:func:`condimmune.attacks.deep_objective.studies`), so a revised attacker never reads an
    earlier revision's trials, while every other attacker keeps its names."""

    @property
    def linear_probe(self) -> bool:
        return self.family is DeepFamily.PROBE and not self.hidden

    @property
    def weight_free(self) -> bool:
        """Reads no released weight: the same on θ0 and θ_I (the yardstick's ceiling)."""
        if self.family is DeepFamily.FULL:
            return self.reinit  # the whole network re-initialised: its architecture only
        return self.family in (DeepFamily.RAW, DeepFamily.SCRATCH)

    @property
    def prefix_only(self) -> bool:
        """Reads at most the released prefix (the layers before the immunized blocks): the
        weight-free attackers, the skip probe and re-initialised blocks. The cheapest of them
        on θ0 is the prefix ceiling ``C(prefix)``: what a defence that keeps the prefix as
        released can at most make an attack cost."""
        reinit_blocks = self.family is DeepFamily.BLOCKS and self.reinit
        return self.weight_free or self.family is DeepFamily.SKIP or reinit_blocks

    @property
    def trains_network(self) -> bool:
        """Trains a network on minibatches (the fine-tuning budget and trials)."""
        return self.family in (DeepFamily.BLOCKS, DeepFamily.FULL, DeepFamily.SCRATCH)


def _linear(optimizer: Optimizer, transform: AttackerTransform) -> DeepAttackerSpec:
    spaces: dict[Optimizer, tuple[Param, ...]] = {
        Optimizer.GD_1L: (),
        Optimizer.MOMENTUM: (_LR_C, _MOMENTUM),
        Optimizer.ADAM: (LogFloat("lr", 1e-5, 10.0), _WD),
        Optimizer.LBFGS: (LogFloat("lr", 0.05, 1.0),),
        Optimizer.LSTSQ: (LogFloat("ridge", 1e-10, 1.0),),
    }
    where = {
        AttackerTransform.NONE: "on the released features",
        AttackerTransform.STANDARDIZE: "after per-feature standardisation",
        AttackerTransform.WHITEN: "after PCA whitening",
    }[transform]
    return DeepAttackerSpec(
        f"linear head, {optimizer.value}, {where}",
        DeepFamily.PROBE,
        optimizer,
        spaces[optimizer],
        transform,
    )


_NONE, _STD, _WHITEN = (
    AttackerTransform.NONE,
    AttackerTransform.STANDARDIZE,
    AttackerTransform.WHITEN,
)
_ADAM_FT = (LogFloat("lr", 1e-5, 1e-1), _WD)

DEEP_ATTACKERS: MappingProxyType[DeepAttacker, DeepAttackerSpec] = MappingProxyType(
    {
        DeepAttacker.LINEAR_GD: _linear(Optimizer.GD_1L, _NONE),
        DeepAttacker.LINEAR_MOMENTUM: _linear(Optimizer.MOMENTUM, _NONE),
        DeepAttacker.LINEAR_ADAM: _linear(Optimizer.ADAM, _NONE),
        DeepAttacker.LINEAR_LBFGS: _linear(Optimizer.LBFGS, _NONE),
        DeepAttacker.LINEAR_LSTSQ: _linear(Optimizer.LSTSQ, _NONE),
        DeepAttacker.STD_GD: _linear(Optimizer.GD_1L, _STD),
        DeepAttacker.STD_MOMENTUM: _linear(Optimizer.MOMENTUM, _STD),
        DeepAttacker.STD_ADAM: _linear(Optimizer.ADAM, _STD),
        DeepAttacker.STD_LBFGS: _linear(Optimizer.LBFGS, _STD),
        DeepAttacker.WHITEN_GD: _linear(Optimizer.GD_1L, _WHITEN),
        DeepAttacker.WHITEN_MOMENTUM: _linear(Optimizer.MOMENTUM, _WHITEN),
        DeepAttacker.WHITEN_ADAM: _linear(Optimizer.ADAM, _WHITEN),
        DeepAttacker.WHITEN_LBFGS: _linear(Optimizer.LBFGS, _WHITEN),
        DeepAttacker.MLP_ADAM: DeepAttackerSpec(
            "one-hidden-layer MLP head on the released features, AdamW",
            DeepFamily.PROBE,
            Optimizer.ADAM,
            (LogFloat("lr", 1e-5, 1e-1), _WD, IntChoice("hidden", (64, 128, 256))),
            hidden=True,
        ),
        DeepAttacker.SKIP_ADAM: DeepAttackerSpec(
            "linear head on the activations entering the immunized blocks (skips them), AdamW",
            DeepFamily.SKIP,
            Optimizer.ADAM,
            (LogFloat("lr", 1e-5, 1.0), _WD),
        ),
        DeepAttacker.TAP_ADAM: DeepAttackerSpec(
            "linear head on the pooled activations of every tap (each depth of the network), "
            "standardised per feature, AdamW",
            DeepFamily.TAP,
            Optimizer.ADAM,
            (LogFloat("lr", 1e-5, 10.0), _WD),
            _STD,
        ),
        DeepAttacker.BLOCKS_SGD: DeepAttackerSpec(
            "fine-tune the immunized blocks and a new head, SGD with Nesterov momentum",
            DeepFamily.BLOCKS,
            Optimizer.SGD,
            (LogFloat("lr", 1e-4, 1.0), _MOMENTUM, _WD),
        ),
        DeepAttacker.BLOCKS_ADAM: DeepAttackerSpec(
            "fine-tune the immunized blocks and a new head, AdamW",
            DeepFamily.BLOCKS,
            Optimizer.ADAM,
            _ADAM_FT,
        ),
        DeepAttacker.BLOCKS_REINIT: DeepAttackerSpec(
            "re-initialise the immunized blocks (and the feature map) and train them from "
            "scratch with a new head, AdamW",
            DeepFamily.BLOCKS,
            Optimizer.ADAM,
            _ADAM_FT,
            reinit=True,
        ),
        DeepAttacker.FULL_ADAM: DeepAttackerSpec(
            "fine-tune every parameter and a new head from the images, AdamW",
            DeepFamily.FULL,
            Optimizer.ADAM,
            (LogFloat("lr", 1e-6, 1e-2), _WD),
        ),
        DeepAttacker.FULL_REINIT: DeepAttackerSpec(
            "re-initialise every parameter of the network and train it from scratch on the "
            "images with a new head, AdamW (reads the architecture, no weight)",
            DeepFamily.FULL,
            Optimizer.ADAM,
            _ADAM_FT,
            reinit=True,
        ),
        DeepAttacker.FULL_RECAL_ADAM: DeepAttackerSpec(
            "re-estimate every batch-norm statistic on the harmful training images, then "
            "fine-tune every parameter and a new head, AdamW",
            DeepFamily.FULL,
            Optimizer.ADAM,
            (LogFloat("lr", 1e-6, 1e-2), _WD),
            recalibrate=True,
        ),
        DeepAttacker.HEAL_ADAM: DeepAttackerSpec(
            "fine-tune every parameter on the benign task first (AdamW, as many steps as the "
            "attack), then `full-adam` on the harmful task ('heal, then attack')",
            DeepFamily.FULL,
            Optimizer.ADAM,
            (LogFloat("lr", 1e-6, 1e-2), _WD),
            heal=True,
        ),
        DeepAttacker.RAW_LSTSQ: DeepAttackerSpec(
            "ridge least-squares head on the raw pixels, in closed form (reads no weight)",
            DeepFamily.RAW,
            Optimizer.LSTSQ,
            (LogFloat("ridge", 1e-10, 1.0),),
        ),
        DeepAttacker.RAW_ADAM: DeepAttackerSpec(
            "linear head on the raw pixels, AdamW (reads no weight)",
            DeepFamily.RAW,
            Optimizer.ADAM,
            (LogFloat("lr", 1e-5, 10.0), _WD),
        ),
        DeepAttacker.SCRATCH_ADAM: DeepAttackerSpec(
            "a small CNN (two conv layers, each pooled, and a dense layer) trained from "
            "scratch on the images with a new head, AdamW (reads no weight)",
            DeepFamily.SCRATCH,
            Optimizer.ADAM,
            _ADAM_FT,
            revision=1,  # revision 0 pooled globally after 8 × 8 pixels (scratch_network)
        ),
    }
)
"""Every deep attacker, in :class:`DeepAttacker` order."""

WEIGHT_FREE: frozenset[str] = frozenset(a.value for a, s in DEEP_ATTACKERS.items() if s.weight_free)
"""The attackers that read no released weight: the same cost on θ0 and θ_I (the ceiling)."""

PREFIX_ONLY: frozenset[str] = frozenset(a.value for a, s in DEEP_ATTACKERS.items() if s.prefix_only)
"""The attackers whose cheapest cost on θ0 is the prefix ceiling ``C(prefix)``
(:attr:`DeepAttackerSpec.prefix_only`, :func:`condimmune.attacks.yardstick.ceiling`)."""

CLOSED_FORM: frozenset[str] = frozenset(
    a.value for a, s in DEEP_ATTACKERS.items() if s.optimizer is Optimizer.LSTSQ
)
"""The attackers solved in closed form (ridge least squares): more steps cannot change their
result, so an unreached target is settled for them
(:func:`condimmune.attacks.yardstick.stopped_short`)."""
