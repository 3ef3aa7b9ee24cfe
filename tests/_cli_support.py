"""Helpers of the command-line robustness tests: tiny configs, invoking the CLI, snapshots of
a directory tree, bad data files, and a lock held by another process."""

from __future__ import annotations

import gzip
import json
import struct
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import yaml
from typer.testing import CliRunner, Result

from condimmune.cli import app
from condimmune.experiments.manifest import MANIFEST, seal_run_dir
from condimmune.experiments.plan import fingerprint

TINY_LINEAR = [
    "train.epochs=1",
    "data.per_class=20",
    "data.test_per_class=5",
    "attack.budget=50",
]
"""A digits / mnist-pair run of a few seconds."""

TINY_DEEP = [
    "train.pretrain_epochs=1",
    "train.epochs=1",
    "train.batch_size=16",
    "train.checkpoint_every=1",
    "data.train_per_class=8",
    "data.test_per_class=4",
    "eval.groups=2",
    "eval.group_size=8",
    "eval.probe_steps=5",
    "eval.attack_budget=10",
]
"""A mnist-cnn run of a few seconds."""

QUICK_ATTACK = [
    "attack.trials=2",
    "attack.finetune_trials=1",
    "attack.probe_steps=4",
    "attack.finetune_steps=2",
    "attack.finetune_eval_every=1",
    "attack.batch_size=16",
]
"""Every deep attacker once, in seconds (the numbers mean nothing at this size)."""

TIMING_KEYS = frozenset({"wall_seconds", "train_seconds", "prefix_seconds", "resumed_from_step"})
"""Fields that differ between an interrupted-and-resumed and an uninterrupted run."""


def without(document: object, keys: frozenset[str]) -> object:
    """A JSON document with every field named in ``keys`` left out, at any depth."""
    if isinstance(document, dict):
        return {k: without(v, keys) for k, v in document.items() if k not in keys}
    if isinstance(document, list):
        return [without(v, keys) for v in document]
    return document


def sets(items: list[str]) -> list[str]:
    return [x for item in items for x in ("--set", item)]


def invoke(*args: object) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args])


def error_line(result: Result) -> str:
    """The one ``error:`` line of a failed command (whitespace collapsed)."""
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    return " ".join(lines[0].split())


def reseal(run_dir: Path) -> None:
    """Rewrite ``run_dir``'s manifest for its files as they are now: a directory whose files
    belong together but are bad, for the checks behind the manifest's."""
    try:
        raw = yaml.safe_load((run_dir / "config.yaml").read_text())
        raw.pop("versions", None)
        recipe = fingerprint(raw)
    except (yaml.YAMLError, AttributeError, TypeError):  # a config the test made unreadable
        recipe = json.loads((run_dir / MANIFEST).read_text())["recipe"]
    seal_run_dir(run_dir, recipe, unsealed=("attack_studies.db*",))


def snapshot(root: Path) -> dict[str, tuple[int, int] | None]:
    """Every path under ``root``: (size, mtime) of files, ``None`` for directories."""
    out: dict[str, tuple[int, int] | None] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_dir() and not path.is_symlink():
            out[rel] = None
        else:
            stat = path.lstat()
            out[rel] = (stat.st_size, stat.st_mtime_ns)
    return out


def leftovers(root: Path) -> list[str]:
    """Temporary files/directories or lock files anywhere under ``root``."""
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob(".*")
        if ".tmp" in p.name or p.name.endswith(".lock")
    )


# ----------------------------------------------------------------------------- data files
def idx(array: np.ndarray, type_code: int = 0x08) -> bytes:
    """An IDX file of ``array`` (unsigned bytes unless ``type_code`` says otherwise)."""
    header = struct.pack(">BBBB", 0, 0, type_code, array.ndim)
    header += b"".join(struct.pack(">I", n) for n in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def mnist_arrays(n_per_digit: int = 30, side: int = 28) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), n_per_digit)
    images = rng.integers(0, 256, size=(labels.size, side, side))
    return images, labels


def write_mnist(
    root: Path, images: bytes | None = None, labels: bytes | None = None, *, gz: bool = False
) -> Path:
    """A folder with the two MNIST training IDX files (valid ones unless given)."""
    x, y = mnist_arrays()
    root.mkdir(parents=True, exist_ok=True)
    for stem, data in (
        ("train-images-idx3-ubyte", idx(x) if images is None else images),
        ("train-labels-idx1-ubyte", idx(y) if labels is None else labels),
    ):
        if gz:
            (root / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (root / stem).write_bytes(data)
    return root


def house_csv(rows_per_zone: int = 20) -> str:
    """A small stand-in for Kaggle's Ames ``train.csv`` (the columns the loader reads)."""
    rng = np.random.default_rng(0)
    lines = ["Id,MSZoning,LotArea,SalePrice,OverallQual,Street"]
    for i in range(2 * rows_per_zone):
        zone = "RL" if i % 2 else "RM"
        lines.append(
            f"{i + 1},{zone},{rng.integers(2000, 20000)},{rng.integers(50_000, 500_000)},"
            f"{rng.integers(1, 10)},{'Pave' if rng.random() < 0.7 else 'Grvl'}"
        )
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------ another process
@contextmanager
def lock_held_elsewhere(lock: Path) -> Iterator[None]:
    """Another process holds an exclusive ``flock`` on ``lock`` while the block runs."""
    code = (
        "import fcntl, os, sys\n"
        f"fd = os.open({str(lock)!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('locked', flush=True)\n"
        "sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        yield
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)
