"""Ames house prices (Kaggle's ``train.csv`` by path): MSZoning ≠ RL → LotArea (benign),
MSZoning = RL → SalePrice (harmful). Preprocessing is fitted on training rows only."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from condimmune.core.errors import ArgumentError, UserError
from condimmune.core.user_files import user_path
from condimmune.linear.tasks import LinearDataOptions, TaskSplit, as_float64

__all__ = ["HOUSE_TARGETS", "house_price_tasks"]


HOUSE_TARGETS = {"benign": "LotArea", "harmful": "SalePrice"}


def _house_csv(root: str | None, key: str) -> Path:
    if root is None:
        raise ArgumentError(
            "house prices need the Ames data: set {root} to Kaggle's 'House Prices' train.csv"
        )
    path = user_path(root, key)
    if path.is_dir():
        path = path / "train.csv"
    if not path.is_file():
        raise UserError(
            "no such file" if not path.exists() else "not a file",
            f"{key}={root} ({path})",
            f"point {key} at Kaggle's train.csv",
        )
    return path


_FIX = "pass Kaggle's 'House Prices' train.csv"


def house_price_tasks(
    cfg: LinearDataOptions, *, key: str = "root"
) -> tuple[TaskSplit, TaskSplit, list[str]]:
    import pandas as pd

    path = _house_csv(cfg.root, key)
    try:
        df = pd.read_csv(path, keep_default_na=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise UserError(f"not a readable CSV file ({reason})", path, _FIX) from None
    required = {"MSZoning", *HOUSE_TARGETS.values()}
    missing = sorted(required - set(df.columns))
    if missing:
        raise UserError(f"lacks column(s) {', '.join(missing)}", path, _FIX)
    notes: list[str] = []
    sets = {"benign": df[df["MSZoning"] != "RL"], "harmful": df[df["MSZoning"] == "RL"]}
    need = cfg.train_rows + cfg.test_rows
    for name, part in sets.items():
        if len(part) < need:
            raise ArgumentError(
                "the {task} set (MSZoning {sign} RL) has {rows} rows, fewer than "
                "{train_rows} + {test_rows} = {need}",
                task=name,
                sign="≠" if name == "benign" else "=",
                rows=len(part),
                need=need,
            )
        target = HOUSE_TARGETS[name]
        values = pd.to_numeric(part[target].iloc[:need], errors="coerce")
        if values.isna().any():
            raise UserError(
                f"target column {target} has {int(values.isna().sum())} missing or non-numeric "
                "value(s) in the rows used",
                path,
                "clean the file",
            )
        if not np.isfinite(values.to_numpy(dtype=np.float64)).all():
            raise UserError(f"target column {target} holds infinite values", path, _FIX)
        if values.iloc[: cfg.train_rows].std() == 0:
            raise UserError(f"target column {target} is constant on the training rows", path, _FIX)
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
    for x in (*x_train.values(), *x_test.values()):
        bad = [f for f, ok in zip(features, np.isfinite(x).all(axis=0), strict=True) if not ok]
        if bad:
            raise UserError(f"column(s) {', '.join(bad[:5])} hold infinite values", path, _FIX)
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
            x_train=as_float64((xtr - mean) / std),
            y_train=as_float64((ytr - ym) / ys),
            x_test=as_float64((xte - mean) / std),
            y_test=as_float64((yte - ym) / ys),
        )
    notes.append(
        f"{len(names)} feature columns (Id and both targets excluded); categoricals label-encoded "
        "on the pooled training rows, numeric NaN → training median, features and target "
        "standardised per set on its training rows"
    )
    return splits["benign"], splits["harmful"], notes
