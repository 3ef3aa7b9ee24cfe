"""``report.md``, its figures (attack curves, spectra, training) and the printed table of a
deep run."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

from matplotlib.figure import Figure

from condimmune.core.spectral import default_rtol
from condimmune.experiments.figures import clamp, plot_spectra, suboptimality_window
from condimmune.experiments.pipelines.deep.evaluation import DeepCurves
from condimmune.experiments.pipelines.deep.run import DeepRun
from condimmune.experiments.records import (
    DeepRunMetrics,
    GdPairRecord,
    GroupRatioPair,
    ProbeCurveRecord,
)
from condimmune.experiments.report import (
    FigureSpec,
    ReportPage,
    Table,
    format_number,
    plotted_points,
    save_figure,
)

__all__ = ["deep_headline", "deep_report", "deep_summary"]


def _steps(entry: GdPairRecord | ProbeCurveRecord) -> str:
    before, after = entry.steps_original, entry.steps_immunized
    return f"{format_number(before)} → {format_number(after)} ({entry.slowdown:.2f}×)"


def _paper_protocol(entry: GroupRatioPair | None) -> str:
    if entry is None:
        return "— (fewer than 100 samples)"
    h, p = entry.honest, entry.paper_compatible
    return f"{format_number(h.rir_mean)} / {format_number(p.rir_mean)}"


def deep_headline(m: DeepRunMetrics) -> list[tuple[str, str]]:
    """(quantity, value) rows shared by the CLI and report.md."""
    r, p = m.rir_theta0.honest, m.rir_theta0.paper_compatible
    acc = m.benign_accuracy
    gd, probe = m.attack.gd, m.attack.linear_probe
    rows = [
        (
            "RIR_θ0, honest κ (mean ± std over groups)",
            f"{format_number(r.rir_mean)} ± {format_number(r.rir_std)}",
        ),
        (
            "  (i) harmful κ ratio / (ii) benign κ ratio",
            f"{format_number(r.harmful_ratio_mean)} / {format_number(r.benign_ratio_mean)}",
        ),
        (
            "RIR_θ0, paper-compatible κ (1e-6 ridge)",
            f"{format_number(p.rir_mean)} ± {format_number(p.rir_std)}",
        ),
        (
            "RIR_θ0, paper's protocol (20 groups × 100): honest / paper-compatible",
            _paper_protocol(m.rir_theta0_paper_protocol),
        ),
        (
            "benign top-1 accuracy, original → immunized",
            f"{acc.original:.4f} → {acc.immunized:.4f}",
        ),
        (
            "GD 1/L probe on harmful features: steps θ0 → θ_I",
            _steps(gd),
        ),
        (
            "softmax probe: steps to 95 % of θ0's best accuracy",
            _steps(probe),
        ),
        (
            "softmax probe: final harmful top-1, θ0 → θ_I",
            f"{probe.final_accuracy_original:.4f} → {probe.final_accuracy_immunized:.4f}",
        ),
        ("GD after PCA whitening: slowdown", f"{m.attack.gd_whitened.slowdown:.2f}×"),
    ]
    if m.benign_probe is not None:
        b = m.benign_probe
        rows.insert(
            5,
            (
                "benign linear probe (fresh softmax head) top-1, θ0 → θ_I",
                f"{b.original:.4f} → {b.immunized:.4f}",
            ),
        )
    return rows


def _attack_figure(curves: DeepCurves, target: float, path: Path) -> None:
    """The paper's attackers (left; y axis on :func:`suboptimality_window`) and the softmax
    probe (right) on the harmful features of θ0 and θ_I."""
    fig = Figure(figsize=(11, 3.8), layout="constrained")
    ax = fig.add_subplot(1, 2, 1)
    drawn = [
        (res, plotted_points(res.relative_suboptimality), f"{who}, {label}", color + style)
        for pair, label, style in (
            (curves.gd, "GD 1/L", "-"),
            (curves.gd_whitened, "whitened", ":"),
        )
        for res, who, color in zip(pair, ("θ0", "θ_I"), ("C0", "C3"), strict=True)
    ]
    window = suboptimality_window((values for _, (_, values), _, _ in drawn), target)
    for res, (steps, values), label, style in drawn:
        ax.semilogy(steps, clamp(values, window), style, label=f"{label} ({res.steps_to_target:,})")
    ax.axhline(target, color="grey", lw=0.8, ls=":", label=f"target {target:g}")
    ax.set_ylim(*window)
    ax.set_title("harmful task: linear probing (squared loss)")
    ax.set_xlabel("attack step")
    ax.set_ylabel("relative suboptimality (L(w_t) − L*) / (L(w_0) − L*)", fontsize=8)
    ax.legend(fontsize=7, title="steps to the target", title_fontsize=7)
    ax2 = fig.add_subplot(1, 2, 2)
    for name, color in (("original", "C0"), ("immunized", "C3")):
        probe = curves.probe[name]
        ax2.plot(
            probe.accuracy.numpy(),
            color=color,
            label=f"{'θ0' if name == 'original' else 'θ_I'} ({probe.setting})",
        )
    ax2.set_title("harmful task: softmax probe (Fig. 3)")
    ax2.set_xlabel("full-batch Adam step")
    ax2.set_ylabel("held-out top-1 accuracy")
    ax2.legend(fontsize=8)
    save_figure(fig, path)


def _spectra_figure(curves: DeepCurves, features: int, path: Path) -> None:
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    for i, task in enumerate(("benign", "harmful")):
        spectra = curves.spectra[task]
        lines = [
            (f"{who}: one group's ΦᵀΦ", spectra[name].numpy(), style)
            for name, who, style in (("original", "θ0", "--"), ("immunized", "θ_I", "-"))
        ]
        cutoff = default_rtol(features, spectra["original"].dtype)
        plot_spectra(fig.add_subplot(1, 2, i + 1), lines, cutoff, task)
    save_figure(fig, path)


def _training_figure(art: DeepRun, path: Path) -> None:
    h = art.history
    fig = Figure(figsize=(11, 3.6), layout="constrained")
    ax = fig.add_subplot(1, 2, 1)
    steps = range(1, h.global_step + 1)
    # the history holds natural logarithms; decades read more easily
    for values, color, task in (
        (h.log_kappa_benign, "C0", "benign"),
        (h.log_kappa_harmful, "C3", "harmful"),
    ):
        ax.plot(steps, [v / math.log(10) for v in values], color=color, label=f"{task} batch")
    ax.set_xlabel("immunization step")
    ax.set_ylabel("log₁₀ κ of the batch features")
    ax.set_title("batch condition numbers (gathered global batch)")
    ax.legend(fontsize=8)
    ax2 = fig.add_subplot(1, 2, 2)
    pre = art.curves.pretrain_loss
    if pre:
        ax2.plot(range(1, len(pre) + 1), pre, color="grey", label="pre-training θ0")
    ax2.plot(
        range(len(pre) + 1, len(pre) + h.global_step + 1),
        h.task_loss,
        color="C2",
        label="immunization",
    )
    ax2.set_xlabel("training step (pre-training, then immunization)")
    ax2.set_ylabel("benign cross-entropy (batch)")
    ax2.set_title("benign task loss")
    ax2.legend(fontsize=8)
    save_figure(fig, path)


def deep_summary(m: DeepRunMetrics) -> list[Table]:
    """What ``condimmune run`` and ``evaluate`` print for a deep run."""
    title = f"{m.experiment} · {m.method} · seed {m.seed}"
    return [Table(["quantity", "value"], [list(r) for r in deep_headline(m)], title)]


def deep_report(art: DeepRun) -> ReportPage:
    """``report.md`` and the figures of a deep run."""
    m = art.metrics
    target = art.plan.options.evaluation.attack_target
    figures = [
        FigureSpec("attack_curves.png", partial(_attack_figure, art.curves, target)),
        FigureSpec("spectra.png", partial(_spectra_figure, art.curves, m.feature_dim)),
    ]
    if art.history.global_step:
        figures.append(FigureSpec("training.png", partial(_training_figure, art)))
    r = m.rir_theta0.honest
    return ReportPage(
        title=f"{m.experiment} · {m.method} · seed {m.seed}",
        intro=[
            f"Backbone `{m.backbone}` ({m.feature_dim} features). Benign (pre-training) task: "
            f"{m.benign_task}. Harmful task: {m.harmful_task}."
        ],
        tables=[Table(["quantity", "value"], [list(row) for row in deep_headline(m)])],
        body=[
            f"RIR_θ0 compares the immunized extractor θ_I with the original θ0 on the same "
            f"{r.groups} random groups of {r.group_size} samples (Eq. 17–18). The honest κ "
            "takes σ_min over the numerical range of each group's covariance; the "
            "paper-compatible κ adds 1e-6·I and takes the smallest eigenvalue above 1e-6, so "
            "with groups smaller than the feature size it is a ratio of σ_max only.",
            "",
            "The whitened attacker undoes any invertible linear map of the features: a "
            "slowdown that vanishes there came from re-scaling the features, not from "
            "destroying them.",
            "",
            f"Training: {m.training.steps} immunization steps in "
            f"{format_number(m.train_seconds)} s on {m.training.processes} process(es); "
            f"run wall time {format_number(m.wall_seconds)} s.",
        ],
        figures=figures,
    )
