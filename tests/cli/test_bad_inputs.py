"""Bad input as a new user would give it: every case ends with exit code 2 (1 where
``evaluate`` finds a damaged metrics.json), one ``error:`` line that names the file or key at
fault, no traceback, and nothing on disk but what was there before.

Classes: ``--set`` values and keys, YAML config files, the output location (a file, under a
file, not empty, busy, read-only, full disk; from a real process: the working directory and
places under ``/proc``), MNIST IDX files (kind, gzip vs raw, type, truncation, labels,
shapes), Ames CSV files, damaged run directories for ``evaluate`` and ``attack``,
``attack``/``sweep`` options, ``sweep --resume`` against other runs, and the deep runner's
weights, cached θ0, checkpoints and Lightning settings.
"""

from __future__ import annotations

import errno
import gzip
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from _cli_support import (
    TINY_DEEP,
    TINY_LINEAR,
    error_line,
    house_csv,
    idx,
    invoke,
    lock_held_elsewhere,
    mnist_arrays,
    reseal,
    sets,
    snapshot,
    write_mnist,
)
from safetensors.torch import save_file

from condimmune.experiments.sweep_jobs import write_sweep_marker


@dataclass(frozen=True)
class Case:
    """``args`` and ``names`` may hold ``{tmp}``, ``{out}``, ``{run}``, ``{data}``."""

    args: tuple[str, ...]
    names: tuple[str, ...]
    setup: Callable[[Path], object] | None = None
    code: int = 2
    run: bool = False
    """Copy the finished tiny run to ``{run}`` first."""
    busy: str | None = None
    """A lock file that another process holds while the command runs."""
    patch: Callable[[pytest.MonkeyPatch], None] | None = None


def linear(*extra: str, experiment: str = "digits") -> tuple[str, ...]:
    return ("run", experiment, "--out", "{out}", "--no-progress", *sets(TINY_LINEAR), *extra)


def deep(*extra: str) -> tuple[str, ...]:
    return ("run", "mnist-cnn", "--out", "{out}", "--no-progress", *sets(TINY_DEEP), *extra)


def mnist_pair(*extra: str) -> tuple[str, ...]:
    return linear("--set", "data.root={data}", *extra, experiment="mnist-pair")


def house(*extra: str) -> tuple[str, ...]:
    return (
        "run",
        "house-price",
        "--out",
        "{out}",
        "--no-progress",
        *sets(["train.epochs=1", "data.train_rows=10", "data.test_rows=5"]),
        "--set",
        "data.root={data}",
        *extra,
    )


def write(relative: str, content: str | bytes) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        path = tmp / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)

    return setup


def config_file(content: str | bytes) -> tuple[Callable[[Path], None], tuple[str, ...]]:
    return write("cfg.yaml", content), ("--config", "{tmp}/cfg.yaml")


def mnist(images: bytes | None = None, labels: bytes | None = None, gz: bool = False):
    return lambda tmp: write_mnist(tmp / "data", images, labels, gz=gz)


def gz_images(content: bytes) -> Callable[[Path], None]:
    """Valid raw labels and ``content`` as ``train-images-idx3-ubyte.gz``."""

    def setup(tmp: Path) -> None:
        write("data/train-images-idx3-ubyte.gz", content)(tmp)
        write("data/train-labels-idx1-ubyte", IDX_LABELS)(tmp)

    return setup


def run_file(name: str, change: Callable[[Path], None]) -> Callable[[Path], None]:
    """Change a file of the copied run and re-seal its manifest (so that the checks behind
    the manifest's are what the case reaches; tests/cli/test_run_integrity.py has the
    manifest's own)."""

    def setup(tmp: Path) -> None:
        change(tmp / "run" / name)
        reseal(tmp / "run")

    return setup


def edit_json(change: Callable[[dict], object]) -> Callable[[Path], None]:
    """Change ``metrics.json`` in place (``change`` mutates the parsed document)."""

    def edit(path: Path) -> None:
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data))

    return run_file("metrics.json", edit)


def edit_config(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def edit(path: Path) -> None:
        data = yaml.safe_load(path.read_text())
        change(data)
        path.write_text(yaml.safe_dump(data))

    return run_file("config.yaml", edit)


def tensors(name: str, change: Callable[[dict[str, torch.Tensor]], None]):
    def edit(path: Path) -> None:
        from safetensors.torch import load_file

        data = load_file(path)
        change(data)
        save_file(data, path)

    return run_file(name, edit)


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


def pickled(path: Path) -> None:
    torch.save({"weight": torch.zeros(2, 2)}, path)


X, Y = mnist_arrays()
IDX_IMAGES, IDX_LABELS = idx(X), idx(Y)
IMAGES_FILE, LABELS_FILE = "{data}/train-images-idx3-ubyte", "{data}/train-labels-idx1-ubyte"


def small_cnn_state() -> dict[str, torch.Tensor]:
    from condimmune.deep.backbones import build_model

    model = build_model("small-cnn", num_classes=5, image_size=28, seed=0)
    return {k: v.detach().contiguous() for k, v in model.state_dict().items()}


def weights(kind: str) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        path = tmp / "w.safetensors"
        if kind == "truncated":
            save_file(small_cnn_state(), path)
            truncate(path)
        elif kind == "pickle":
            torch.save(small_cnn_state(), path)
        elif kind == "garbage-pt":
            (tmp / "w.pt").write_bytes(os.urandom(64))
        elif kind == "wrong-keys":
            save_file({"conv.weight": torch.zeros(3)}, path)
        elif kind == "nan":
            state = small_cnn_state()
            state["head.weight"][0, 0] = float("nan")
            save_file(state, path)
        elif kind == "directory":
            path.mkdir()

    return setup


def stale_theta0(tmp: Path) -> None:
    ckpt = tmp / "out.checkpoints"
    ckpt.mkdir()
    save_file(small_cnn_state(), ckpt / "original.safetensors", metadata={"fingerprint": "x"})


def busy_sweep_run(tmp: Path) -> None:
    (tmp / "out").mkdir()


def finished_sweep(change: Callable[[Path], None] | None = None) -> Callable[[Path], None]:
    """A sweep folder whose only job (none, pair 1-7, seed 0) already ran (the tiny run)."""

    def setup(tmp: Path) -> None:
        target = tmp / "out" / "runs" / "condnum" / "1-7" / "seed0"
        shutil.copytree(tmp / "run", target)
        write_sweep_marker(tmp / "out", "digits")
        if change is not None:
            change(target)

    return setup


def sweep(*extra: str) -> tuple[str, ...]:
    return (
        "sweep",
        "digits",
        "--out",
        "{out}",
        "--pairs",
        "1-7",
        "--workers",
        "1",
        "--no-progress",
        *sets(TINY_LINEAR),
        *extra,
    )


def disk_full(monkeypatch: pytest.MonkeyPatch) -> None:
    from safetensors import SafetensorError

    import condimmune.experiments.pipelines.linear.files as runner

    def full(*_args: object, **_kwargs: object) -> None:
        raise SafetensorError(
            "Error while serializing: I/O error: No space left on device (os error 28)"
        )

    monkeypatch.setattr(runner, "save_file", full)


def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """The output location must be refused before any training starts."""
    import condimmune.experiments.pipelines.linear.run as runner

    def train(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("trained before checking --out")

    monkeypatch.setattr(runner, "train_linear", train)


def read_only(monkeypatch: pytest.MonkeyPatch) -> None:
    import condimmune.experiments.rundir as rundir

    def refuse(path: Path, run_dir: Path) -> int:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    monkeypatch.setattr(rundir, "_open_locked", refuse)
    no_training(monkeypatch)


CFG = "{tmp}/cfg.yaml"
cases: dict[str, Case] = {}


def case(name: str, *args: str, names: tuple[str, ...] = (), **kw: object) -> None:
    assert name not in cases, name
    cases[name] = Case(tuple(args), names, **kw)  # type: ignore[arg-type]


# --- --set keys and values ------------------------------------------------------------------
case("set-unknown-key", *linear("--set", "train.speed=3"), names=("train.speed",))
case("set-unknown-section", *linear("--set", "training.epochs=3"), names=("training.epochs",))
case("set-section-as-key", *linear("--set", "train=3"), names=("train",))
case("set-value-as-section", *linear("--set", "seed.x=1"), names=("seed.x",))
case("set-without-equals", *linear("--set", "train.epochs"), names=("train.epochs",))
case("set-experiment", *linear("--set", "experiment=digits"), names=("experiment",))
case("set-int-text", *linear("--set", "train.epochs=abc"), names=("train.epochs",))
case("set-int-fraction", *linear("--set", "train.epochs=1.5"), names=("train.epochs",))
case("set-above-upper-bound", *linear("--set", "train.epochs=100000"), names=("train.epochs",))
case("set-below-lower-bound", *linear("--set", "train.epochs=0"), names=("train.epochs",))
case("set-nan", *linear("--set", "train.lr=nan"), names=("train.lr",))
case("set-inf", *linear("--set", "train.lr=inf"), names=("train.lr",))
case("set-negative-rate", *linear("--set", "train.lr=-1"), names=("train.lr",))
case("set-seed-too-large", *linear("--set", "seed=4294967296"), names=("seed",))
case("set-bool-text", *linear("--set", "data.drop_collinear=maybe"), names=("data.drop_collinear",))
case("set-bad-choice", *linear("--set", "method.step_rule=fast"), names=("method.step_rule",))
case("set-key-not-read", *linear("--set", "data.root=/x"), names=("data.root", "digits"))
case("set-unknown-method", *linear("--set", "train.method=magic"), names=("train.method",))
case("set-same-digits", *linear("--set", "data.harmful_digit=1"), names=("data.harmful_digit",))
case("seed-option-negative", *linear("--seed", "-1"), names=("seed",))
case("unknown-experiment", "run", "mnist", "--out", "{out}", names=("mnist",))
case("set-nul-in-path", *mnist_pair("--set", "data.root=a\x00b"), names=("data.root",))
case(
    "set-unknown-home",
    *linear("--set", "data.root=~no-such-user-4711/mnist", experiment="mnist-pair"),
    names=("data.root",),
)
case("deep-digit-twice", *deep("--set", "data.benign_digits=00"), names=("data.benign_digits",))
case(
    "deep-digit-groups-overlap",
    *deep("--set", "data.benign_digits=0123", "--set", "data.harmful_digits=3456"),
    names=("data.benign_digits", "data.harmful_digits"),
)
case(
    "deep-batch-not-divisible",
    *deep("--set", "train.batch_size=63", "--set", "train.devices=2"),
    names=("train.batch_size", "train.devices"),
)
case("deep-unknown-backbone", *deep("--set", "model.backbone=vgg"), names=("model.backbone",))
case("deep-bad-precision", *deep("--set", "train.precision=fp8"), names=("train.precision",))

# --- YAML config files ------------------------------------------------------------------------
case("config-missing", *linear("--config", "{tmp}/nope.yaml"), names=("{tmp}/nope.yaml",))
case("config-is-a-directory", *linear("--config", "{tmp}"), names=("{tmp}",))
for name, content, key in (
    ("config-unclosed-bracket", "train: [1, 2\n", CFG),
    ("config-tab-indent", "train:\n\tepochs: 2\n", CFG),
    ("config-top-level-list", "- 1\n- 2\n", CFG),
    ("config-not-utf8", b"\xff\xfetrain: 1\n", CFG),
    ("config-unknown-key", "train:\n  warmup: 3\n", "train.warmup"),
    ("config-python-tag", "seed: !!python/object/apply:os.system ['true']\n", CFG),
    ("config-nan", "train:\n  lr: .nan\n", "train.lr"),
    ("config-other-experiment", "experiment: house-price\n", CFG),
    ("config-key-not-read", "data:\n  root: /x\n", "data.root"),
):
    setup, option = config_file(content)
    case(name, *linear(*option), names=(key,), setup=setup)
setup, option = config_file("experiment: mnist-cnn\ndata:\n  benign_digits: 56789\n")
case("config-unquoted-digits", *deep(*option), names=("data.benign_digits",), setup=setup)

# --- the output location ----------------------------------------------------------------------
case(
    "out-under-a-file",
    "run",
    "digits",
    "--out",
    "{tmp}/file/run",
    names=("--out", "{tmp}/file"),
    setup=write("file", "x"),
    patch=no_training,
)
case(
    "out-is-a-file", *linear(), names=("--out", "{out}"), setup=write("out", "x"), patch=no_training
)
case(
    "out-not-empty",
    *linear(),
    names=("--out", "{out}"),
    setup=write("out/x", "x"),
    patch=no_training,
)
case("out-busy", *linear(), names=("{out}",), busy="{tmp}/.out.lock", patch=no_training)
case("out-read-only", *linear(), names=("--out", "{out}"), patch=read_only)
case("out-disk-full", *linear(), names=("{out}", "No space left"), patch=disk_full)

# --- MNIST IDX files (mnist-pair, data.root) --------------------------------------------------
case("idx-root-missing", *mnist_pair(), names=("data.root",))
case("idx-root-is-a-file", *mnist_pair(), names=("data.root",), setup=write("data", "x"))
case("idx-no-files", *mnist_pair(), names=("data.root",), setup=write("data/notes.txt", "x"))
case("idx-bad-magic", *mnist_pair(), names=(IMAGES_FILE,), setup=mnist(b"not an idx file"))
case("idx-empty", *mnist_pair(), names=(IMAGES_FILE,), setup=mnist(b""))
case("idx-truncated", *mnist_pair(), names=(IMAGES_FILE,), setup=mnist(IDX_IMAGES[:-10]))
case("idx-trailing-bytes", *mnist_pair(), names=(IMAGES_FILE,), setup=mnist(IDX_IMAGES + b"x"))
case("idx-swapped", *mnist_pair(), names=(IMAGES_FILE,), setup=mnist(IDX_LABELS, IDX_IMAGES))
case("idx-float-values", *mnist_pair(), names=(IMAGES_FILE,), setup=mnist(idx(X, 0x0D)))
case(
    "idx-gz-name-raw-content",
    *mnist_pair(),
    names=(IMAGES_FILE + ".gz",),
    setup=gz_images(IDX_IMAGES),
)
case(
    "idx-raw-name-gz-content",
    *mnist_pair(),
    names=(IMAGES_FILE,),
    setup=mnist(gzip.compress(IDX_IMAGES)),
)
case(
    "idx-gz-truncated",
    *mnist_pair(),
    names=(IMAGES_FILE + ".gz",),
    setup=gz_images(gzip.compress(IDX_IMAGES)[:-500]),
)
_corrupt = bytearray(gzip.compress(IDX_IMAGES))
_corrupt[len(_corrupt) // 2 : len(_corrupt) // 2 + 16] = bytes(16)
case(
    "idx-gz-corrupt",
    *mnist_pair(),
    names=(IMAGES_FILE + ".gz",),
    setup=gz_images(bytes(_corrupt)),
)
case("idx-count-mismatch", *mnist_pair(), names=(IMAGES_FILE,), setup=mnist(None, idx(Y[:-1])))
case("idx-label-not-a-digit", *mnist_pair(), names=(LABELS_FILE,), setup=mnist(None, idx(Y + 3)))
case("idx-not-square", *mnist_pair(), names=(IMAGES_FILE,), setup=mnist(idx(X[:, :, :27])))
case(
    "idx-huge-header",
    *mnist_pair(),
    names=(IMAGES_FILE,),
    setup=mnist(bytes([0, 0, 8, 3]) + b"\x7f\xff\xff\xff" * 3 + b"\x00" * 16),
)
case(
    "idx-images-is-a-directory",
    *mnist_pair(),
    names=("data.root",),
    setup=lambda tmp: (tmp / "data" / "train-images-idx3-ubyte").mkdir(parents=True),
)

# --- Ames CSV (house-price, data.root) ---------------------------------------------------------
CSV = house_csv()
case("csv-missing", *house(), names=("data.root",))
case("csv-folder-without-train-csv", *house(), names=("data.root",), setup=write("data/x", "x"))
case("csv-binary", *house(), names=("{data}",), setup=write("data", bytes(range(256)) * 2))
case("csv-empty", *house(), names=("{data}",), setup=write("data", ""))
case("csv-missing-columns", *house(), names=("{data}",), setup=write("data", "a,b\n1,2\n"))
ROWS = CSV.splitlines()


def csv_with(row: int, column: int, value: str) -> str:
    """``CSV`` with one cell replaced (row 1 is the first data row)."""
    cells = ROWS[row].split(",")
    cells[column] = value
    return "\n".join([*ROWS[:row], ",".join(cells), *ROWS[row + 1 :]]) + "\n"


case(
    "csv-nan-target",
    *house(),
    names=("SalePrice", "{data}"),
    setup=write("data", csv_with(2, 3, "")),
)
case(
    "csv-inf-target",
    *house(),
    names=("SalePrice", "{data}"),
    setup=write("data", csv_with(2, 3, "inf")),
)
case(
    "csv-inf-feature",
    *house(),
    names=("OverallQual", "{data}"),
    setup=write("data", csv_with(1, 4, "inf")),
)
case(
    "csv-too-few-rows",
    *house("--set", "data.train_rows=50"),
    names=("data.train_rows",),
    setup=write("data", CSV),
)

# --- run directories: evaluate and attack ------------------------------------------------------
evaluate = ("evaluate", "{run}")
case("evaluate-missing-dir", "evaluate", "{tmp}/nothing", names=("{tmp}/nothing",))
case("evaluate-not-a-run", "evaluate", "{tmp}", names=("{tmp}", "missing"))
for name, change, field in (
    ("evaluate-metrics-empty-object", lambda d: d.clear(), "experiment"),
    ("evaluate-metrics-number-as-text", lambda d: d.update(rir=str(d["rir"])), "rir"),
    ("evaluate-metrics-extra-key", lambda d: d.update(bonus=1), "bonus"),
    ("evaluate-metrics-missing-key", lambda d: d.pop("kappa"), "kappa"),
    ("evaluate-metrics-nested-type", lambda d: d["kappa"]["benign"].update(raw=None), "kappa"),
):
    case(name, *evaluate, names=("metrics.json", field), code=1, run=True, setup=edit_json(change))
damage: dict[str, tuple[str, Callable[[Path], None], tuple[str, ...]]] = {
    "metrics-not-json": ("metrics.json", lambda p: p.write_text("{rir: 1"), ()),
    "config-invalid-yaml": ("config.yaml", lambda p: p.write_text("seed: [0\n"), ()),
    "config-a-list": ("config.yaml", lambda p: p.write_text("- 1\n"), ()),
    "data-truncated": ("data.safetensors", truncate, ()),
    "data-empty-file": ("data.safetensors", lambda p: p.write_bytes(b""), ()),
    "extractor-pickle": ("extractor.safetensors", pickled, ()),
}
for name, (file, change, extra) in damage.items():
    case(
        f"evaluate-{name}",
        *evaluate,
        names=(f"{{run}}/{file}", *extra),
        run=True,
        setup=run_file(file, change),
    )
case(
    "evaluate-config-bad-value",
    *evaluate,
    names=("config.yaml", "train.epochs"),
    run=True,
    setup=edit_config(lambda c: c["train"].update(epochs=0)),
)
case(
    "evaluate-head-tensor-missing",
    *evaluate,
    names=("{run}/head.safetensors", "bias"),
    run=True,
    setup=tensors("head.safetensors", lambda t: t.pop("bias")),
)
case(
    "evaluate-data-nan",
    *evaluate,
    names=("{run}/data.safetensors", "benign_x"),
    run=True,
    setup=tensors("data.safetensors", lambda t: t["benign_x"].__setitem__((0, 0), float("nan"))),
)
case(  # a linear run's files are read as numpy arrays, and numpy has no bfloat16
    "evaluate-weight-bfloat16",
    *evaluate,
    names=("{run}/extractor.safetensors", "bfloat16"),
    run=True,
    setup=tensors("extractor.safetensors", lambda t: t.update(weight=t["weight"].bfloat16())),
)
case(
    "evaluate-weight-wrong-shape",
    *evaluate,
    names=("{run}/data.safetensors", "extractor.safetensors", "weight"),
    run=True,
    setup=tensors(
        "extractor.safetensors", lambda t: t.update(weight=t["weight"][:, :3].contiguous())
    ),
)
attack = (
    "attack",
    "{run}",
    "--attackers",
    "linear-gd",
    "--set",
    "attack.suite_budget=5",
    "--no-progress",
)
case(
    "attack-target-out-of-range",
    *attack,
    "--set",
    "attack.target=5",
    names=("attack.target",),
    run=True,
)
case(
    "attack-budget-zero",
    *attack,
    "--set",
    "attack.suite_budget=0",
    names=("attack.suite_budget",),
    run=True,
)
case(
    "attack-budget-huge",
    *attack,
    "--set",
    "attack.suite_budget=1000000000",
    names=("attack.suite_budget",),
    run=True,
)
case(
    "attack-unknown-attacker",
    "attack",
    "{run}",
    "--attackers",
    "linear-gd,magic",
    names=("magic",),
    run=True,
)
case(
    "attack-empty-attackers", *attack[:2], "--attackers", "", names=("attack.attackers",), run=True
)
case("attack-busy-run", *attack, names=("{run}",), run=True, busy="{tmp}/.run.lock")
case(
    "attack-damaged-metrics",
    *attack,
    names=("metrics.json", "rir"),
    run=True,
    setup=edit_json(lambda d: d.pop("rir")),
)
case(
    "attack-a-run-setting",
    *attack,
    "--set",
    "train.epochs=3",
    names=("train.epochs", "attack.*"),
    run=True,
)
case(
    "attack-a-deep-key-on-a-linear-run",
    *attack,
    "--set",
    "attack.trials=5",
    names=("attack.trials", "attack.suite_budget"),
    run=True,
)

# --- sweep ------------------------------------------------------------------------------------
case("sweep-duplicate-seeds", *sweep("--seeds", "0,0"), names=("seeds",))
case("sweep-seeds-not-integers", *sweep("--seeds", "0,a"), names=("--seeds",))
case("sweep-zero-workers", *sweep("--workers", "0"), names=("--workers",))
case("sweep-unknown-method", *sweep("--methods", "magic"), names=("magic",))
case("sweep-duplicate-methods", *sweep("--methods", "none,none"), names=("methods",))
case("sweep-same-digits-pair", *sweep("--pairs", "1-1"), names=("--pairs",))
case("sweep-pairs-garbage", *sweep("--pairs", "x"), names=("--pairs",))
case("sweep-busy", *sweep(), names=("{out}",), busy="{tmp}/.out.lock")
case("sweep-out-not-empty", *sweep(), names=("--out", "--resume"), setup=write("out/x", "x"))
RESUMED = "{out}/runs/condnum/1-7/seed0"
case(
    "sweep-resume-other-config",
    *sweep("--resume", "--set", "train.epochs=2"),
    names=(RESUMED, "train.epochs"),
    run=True,
    setup=finished_sweep(),
)
case(
    "sweep-resume-damaged-metrics",
    *sweep("--resume"),
    names=(f"{RESUMED}/metrics.json",),
    run=True,
    setup=finished_sweep(lambda d: (d / "metrics.json").write_text("[")),
)
case(
    "sweep-resume-config-not-yaml",
    *sweep("--resume"),
    names=(f"{RESUMED}/config.yaml",),
    run=True,
    setup=finished_sweep(lambda d: (d / "config.yaml").write_text("a: [")),
)

# --- deep: weights, θ0 cache, Lightning -------------------------------------------------------
W = "{tmp}/w.safetensors"
case("deep-weights-missing", *deep("--set", f"model.weights={W}"), names=("model.weights",))
for kind in ("truncated", "pickle", "wrong-keys", "nan", "directory"):
    case(
        f"deep-weights-{kind}",
        *deep("--set", f"model.weights={W}"),
        names=("model.weights",),
        setup=weights(kind),
    )
case(
    "deep-weights-garbage-pt",
    *deep("--set", "model.weights={tmp}/w.pt"),
    names=("model.weights",),
    setup=weights("garbage-pt"),
)
case(
    "deep-theta0-of-another-config",
    *deep(),
    names=("{out}.checkpoints/original.safetensors",),
    setup=stale_theta0,
)
case(
    "deep-idx-not-square",
    *deep("--set", "data.root={data}"),
    names=(IMAGES_FILE,),
    setup=mnist(idx(X[:, :, :27])),
)
if not torch.cuda.is_available():
    case(
        "deep-accelerator-missing",
        *deep("--set", "train.accelerator=gpu"),
        names=("train.accelerator",),
    )


def test_the_table_is_large_enough() -> None:
    assert len(cases) >= 60


@pytest.mark.parametrize("bad", cases.values(), ids=cases.keys())
def test_bad_input_is_one_line_naming_the_culprit_and_leaves_nothing(
    bad: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    env = {k: str(tmp_path / k) for k in ("out", "run", "data")} | {"tmp": str(tmp_path)}
    if bad.run:
        shutil.copytree(request.getfixturevalue("tiny_run"), tmp_path / "run")
    if bad.setup is not None:
        bad.setup(tmp_path)
    if bad.patch is not None:
        bad.patch(monkeypatch)
    args = [a.format(**env) for a in bad.args]
    busy = lock_held_elsewhere(Path(bad.busy.format(**env))) if bad.busy else nullcontext()
    with busy:
        before = snapshot(tmp_path)
        result = invoke(*args)
        after = snapshot(tmp_path)
    assert result.exit_code == bad.code, result.output
    assert "Traceback" not in result.output
    line = error_line(result)
    for name in bad.names:
        assert name.format(**env) in line, line
    assert after == before, "the command left files behind or changed them"


# --- the output location, from a real process: its working directory, and /proc --------------
@dataclass(frozen=True)
class OutPlace:
    """``condimmune run digits --out OUT`` started in ``cwd``; ``out``, ``cwd`` and ``names``
    may hold ``{tmp}``."""

    out: str
    cwd: str
    names: tuple[str, ...]
    setup: Callable[[Path], object] | None = None


def folder(relative: str) -> Callable[[Path], None]:
    return lambda tmp: (tmp / relative).mkdir(parents=True)


CURRENT = ("is the current directory", "--out {tmp}/here")
OUT_PLACES = {
    "out-dot-in-an-empty-working-directory": OutPlace(".", "{tmp}/here", CURRENT, folder("here")),
    "out-names-the-working-directory": OutPlace(
        "{tmp}/here", "{tmp}/here", CURRENT, folder("here")
    ),
    "out-dot-in-a-working-directory-with-files": OutPlace(
        ".", "{tmp}/here", CURRENT, write("here/notes.txt", "mine")
    ),
    "out-dot-dot-of-a-subdirectory": OutPlace(
        "..", "{tmp}/here/sub", ("already exists", "--out {tmp}/here"), folder("here/sub")
    ),
    "out-in-proc": OutPlace(
        "/proc/condimmune-out",
        "{tmp}",
        ("cannot create files in /proc:", "--out /proc/condimmune-out"),
    ),
    "out-in-proc-sys": OutPlace(
        "/proc/sys/condimmune-out",
        "{tmp}",
        ("cannot create files in /proc/sys:", "--out /proc/sys/condimmune-out"),
    ),
    "out-under-a-new-folder-in-proc": OutPlace(
        "/proc/condimmune-new/run",
        "{tmp}",
        ("cannot create /proc/condimmune-new", "--out /proc/condimmune-new/run"),
    ),
}


@pytest.mark.skipif(not Path("/proc/sys").is_dir(), reason="needs Linux's /proc")
@pytest.mark.parametrize("place", OUT_PLACES.values(), ids=OUT_PLACES.keys())
def test_an_out_that_is_the_working_directory_or_unwritable_is_refused_by_a_real_process(
    place: OutPlace, tmp_path: Path
) -> None:
    """The command's own process, started in ``cwd``: exit code 2, one line naming the path,
    and the working directory (the same inode, mode and files) and ``/proc`` as they were."""
    if place.setup is not None:
        place.setup(tmp_path)
    tmp = tmp_path.resolve()  # as the command names it
    out, cwd = (Path(p.format(tmp=tmp)) for p in (place.out, place.cwd))
    absolute = (cwd / out).resolve()
    existed = absolute.exists()
    stat = absolute.stat() if existed else None
    before = snapshot(tmp_path)
    command = [str(Path(sys.executable).parent / "condimmune"), "run", "digits", "--out", str(out)]
    result = subprocess.run(
        [*command, "--no-progress", *sets(TINY_LINEAR)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    for name in place.names:
        assert name.format(tmp=tmp) in line, line
    assert snapshot(tmp_path) == before, "the command left files behind or changed them"
    assert absolute.exists() == existed
    if stat is not None:  # the very directory, not a new one renamed into its place
        now = absolute.stat()
        assert (now.st_ino, now.st_mode) == (stat.st_ino, stat.st_mode)
    for proc in (Path("/proc"), Path("/proc/sys")):  # no lock file, no folder
        assert not list(proc.glob("*condimmune-*"))
