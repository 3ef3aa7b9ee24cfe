"""The report figures: what each must show, checked on the Figure objects (captured at the
one save helper), and the figures under docs/figures, checked against the commands the docs
name for them.

A docs figure is compared with what its command writes by the digest that
:func:`~condimmune.experiments.report.save_figure` embeds in every PNG
(:func:`~condimmune.experiments.report.figure_digest`: data rounded to 6 significant digits,
texts, limits, colours and ``FIGURE_STYLE``), not by pixels, which change with the
matplotlib version, the fonts and the CPU (docs/architecture.md, "Figures")."""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from _cli_support import invoke
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

import condimmune.experiments.attack_matrix as attack_matrix
import condimmune.experiments.pipelines.deep.attack_report as deep_attack_report
import condimmune.experiments.pipelines.deep.report as deep_report
import condimmune.experiments.pipelines.linear.attack as linear_attack
import condimmune.experiments.pipelines.linear.heatmap as linear_heatmap
from condimmune.attacks.registry import Attacker
from condimmune.experiments.config import apply_overrides, config_to_dict, default_config
from condimmune.experiments.figures import (
    EXCLUDED_GREY,
    HeatCell,
    clamp,
    draw_factor_heat_map,
    factor_text,
    suboptimality_window,
)
from condimmune.experiments.report import figure_digest, read_figure_digest, save_figure
from condimmune.experiments.sweep_rows import SweepRow

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
MATRICES = {
    name: DOCS / "data" / "attack-matrix" / folder
    for name, folder in (
        ("mobilenet", "mobilenet-fashion-mnist"),
        ("mnist-cnn-defence", "mnist-cnn-defence"),
        ("mnist-cnn-cluttered", "mnist-cnn-cluttered"),
        ("mnist-cnn-few-labels", "mnist-cnn-few-labels"),
    )
}
"""The kept attack matrices whose figures the docs show: command name → kept runs."""
RAW_SWEEP = DOCS / "data" / "raw-pixel-sweep"
PCA_SWEEP = DOCS / "data" / "pca-sweep"
RAW_METHODS = ("closed-form", "condnum", "imma", "opt-kappa", "r-ill-only")

COMMANDS = {
    **{
        name: (
            "attacks.md",
            f"condimmune attack-matrix docs/data/attack-matrix/{path.name} --out REPORT",
        )
        for name, path in MATRICES.items()
    },
    "raw-pixel-sweep": (
        "results-linear.md",
        "condimmune sweep-table docs/data/raw-pixel-sweep/*.csv --out DIR",
    ),
    "pca-sweep": (
        "results-linear.md",
        "condimmune sweep-table docs/data/pca-sweep/sweep.csv --out DIR",
    ),
}
"""The commands the docs name for their figures, by the page that names them."""

REGENERATED = {
    "attack_matrix_mobilenet.png": ("mobilenet", "attack_matrix.png"),
    "attack_matrix_mobilenet_curves.png": ("mobilenet", "attack_matrix_curves.png"),
    "attack_matrix_mnist_cnn_defence.png": ("mnist-cnn-defence", "attack_matrix.png"),
    "attack_matrix_mnist_cnn_cluttered.png": ("mnist-cnn-cluttered", "attack_matrix.png"),
    "attack_matrix_mnist_cnn_cluttered_curves.png": (
        "mnist-cnn-cluttered",
        "attack_matrix_curves.png",
    ),
    "attack_matrix_mnist_cnn_few_labels.png": ("mnist-cnn-few-labels", "attack_matrix.png"),
    "attack_matrix_mnist_cnn_few_labels_curves.png": (
        "mnist-cnn-few-labels",
        "attack_matrix_curves.png",
    ),
    "attack_matrix_mnist_cnn_defence_curves.png": (
        "mnist-cnn-defence",
        "attack_matrix_curves.png",
    ),
    **{f"heatmap_raw_{m}.png": ("raw-pixel-sweep", f"heatmap_{m}.png") for m in RAW_METHODS},
    **{f"heatmap_{m}.png": ("pca-sweep", f"heatmap_{m}.png") for m in RAW_METHODS},
}
"""docs/figures file → (the command of :data:`COMMANDS` that writes it, under which name)."""

NOT_REPRODUCIBLE: dict[str, str] = {}
"""docs/figures files whose inputs are not in the repository: what is missing (none now: a
figure whose runs are not kept in docs/data is not shown)."""


def _captured(monkeypatch: pytest.MonkeyPatch, module: Any) -> list[Figure]:
    """The figures ``module`` saves from now on (not written)."""
    figures: list[Figure] = []
    monkeypatch.setattr(module, "save_figure", lambda fig, path: figures.append(fig))
    return figures


# --- docs/figures --------------------------------------------------------------------------


def test_every_docs_figure_is_shown_and_either_checked_or_explained() -> None:
    shown = {
        name
        for page in [*DOCS.glob("*.md"), ROOT / "README.md"]
        for name in re.findall(r"figures/([\w.-]+\.png)", page.read_text(encoding="utf-8"))
    }
    files = {p.name for p in (DOCS / "figures").glob("*.png")}
    assert shown == files
    assert files == set(REGENERATED) | set(NOT_REPRODUCIBLE)
    assert not set(REGENERATED) & set(NOT_REPRODUCIBLE)
    for page, command in COMMANDS.values():
        assert command in (DOCS / page).read_text(encoding="utf-8"), (page, command)


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each command of :data:`COMMANDS`, run on the committed inputs: its output folder."""
    root = tmp_path_factory.mktemp("docs-figures")
    outputs = {name: root / name for name in COMMANDS}
    for name, runs in MATRICES.items():
        result = invoke("attack-matrix", runs, "--out", outputs[name])
        assert result.exit_code == 0, result.output
    sweeps = sorted(RAW_SWEEP.glob("*.csv"))
    result = invoke("sweep-table", *sweeps, "--out", outputs["raw-pixel-sweep"])
    assert result.exit_code == 0, result.output
    result = invoke("sweep-table", PCA_SWEEP / "sweep.csv", "--out", outputs["pca-sweep"])
    assert result.exit_code == 0, result.output
    return outputs


@pytest.mark.parametrize("name", sorted(REGENERATED))
def test_docs_figure_is_what_its_command_writes(name: str, regenerated: dict[str, Path]) -> None:
    command, written = REGENERATED[name]
    expected = read_figure_digest(regenerated[command] / written)
    assert expected is not None
    assert read_figure_digest(DOCS / "figures" / name) == expected, (
        f"docs/figures/{name} is stale: run `{COMMANDS[command][1]}` and copy its {written}"
    )


# --- the save helper and the digest --------------------------------------------------------


def _line_figure(values: list[float]) -> Figure:
    fig = Figure(figsize=(3, 2))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1, 2], values, label="curve")
    ax.set_ylabel("a long label that a fixed bounding box would clip on the left")
    return fig


def test_the_digest_is_what_is_drawn_not_the_last_bits(tmp_path: Path) -> None:
    base = figure_digest(_line_figure([1.0, 0.5, 0.25]))
    assert figure_digest(_line_figure([1.0, 0.5, 0.25 * (1 + 1e-12)])) == base
    assert figure_digest(_line_figure([1.0, 0.5, 0.26])) != base
    retitled = _line_figure([1.0, 0.5, 0.25])
    retitled.axes[0].set_title("another title")
    assert figure_digest(retitled) != base
    fig = _line_figure([1.0, 0.5, 0.25])
    save_figure(fig, tmp_path / "a.png")
    assert read_figure_digest(tmp_path / "a.png") == base
    Figure().savefig(tmp_path / "bare.png", format="png")
    assert read_figure_digest(tmp_path / "bare.png") is None


def test_saved_figures_keep_their_labels_inside_the_image(tmp_path: Path) -> None:
    """A tight bounding box: the label that sticks out of the 3-inch canvas widens it."""
    from PIL import Image

    save_figure(_line_figure([1.0, 0.5, 0.25]), tmp_path / "a.png")
    with Image.open(tmp_path / "a.png") as image:
        width, height = image.size
    assert width > 3 * 110 or height > 2 * 110


# --- relative-suboptimality curves ---------------------------------------------------------


def test_the_window_reaches_three_decades_below_the_target() -> None:
    curves = [np.array([1.0, 1e-2, 1e-18, 0.0]), np.array([1.0, 40.0, np.nan])]
    assert suboptimality_window(curves, 1e-3) == (pytest.approx(1e-6), 80.0)
    assert suboptimality_window([np.array([1.0, 1e13])], 1e-3)[1] == 2e3
    clipped = clamp(np.array([1e-315, 0.5, np.nan, 1e9]), (1e-6, 2e3))
    assert clipped[:2].tolist() == [1e-6, 0.5] and math.isnan(clipped[2]) and clipped[3] == 2e3


def _outcome(curve: list[float], steps: int | None) -> SimpleNamespace:
    return SimpleNamespace(curve=torch.tensor(curve, dtype=torch.float64), steps_to_target=steps)


def test_linear_attack_panels_show_the_target_region_with_labels(monkeypatch) -> None:
    figures = _captured(monkeypatch, linear_attack)
    noise = [1.0, 1e-2, 1e-9, 3e-18, 0.0, 2e-18]
    entry = SimpleNamespace(
        **{
            f"{task}_{side}": _outcome(noise if side == "original" else [1.0, 0.5, 0.1], 3)
            for task in ("harmful", "benign")
            for side in ("original", "immunized")
        }
    )
    entries = {Attacker.LINEAR_GD: entry, Attacker.LINEAR_LSTSQ: entry}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no layout warning reaches the user
        linear_attack._task_figure(SimpleNamespace(entries=entries, target=1e-3), "harmful", Path())
    (fig,) = figures
    for ax in fig.axes:
        assert ax.get_ylim()[0] == pytest.approx(1e-6) and ax.get_xlabel() == "attack step"
    assert fig.axes[0].get_ylabel() == "relative suboptimality"


def test_deep_attack_curves_do_not_fall_to_the_denormal_floor(monkeypatch) -> None:
    figures = _captured(monkeypatch, deep_report)

    def result(values: list[float], steps: int) -> SimpleNamespace:
        return SimpleNamespace(
            relative_suboptimality=torch.tensor(values, dtype=torch.float64),
            steps_to_target=steps,
        )

    probe = SimpleNamespace(accuracy=torch.tensor([0.2, 0.5]), setting="adam lr=0.01")
    curves = SimpleNamespace(
        gd=(result([1.0, 0.9, 0.8], 10**9), result([1.0, 0.95, 0.9], 10**9)),
        gd_whitened=(result([1.0, 0.0, 1e-315], 1), result([1.0, 0.0, 0.0], 1)),
        probe={"original": probe, "immunized": probe},
    )
    deep_report._attack_figure(curves, 1e-3, Path())
    left, right = figures[0].axes
    assert left.get_ylim() == (pytest.approx(1e-6), pytest.approx(2.0))
    assert left.get_ylabel() and right.get_ylabel() == "held-out top-1 accuracy"


# --- factors: bars and heat maps -----------------------------------------------------------


def test_slowdown_bars_grow_from_one_and_the_figure_says_what_it_shows(monkeypatch) -> None:
    figures = _captured(monkeypatch, deep_attack_report)
    harmful = {"a": (3.0, True), "b": (0.25, True), "c": (51.0, False)}
    suite = SimpleNamespace(
        attackers={
            n: SimpleNamespace(harmful=SimpleNamespace(slowdown=v, reached=r))
            for n, (v, r) in harmful.items()
        }
    )
    metrics = SimpleNamespace(method="condnum", experiment="mnist-cnn", seed=0)
    deep_attack_report._slowdown_figure(metrics, suite, Path())
    (ax,) = figures[0].axes
    bars = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert [(b.get_x(), b.get_x() + b.get_width()) for b in bars] == [
        (1, 3.0),
        (1, 0.25),
        (1, 51.0),
    ]
    assert [bool(b.get_hatch()) for b in bars] == [False, False, True]  # c: a lower bound
    assert "condnum" in ax.get_title() and "mnist-cnn" in ax.get_title()
    assert ax.get_xlim()[0] < 0.25 and ax.get_xlim()[1] > 51
    assert "≥51×" in [t.get_text() for t in ax.texts]


def test_heat_map_cells_tell_bounds_exclusions_and_values_apart() -> None:
    fig = Figure()
    ax = fig.add_subplot(1, 1, 1)
    cells = [
        [HeatCell(51.0, "≥51", lower_bound=True), HeatCell(1.0, "1")],
        [HeatCell(0.01, "0.01"), HeatCell(300.0, "300", excluded=True)],
    ]
    draw_factor_heat_map(fig, ax, cells, bound=2.0, quantity="q", excluded="fails the cap")
    texts = {t.get_text(): t for t in ax.texts}
    assert set(texts) == {"≥51", "1", "0.01", "300"}
    assert texts["≥51"].get_color() == "white" and texts["1"].get_color() == "black"
    assert texts["0.01"].get_color() == "white"  # darkest blue
    patches = ax.patches
    assert [p.get_xy() for p in patches if p.get_hatch()] == [(-0.5, -0.5)]
    greyed = [p for p in patches if not p.get_hatch()]
    assert [p.get_xy() for p in greyed] == [(0.5, 0.5)]
    assert greyed[0].get_facecolor()[:3] == pytest.approx((float(EXCLUDED_GREY),) * 3)
    (image,) = ax.images
    assert image.get_clim() == (-2.0, 2.0)  # centred at 1× = log 0
    assert image.get_array().mask[1, 1]  # the excluded value does not colour its cell
    labels = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert labels == ["≥ lower bound", "fails the cap"]


def test_factor_text_is_compact() -> None:
    assert [factor_text(v) for v in (2100.0, 340.0, 0.00209, 1e4)] == [
        "2.1e3",
        "340",
        "0.00209",
        "1e4",
    ]
    assert factor_text(51.0, True, "×") == "≥51×"


def _row(arm: str, pair: tuple[int, int], rir: float, drop: float, run_dir: Path) -> SweepRow:
    values = {
        "benign": pair[0],
        "harmful": pair[1],
        "rir": rir,
        "bound": math.inf,
        "benign_metric": "accuracy",
        "benign_original": 0.95,
        "benign_immunized": 0.95 - drop,
    }
    return SweepRow("mnist-pair", arm, 0, values, str(run_dir))


def test_linear_heat_maps_share_one_scale_show_values_and_name_their_inputs(
    monkeypatch, tmp_path: Path
) -> None:
    figures = _captured(monkeypatch, linear_heatmap)
    run = tmp_path / "run"
    run.mkdir()
    config = apply_overrides(default_config("mnist-pair"), ["data.pca_components=0"])
    (run / "config.yaml").write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
    pairs = [(1, 7), (2, 3), (0, 9)]
    rows = [_row("condnum", p, r, 0.0, run) for p, r in zip(pairs, (54.0, 2.0, 0.5), strict=True)]
    rows += [_row("closed-form", p, 400.0, 0.2, tmp_path / "gone") for p in pairs]
    specs = linear_heatmap.heat_maps(rows, ["condnum", "closed-form"])
    assert [s.name for s in specs] == ["heatmap_condnum.png", "heatmap_closed-form.png"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for spec in specs:
            spec.draw(Path())
    mine, closed = (fig.axes[0] for fig in figures)
    # the closed form's 400 fails the utility cap: grey, not the top of the shared scale
    bound = math.log10(54)
    assert mine.images[0].get_clim() == closed.images[0].get_clim()
    assert mine.images[0].get_clim() == (pytest.approx(-bound), pytest.approx(bound))
    assert {t.get_text() for t in mine.texts} == {"54", "2", "0.5"}
    assert [tick.get_text() for tick in mine.get_xticklabels()] == ["3", "7", "9"]
    assert mine.get_xlabel().startswith("harmful digit")
    # from the rows alone: a run directory's config.yaml (condnum's) does not change it
    assert "rank-deficient inputs (RIR unbounded)" in mine.get_title()
    assert "rank-deficient inputs (RIR unbounded)" in closed.get_title()
    assert len([p for p in closed.patches if not p.get_hatch()]) == 3


def test_attack_matrix_greys_methods_that_fail_the_utility_cap(monkeypatch, tmp_path) -> None:
    figures = _captured(monkeypatch, attack_matrix)
    attack_matrix.write_attack_matrix([MATRICES["mobilenet"]], tmp_path / "out")
    heat = figures[0].axes[0]
    ticks = [t.get_text() for t in heat.get_xticklabels()]
    failing = [k for k, t in enumerate(ticks) if "fails cap" in t]
    assert [ticks[k].split("\n")[0] for k in failing] == ["closed-form", "opt-kappa"]
    grey = {round(p.get_x() + 0.5) for p in heat.patches if not p.get_hatch()}
    assert grey == set(failing)
    assert heat.get_xlabel() == "immunization method" and heat.get_ylabel() == "attacker"
