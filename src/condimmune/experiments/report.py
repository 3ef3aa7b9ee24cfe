"""Plots and ``report.md`` for a run directory (matplotlib's object API, no global state)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

from condimmune.core.spectral import covariance_eigenvalues
from condimmune.experiments.artifacts import RunArtifacts
from condimmune.experiments.records import LinearRunMetrics

__all__ = [
    "PLOTTED_POINTS",
    "format_number",
    "headline",
    "plotted_points",
    "save_figure",
    "summary_rows",
    "write_report",
]


def format_number(x: Any) -> str:
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if x != x:
            return "nan"
        if x == 0 or 1e-3 <= abs(x) < 1e5:
            return f"{x:.4g}"
        return f"{x:.3e}"
    return str(x)


def summary_rows(m: LinearRunMetrics) -> list[tuple[str, str, str]]:
    """(quantity, raw, immunized) rows shared by the CLI table and report.md."""
    bt, attack = m.benign_task, m.attack
    rows: list[tuple[str, object, object]] = [
        ("κ benign (numerical range)", m.kappa.benign.raw, m.kappa.benign.immunized),
        ("κ harmful (numerical range)", m.kappa.harmful.raw, m.kappa.harmful.immunized),
        (
            "κ benign (paper-compatible)",
            m.kappa_paper_compatible.benign.raw,
            m.kappa_paper_compatible.benign.immunized,
        ),
        (
            "κ harmful (paper-compatible)",
            m.kappa_paper_compatible.harmful.raw,
            m.kappa_paper_compatible.harmful.immunized,
        ),
        (f"benign task {bt.metric} (held out)", bt.raw, bt.immunized),
        (
            f"attack steps to {attack.target:g} (harmful)",
            attack.steps_raw,
            attack.steps_immunized,
        ),
        (
            f"attack steps to {attack.target:g} (benign)",
            attack.benign_steps_raw,
            attack.benign_steps_immunized,
        ),
    ]
    for name, r in attack.rescaling_attackers.items():
        label = {"standardize": "standardizes", "whiten": "PCA-whitens"}[name]
        rows.append((f"harmful steps if attacker {label} first", r.steps_raw, r.steps_immunized))
    return [(name, format_number(a), format_number(b)) for name, a, b in rows]


def headline(m: LinearRunMetrics) -> list[tuple[str, str]]:
    """(headline, value) rows shared by the CLI table and report.md."""
    bound = m.rir_bound
    bound_text = "unbounded" if bound.unbounded else format_number(bound.value)
    fraction = m.rir_fraction_of_bound
    return [
        ("RIR (numerical range, headline)", format_number(m.rir)),
        ("RIR (paper-compatible)", format_number(m.rir_paper_compatible)),
        (
            "harmful κ ratio (i) / benign κ ratio (ii)",
            f"{format_number(m.harmful_ratio)} / {format_number(m.benign_ratio)}",
        ),
        ("RIR bound over invertible linear extractors", bound_text),
        ("RIR / bound", format_number(fraction) if fraction is not None else "— (unbounded)"),
        (
            "harmful attack slowdown (steps immunized / raw)",
            format_number(m.attack.harmful_slowdown),
        ),
        (
            "immunized by Def. 3.1 (κ_H ×10, κ_P not larger, loss kept)",
            format_number(m.immunization_check.immunized),
        ),
    ]


def save_figure(fig: Figure, path: Path) -> None:
    """Render ``fig`` to ``path`` (PNG) without touching pyplot's global state."""
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110)


PLOTTED_POINTS = 2000
"""A curve is drawn through at most this many of its points (evenly spaced, the last one
always kept): a 2-inch-wide axis shows no more, and drawing 10⁵-step attack curves point by
point was half of the default run's report time."""


def plotted_points(curve: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, values)`` of a 1-d curve indexed by step, thinned to ``PLOTTED_POINTS``."""
    n = curve.numel()
    steps = np.unique(np.linspace(0, n - 1, min(n, PLOTTED_POINTS)).round().astype(np.int64))
    return steps, curve.detach().cpu().numpy()[steps]


def _attack_figure(art: RunArtifacts, path: Path) -> None:
    target = art.config.attack.target
    fig = Figure(figsize=(10, 3.8))
    for i, name in enumerate(("harmful", "benign")):
        ax = fig.add_subplot(1, 2, i + 1)
        cmp = art.attacks[name]
        for label, res, style in (
            ("raw inputs", cmp.raw, "--"),
            ("immunized features", cmp.immunized, "-"),
        ):
            steps, curve = plotted_points(res.relative_suboptimality.clamp_min(1e-300))
            ax.semilogy(steps, curve, style, label=f"{label} ({res.steps_to_target:,} steps)")
        ax.axhline(target, color="grey", lw=0.8, ls=":")
        ax.set_title(f"{name} task: GD linear probing, step 1/L")
        ax.set_xlabel("attack step")
        ax.set_ylabel("(L(w_t) − L*) / (L(w_0) − L*)")
        ax.legend(fontsize=8, loc="upper right")
    save_figure(fig, path)


def _spectra_figure(art: RunArtifacts, path: Path) -> None:
    fig = Figure(figsize=(10, 3.8))
    tasks = [("benign", art.data.benign.x_train), ("harmful", art.data.harmful.x_train)]
    for i, (name, x) in enumerate(tasks):
        ax = fig.add_subplot(1, 2, i + 1)
        for label, feats, style in (
            ("raw XᵀX", x, "--"),
            ("immunized ΦᵀΦ", x @ art.model.weight.mT, "-"),
        ):
            lam = covariance_eigenvalues(feats).flip(0)
            lam = lam / lam[0]
            ax.semilogy(
                torch.arange(1, lam.numel() + 1).numpy(),
                lam.clamp_min(1e-18).numpy(),
                style,
                label=label,
            )
        ax.set_title(f"{name}: eigenvalues / σ_max")
        ax.set_xlabel("index")
        ax.legend(fontsize=8, loc="upper right")
    save_figure(fig, path)


def _training_figure(art: RunArtifacts, path: Path) -> None:
    h = art.history
    fig = Figure(figsize=(10, 3.5))
    ax = fig.add_subplot(1, 2, 1)
    epochs = range(1, len(h.task_loss) + 1)
    kappa = art.metrics.kappa
    for task, values, color, raw in (
        ("benign", h.log_kappa_benign, "C0", kappa.benign.raw),
        ("harmful", h.log_kappa_harmful, "C1", kappa.harmful.raw),
    ):
        ax.plot(epochs, values, color=color, label=f"log κ {task}")
        ax.axhline(math.log(raw), color=color, ls="--", lw=0.8, label=f"log κ {task}, raw")
    ax.set_xlabel("epoch")
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title("condition numbers during training")
    ax2 = fig.add_subplot(1, 2, 2)
    ax2.plot(epochs, h.task_loss)
    ax2.set_xlabel("epoch")
    ax2.set_title("benign task loss")
    save_figure(fig, path)


def write_report(directory: Path, art: RunArtifacts) -> None:
    """Write the PNG plots and ``report.md`` into ``directory``."""
    m = art.metrics
    _attack_figure(art, directory / "attack_curves.png")
    _spectra_figure(art, directory / "spectra.png")
    _training_figure(art, directory / "training.png")
    lines = [
        f"# {m.experiment} — {m.method} (seed {m.seed})",
        "",
        art.data.description,
        "",
        "| headline | value |",
        "|---|---|",
        *[f"| {a} | {b} |" for a, b in headline(m)],
        "",
        "| quantity | raw | immunized |",
        "|---|---|---|",
        *[f"| {a} | {b} | {c} |" for a, b, c in summary_rows(m)],
        "",
        "**Two κ's.** The headline κ takes σ_min as the smallest eigenvalue above "
        "`p·eps·σ_max` (scale-free). The paper-compatible κ follows the reference code "
        "(add 1e-6·I, smallest eigenvalue above 1e-6); on rank-deficient covariances its "
        "σ_min is ≈ 1e-6 whatever the data, so it is a rescaled σ_max.",
        "",
        f"**Bound.** {m.rir_bound.reason}.",
        "",
    ]
    if m.rir_bound.unbounded:
        lines += [
            "Because the problem is unbounded, a large RIR here says little: a rank-one "
            "rescaling of a direction the benign data never excites reaches any RIR with the "
            "benign task untouched. Use `data.pca_components` or `data.drop_collinear` for a "
            "well-posed problem (docs/theory.md).",
            "",
        ]
    lines += [
        "## Notes",
        "",
        *[f"- {n}" for n in m.notes],
        "",
        f"Wall time {m.wall_seconds:.2f} s (training {m.train_seconds:.2f} s).",
        "",
        "## Plots",
        "",
        "![attack curves](attack_curves.png)",
        "",
        "![spectra](spectra.png)",
        "",
        "![training](training.png)",
        "",
    ]
    (directory / "report.md").write_text("\n".join(lines))
