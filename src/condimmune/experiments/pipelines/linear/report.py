"""``report.md``, its figures and the printed tables of a linear run."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

from matplotlib.figure import Figure

from condimmune.core.arrays import numpy_view
from condimmune.core.spectral import covariance_eigenvalues, default_rtol
from condimmune.experiments.figures import clamp, plot_spectra, suboptimality_window
from condimmune.experiments.pipelines.linear.run import LinearRun
from condimmune.experiments.records import LinearRunMetrics
from condimmune.experiments.report import (
    FigureSpec,
    ReportPage,
    Table,
    format_number,
    plotted_points,
    save_figure,
)

__all__ = ["headline", "linear_report", "summary_tables"]


def summary_rows(m: LinearRunMetrics) -> list[tuple[str, str, str]]:
    """(quantity, original, immunized) rows shared by the CLI table and report.md; the
    original model is the identity extractor (raw inputs)."""
    bt, attack = m.benign_task, m.attack
    rows: list[tuple[str, object, object]] = [
        ("κ benign (numerical range)", m.kappa.benign.original, m.kappa.benign.immunized),
        ("κ harmful (numerical range)", m.kappa.harmful.original, m.kappa.harmful.immunized),
        (
            "κ benign (paper-compatible)",
            m.kappa_paper_compatible.benign.original,
            m.kappa_paper_compatible.benign.immunized,
        ),
        (
            "κ harmful (paper-compatible)",
            m.kappa_paper_compatible.harmful.original,
            m.kappa_paper_compatible.harmful.immunized,
        ),
        (f"benign task {bt.metric} (held out)", bt.original, bt.immunized),
        (
            f"attack steps to {attack.target:g} (harmful)",
            attack.steps_original,
            attack.steps_immunized,
        ),
        (
            f"attack steps to {attack.target:g} (benign)",
            attack.benign_steps_original,
            attack.benign_steps_immunized,
        ),
    ]
    for name, r in attack.rescaling_attackers.items():
        label = {"std-gd": "standardizes", "whiten-gd": "PCA-whitens"}[name]
        steps = (r.steps_original, r.steps_immunized)
        rows.append((f"harmful steps if attacker {label} first ({name})", *steps))
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
            "harmful attack slowdown (steps immunized / original)",
            format_number(m.attack.harmful_slowdown),
        ),
        (
            "immunized by Def. 3.1 (κ_H ×10, κ_P not larger, loss kept)",
            format_number(m.immunization_check.immunized),
        ),
    ]


def _attack_figure(art: LinearRun, path: Path) -> None:
    """The paper's attacker on both tasks; the y axis on :func:`suboptimality_window`."""
    target = art.plan.options.attack.target
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    for i, name in enumerate(("harmful", "benign")):
        ax = fig.add_subplot(1, 2, i + 1)
        cmp = art.attacks[name]
        sides = [
            ("original: raw inputs", cmp.original, "--"),
            ("immunized features", cmp.immunized, "-"),
        ]
        curves = [plotted_points(res.relative_suboptimality) for _, res, _ in sides]
        window = suboptimality_window((values for _, values in curves), target)
        for (label, res, style), (steps, values) in zip(sides, curves, strict=True):
            text = f"{label} ({res.steps_to_target:,} steps)"
            ax.semilogy(steps, clamp(values, window), style, label=text)
        ax.axhline(target, color="grey", lw=0.8, ls=":", label=f"target {target:g}")
        ax.set_ylim(*window)
        ax.set_title(f"{name} task: GD linear probing, step 1/L")
        ax.set_xlabel("attack step")
        ax.set_ylabel("relative suboptimality (L(w_t) − L*) / (L(w_0) − L*)", fontsize=8)
        ax.legend(fontsize=8, loc="best")
    save_figure(fig, path)


def _spectra_figure(art: LinearRun, path: Path) -> None:
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    tasks = [("benign", art.data.benign.x_train), ("harmful", art.data.harmful.x_train)]
    for i, (name, x) in enumerate(tasks):
        lines = [
            (label, numpy_view(covariance_eigenvalues(feats))[::-1], style)
            for label, feats, style in (
                ("raw XᵀX", x, "--"),
                ("immunized ΦᵀΦ", x @ art.model.weight.mT, "-"),
            )
        ]
        cutoff = default_rtol(x.shape[1], x.dtype)
        plot_spectra(fig.add_subplot(1, 2, i + 1), lines, cutoff, name)
    save_figure(fig, path)


def _training_figure(art: LinearRun, path: Path) -> None:
    h = art.history
    fig = Figure(figsize=(10, 3.5), layout="constrained")
    ax = fig.add_subplot(1, 2, 1)
    epochs = range(1, len(h.task_loss) + 1)
    kappa = art.metrics.kappa
    for task, values, color, raw in (
        ("benign", h.log_kappa_benign, "C0", kappa.benign.original),
        ("harmful", h.log_kappa_harmful, "C1", kappa.harmful.original),
    ):
        # the history holds natural logarithms; decades read more easily
        ax.plot(epochs, [v / math.log(10) for v in values], color=color, label=task)
        ax.axhline(math.log10(raw), color=color, ls="--", lw=0.8, label=f"{task}, raw inputs")
    ax.set_xlabel("epoch")
    ax.set_ylabel("log₁₀ κ of the training features")
    ax.legend(fontsize=8, loc="best")
    ax.set_title("condition numbers during training")
    ax2 = fig.add_subplot(1, 2, 2)
    ax2.plot(epochs, h.task_loss)
    ax2.set_xlabel("epoch")
    loss = "logistic loss" if art.metrics.benign_task.metric == "accuracy" else "squared error"
    ax2.set_ylabel(f"mean training {loss}")
    ax2.set_title("benign task loss")
    save_figure(fig, path)


def summary_tables(m: LinearRunMetrics) -> list[Table]:
    """What ``condimmune run`` prints and ``report.md`` shows first."""
    title = f"{m.experiment} · {m.method} · seed {m.seed}"
    columns = ["quantity", "original (W = I)", "immunized"]
    quantities = Table(columns, [list(r) for r in summary_rows(m)], title)
    return [quantities, Table(["headline", "value"], [list(r) for r in headline(m)])]


def linear_report(art: LinearRun) -> ReportPage:
    """``report.md`` and the figures of a linear run."""
    m = art.metrics
    body = [
        "**Two κ's.** The headline κ takes σ_min as the smallest eigenvalue above "
        "`p·eps·σ_max` (scale-free). The paper-compatible κ follows the reference code "
        "(add 1e-6·I, smallest eigenvalue above 1e-6); on rank-deficient covariances its "
        "σ_min is ≈ 1e-6 whatever the data, so it is a rescaled σ_max.",
        "",
        f"**Bound.** {m.rir_bound.reason}.",
        "",
    ]
    if m.rir_bound.unbounded:
        body += [
            "Because the problem is unbounded, a large RIR here says little: a rank-one "
            "rescaling of a direction the benign data never excites reaches any RIR with the "
            "benign task untouched. Use `data.pca_components` or `data.drop_collinear` for a "
            "well-posed problem (docs/theory.md).",
            "",
        ]
    body += [
        "## Notes",
        "",
        *[f"- {n}" for n in m.notes],
        "",
        f"Wall time {m.wall_seconds:.2f} s (training {m.train_seconds:.2f} s).",
        "",
        "## Plots",
    ]
    return ReportPage(
        title=f"{m.experiment} — {m.method} (seed {m.seed})",
        intro=[art.data.description],
        tables=[
            Table(["headline", "value"], [list(r) for r in headline(m)]),
            Table(
                ["quantity", "original (W = I)", "immunized"],
                [list(r) for r in summary_rows(m)],
            ),
        ],
        body=body,
        figures=[
            FigureSpec("attack_curves.png", partial(_attack_figure, art)),
            FigureSpec("spectra.png", partial(_spectra_figure, art)),
            FigureSpec("training.png", partial(_training_figure, art)),
        ],
    )
