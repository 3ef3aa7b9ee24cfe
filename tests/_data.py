"""Data that a fresh clone cannot have, and the one rule for the tests that need it.

A test that reads such data says so with ``@pytest.mark.needs(NAME, ...)`` (NAME a key of
:data:`LOCAL_DATA`). conftest.py then turns missing data into a skip whose reason names the
command that provides it, or, when the environment variable ``CI`` is set, into a failure:
CI installs everything (.ci/run), and a broken install must not hide behind skips.

``CONDIMMUNE_TEST_HIDE_DATA=fashion-mnist,mobilenet-weights,ames`` (or ``all``) simulates a
clone without them on a machine that has them: the named data count as missing here, and
conftest.py points the library's own look-ups at nothing, so a test that needs them without
saying so fails instead of quietly reading them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from condimmune.core.errors import UserError
from condimmune.deep import pretrained
from condimmune.experiments.pipelines.deep import data as deep_data

HIDE_VARIABLE = "CONDIMMUNE_TEST_HIDE_DATA"

AMES_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "ames-house-prices"
"""The workspace's copy of the Ames data (``../shared`` next to the clone)."""

_FASHION_FILES = tuple(
    f"{split}-{kind}"
    for split in ("train", "t10k")
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte")
)


def in_ci() -> bool:
    """Whether ``CI`` is set (``CI=true`` on the usual services; ``0``/``false`` = unset)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false")


def fashion_mnist_root() -> Path:
    """Where the library looks for Fashion-MNIST when ``data.root`` is unset (read at call
    time: hiding moves it)."""
    return Path(deep_data.FASHION_MNIST_ROOT)


def _fashion_mnist_missing() -> str | None:
    root = fashion_mnist_root()
    gone = [f for f in _FASHION_FILES if not any((root / n).is_file() for n in (f, f"{f}.gz"))]
    return f"{len(gone)} of 4 IDX files missing from {root}" if gone else None


def _weights_missing() -> str | None:
    try:
        pretrained.MOBILENET_V2_IMAGENET.locate()
    except UserError:
        return f"no {pretrained.MOBILENET_V2_IMAGENET.name} in a package on sys.path"
    return None


def _files_missing(*names: str) -> Callable[[], str | None]:
    def missing() -> str | None:
        gone = [n for n in names if not (AMES_DIR / n).is_file()]
        return f"{', '.join(gone)} in {AMES_DIR}" if gone else None

    return missing


def _hide_fashion_mnist(mp: pytest.MonkeyPatch, scratch: Path) -> None:
    mp.setattr(deep_data, "FASHION_MNIST_ROOT", str(scratch / "no-fashion-mnist"))


def _hide_weights(mp: pytest.MonkeyPatch, scratch: Path) -> None:
    """An empty package of the same name ahead on sys.path: the library's ``find_spec``
    finds it, and no weights file in it (as after ``pip uninstall``)."""
    shadow = scratch / "shadow" / pretrained.MOBILENET_V2_IMAGENET.package
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("")
    mp.syspath_prepend(str(shadow.parent))


@dataclass(frozen=True)
class LocalData:
    what: str
    provide: str
    """The command (or step) that provides the data, quoted in the skip reason."""
    missing: Callable[[], str | None]
    """What is missing and where it was looked for; None when present."""
    hide: Callable[[pytest.MonkeyPatch, Path], None] | None = None
    """Makes the library's own look-up fail (None: the library never looks it up itself)."""
    absent: str = "not installed"


_KAGGLE = "kaggle competitions download -c house-prices-advanced-regression-techniques"
LOCAL_DATA = {
    "fashion-mnist": LocalData(
        "Fashion-MNIST",
        deep_data.INSTALL_FASHION_MNIST,
        _fashion_mnist_missing,
        _hide_fashion_mnist,
    ),
    "mobilenet-weights": LocalData(
        "MobileNetV2 ImageNet weights",
        pretrained.MOBILENET_V2_IMAGENET.install,
        _weights_missing,
        _hide_weights,
    ),
    "ames": LocalData(
        "Ames house prices",
        f"{_KAGGLE}, then unzip its train.csv into {AMES_DIR}",
        _files_missing("train.csv"),
        absent="not found",
    ),
    "ames-reference-splits": LocalData(
        "the reference code's Ames splits",
        f"copy the paper's reference D1.csv and D2.csv into {AMES_DIR}",
        _files_missing("D1.csv", "D2.csv"),
        absent="not found",
    ),
}


def hidden() -> frozenset[str]:
    """The names listed in :data:`HIDE_VARIABLE` (``all``: every one)."""
    names = {n.strip() for n in os.environ.get(HIDE_VARIABLE, "").split(",") if n.strip()}
    if "all" in names:
        return frozenset(LOCAL_DATA)
    unknown = names - LOCAL_DATA.keys()
    if unknown:
        raise pytest.UsageError(
            f"{HIDE_VARIABLE}: unknown {sorted(unknown)}; known: {list(LOCAL_DATA)}"
        )
    return frozenset(names)


def hide(mp: pytest.MonkeyPatch, scratch: Path) -> None:
    """Point the library's look-ups of the :func:`hidden` data at nothing."""
    for name in sorted(hidden()):
        hide_one = LOCAL_DATA[name].hide
        if hide_one is not None:
            hide_one(mp, scratch / name)


def missing_reason(name: str) -> str | None:
    """The skip reason when ``name`` is missing (``what not installed (where): how``), else None."""
    if name not in LOCAL_DATA:
        raise pytest.UsageError(f"@pytest.mark.needs({name!r}): known data are {list(LOCAL_DATA)}")
    data = LOCAL_DATA[name]
    where = f"hidden by {HIDE_VARIABLE}" if name in hidden() else data.missing()
    return None if where is None else f"{data.what} {data.absent} ({where}): {data.provide}"


def require(*names: str) -> None:
    """Skip the running test when data it needs is missing; fail it instead under CI."""
    for name in names:
        reason = missing_reason(name)
        if reason is None:
            continue
        if in_ci():
            pytest.fail(f"{reason} [CI is set, where a missing-data skip fails]", pytrace=False)
        pytest.skip(reason)
