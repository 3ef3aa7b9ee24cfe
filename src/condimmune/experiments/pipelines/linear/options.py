"""The linear family's part of a run plan: data, training and attack options, typed."""

from __future__ import annotations

from dataclasses import dataclass

from condimmune.attacks.registry import Attacker
from condimmune.experiments.config import ExperimentConfig
from condimmune.experiments.registry import Experiment
from condimmune.linear.tasks import LinearDataOptions, LinearSource, TaskKind
from condimmune.linear.train import LinearTrainOptions
from condimmune.methods.base import ConfiguredMethod

__all__ = ["LinearAttackOptions", "LinearRunOptions", "linear_run_options"]

_SOURCES = {
    Experiment.MNIST_PAIR: LinearSource.MNIST,
    Experiment.DIGITS: LinearSource.DIGITS,
    Experiment.HOUSE_PRICE: LinearSource.HOUSE_PRICE,
}


@dataclass(frozen=True)
class LinearAttackOptions:
    """The paper's attacker at run time (GD 1/L to relative suboptimality ``target``, its
    curve ``budget`` steps long) and the suite of ``condimmune attack`` (``attackers``,
    ``suite_budget`` steps each, the same ``target``, where each stops unless
    ``full_curves``)."""

    target: float
    budget: int
    attackers: tuple[Attacker, ...]
    suite_budget: int
    full_curves: bool = False


@dataclass(frozen=True)
class LinearRunOptions:
    """Where the rows come from and how they are prepared, how the extractor trains (with
    the method), and how it is attacked."""

    source: LinearSource
    data: LinearDataOptions
    train: LinearTrainOptions
    attack: LinearAttackOptions

    @property
    def kind(self) -> TaskKind:
        """House prices are a regression, the digit tasks classifications."""
        if self.source is LinearSource.HOUSE_PRICE:
            return TaskKind.REGRESSION
        return TaskKind.CLASSIFICATION


def linear_run_options(config: ExperimentConfig, method: ConfiguredMethod) -> LinearRunOptions:
    """The typed options of a linear experiment's validated config."""
    d, t, a = config.data, config.train, config.attack
    attackers = (
        tuple(Attacker)
        if a.attackers == "all"
        else tuple(Attacker(n) for n in a.attackers.split(","))
    )
    return LinearRunOptions(
        source=_SOURCES[Experiment(config.experiment)],
        data=LinearDataOptions(
            root=d.root,
            benign_digit=d.benign_digit,
            harmful_digit=d.harmful_digit,
            per_class=d.per_class,
            test_per_class=d.test_per_class,
            train_rows=d.train_rows,
            test_rows=d.test_rows,
            pca_components=d.pca_components,
            drop_collinear=d.drop_collinear,
        ),
        train=LinearTrainOptions(method=method, epochs=t.epochs, batch_size=t.batch_size, lr=t.lr),
        attack=LinearAttackOptions(
            target=a.target,
            budget=a.budget,
            attackers=attackers,
            suite_budget=a.suite_budget,
            full_curves=a.full_curves,
        ),
    )
