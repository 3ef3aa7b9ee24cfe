"""The two tasks of a linear experiment: where their rows come from and how they are held."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "LinearDataOptions",
    "LinearSource",
    "LinearTaskData",
    "TaskKind",
    "TaskSplit",
    "as_float64",
]


class LinearSource(StrEnum):
    """Where a linear experiment's rows come from."""

    MNIST = "mnist"
    DIGITS = "digits"
    HOUSE_PRICE = "house-price"


@dataclass(frozen=True)
class LinearDataOptions:
    """Which rows and how they are preprocessed (fitted on training rows only).

    ``root``: local MNIST IDX folder or Ames ``train.csv`` (``None``: the packaged MNIST
    subset). ``pca_components``: project both tasks on the top principal components of
    their pooled training rows (0 = raw inputs). ``drop_collinear``: drop columns that are
    exact linear combinations of others. See ``docs/theory.md``.
    """

    root: str | None = None
    benign_digit: int = 1
    harmful_digit: int = 7
    per_class: int = 300
    test_per_class: int = 100
    train_rows: int = 200
    test_rows: int = 100
    pca_components: int = 0
    drop_collinear: bool = False


class TaskKind(StrEnum):
    CLASSIFICATION = "classification"
    REGRESSION = "regression"


@dataclass(frozen=True)
class TaskSplit:
    """Training and held-out rows of one task (y is 0/1 or a standardised target): float64
    numpy arrays from the loaders, so that a linear run never imports torch. The trainer and
    the metrics take CPU float64 tensors here too (the Python API's), untyped."""

    x_train: NDArray[np.float64]
    y_train: NDArray[np.float64]
    x_test: NDArray[np.float64]
    y_test: NDArray[np.float64]


@dataclass(frozen=True)
class LinearTaskData:
    benign: TaskSplit
    harmful: TaskSplit
    kind: TaskKind
    description: str
    notes: list[str] = field(default_factory=list)

    @property
    def dim(self) -> int:
        return int(self.benign.x_train.shape[1])


def as_float64(a: NDArray[np.generic]) -> NDArray[np.float64]:
    """A C-contiguous float64 array of ``a`` (no copy when it already is one)."""
    return np.ascontiguousarray(a, dtype=np.float64)
