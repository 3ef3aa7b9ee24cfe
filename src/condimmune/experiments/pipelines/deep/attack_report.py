"""``attack_report.md`` of a deep run: the worst case, the utility cap, a verdict written
from the numbers, one row per attacker, and two figures (the best-so-far curves of the
worst-case attacker, the slowdown of every attacker on a log scale)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from matplotlib.figure import Figure

from condimmune.attacks.deep_headline import DeepAttackSuite
from condimmune.attacks.deep_records import DeepAttackerSummary, DeepAttackOptions
from condimmune.experiments.figures import factor_bars
from condimmune.experiments.records import DeepRunMetrics
from condimmune.experiments.report import FigureSpec, ReportPage, format_number, save_figure
from condimmune.experiments.verdict import (
    HOLD_FACTOR,
    slowdown_text,
    steps_text,
    verdict_text,
    yardstick_lines,
)

__all__ = [
    "ATTACK_SECTION",
    "attack_page",
    "benign_settings",
    "best_so_far",
]

ATTACK_SECTION = "## Worst-case attack suite (`condimmune attack`)"


def best_so_far(curve: list[float]) -> list[float]:
    out: list[float] = []
    for value in curve:
        out.append(max(value, out[-1]) if out else value)
    return out


def _curves_figure(suite: DeepAttackSuite, path: Path) -> None:
    shown = list(dict.fromkeys([suite.worst_case.attacker.value, suite.worst_case.strongest.value]))
    fig = Figure(figsize=(5.2 * len(shown), 3.6), layout="constrained")
    for i, name in enumerate(shown):
        entry = suite.attackers[name]
        ax = fig.add_subplot(1, len(shown), i + 1)
        for label, search, color in (
            ("θ0", entry.harmful.original, "C0"),
            ("θ_I", entry.harmful.immunized, "C3"),
        ):
            ax.plot(entry.eval_steps, best_so_far(search.curve), color=color, label=label)
        ax.axhline(entry.harmful.target, color="grey", lw=0.8, ls=":", label="target")
        role = "worst case" if name == suite.worst_case.attacker.value else "strongest on θ_I"
        ax.set_title(f"{name} ({role})", fontsize=9)
        ax.set_xlabel("attack step")
        ax.set_ylabel("best-so-far held-out harmful accuracy", fontsize=8)
        ax.legend(fontsize=8)
    fig.suptitle("harmful task: the best accuracy an attacker has reached so far", fontsize=10)
    save_figure(fig, path)


def _slowdown_figure(metrics: DeepRunMetrics, suite: DeepAttackSuite, path: Path) -> None:
    """Each attacker's harmful-task slowdown, a bar from 1× (:func:`factor_bars`)."""
    names = list(suite.attackers)
    harmful = [suite.attackers[n].harmful for n in names]
    fig = Figure(figsize=(7.5, 0.3 * len(names) + 1.6))
    ax = fig.add_subplot(1, 1, 1)
    factor_bars(ax, names, [h.slowdown for h in harmful], [not h.reached for h in harmful])
    ax.axvline(HOLD_FACTOR, color="grey", lw=0.8, ls=":")
    ax.set_xlabel(
        "harmful-task slowdown θ_I ÷ θ0 (log scale; right of 1×: slower on θ_I, left: faster)\n"
        f"dotted: {HOLD_FACTOR:g}×, from where the defence holds; hatched ≥: θ_I did not reach "
        "the target (a lower bound)",
        fontsize=8,
    )
    ax.set_ylabel("attacker")
    ax.set_title(
        f"{metrics.method} on {metrics.experiment} (seed {metrics.seed}): "
        "steps to the target, θ_I ÷ θ0",
        fontsize=10,
    )
    save_figure(fig, path)


def _row(name: str, entry: DeepAttackerSummary) -> str:
    h, b, budget = entry.harmful, entry.benign, entry.eval_steps[-1]
    o, i = h.original, h.immunized
    benign = (
        f"{b.original.best_accuracy:.3f} → {b.immunized.best_accuracy:.3f} | "
        f"{slowdown_text(b.slowdown, b.reached)}"
        if b is not None
        else "— | —"
    )
    return (
        f"| {name} | {entry.family.value} | {h.target:.3f} | "
        f"{steps_text(o.steps_to_target, budget)} → {steps_text(i.steps_to_target, budget)} | "
        f"{slowdown_text(h.slowdown, h.reached)} | {o.best_accuracy:.3f} → "
        f"{i.best_accuracy:.3f} | {o.auc:.3f} → {i.auc:.3f} | {h.rfd:.1f} | {benign} | "
        f"{i.setting} |"
    )


def attacker_budgets(s: DeepAttackOptions) -> str:
    """The settings beyond the common budgets (each optional, shown only when set): the
    attacker's labels per class, the weight-free attackers' steps, `raw-adam`'s own steps."""
    parts = []
    if s.labels_per_class is not None:
        parts.append(f"the attacker holds {s.labels_per_class} labelled images per harmful class")
    if s.weight_free_steps is not None:
        parts.append(
            f"{s.weight_free_steps} steps for the weight-free attackers (searched once per θ0)"
        )
    if s.raw_probe_steps is not None:
        parts.append(f"{s.raw_probe_steps} for `raw-adam`")
    return "".join(f", {part}" for part in parts)


def benign_settings(s: DeepAttackOptions) -> str:
    """How the benign task was attacked, when it differs from the harmful one."""
    parts = []
    if s.benign_trials is not None:
        parts.append(f"at most {s.benign_trials} trials per search on the benign task")
    if not s.finetune_benign:
        parts.append("network attackers on the harmful task only")
    return "; " + ", ".join(parts) if parts else ""


def report_lines(metrics: DeepRunMetrics, suite: DeepAttackSuite) -> list[str]:
    """The Markdown of ``attack_report.md`` (without its title)."""
    s, w = suite.settings, suite.worst_case
    u = suite.utility
    utility = (u.drop_points, u.cap_points) if u is not None else None
    slowdowns = {n: (e.harmful.slowdown, e.harmful.reached) for n, e in suite.attackers.items()}
    label = f"`{metrics.method}` on {metrics.experiment} (seed {metrics.seed})"
    rir = metrics.rir_theta0.honest.rir_mean
    return [
        f"Settings: {s.trials} trials per attacker and model on cached features "
        f"({s.probe_steps} full-batch steps), {s.finetune_trials} for attackers that train "
        f"network blocks ({s.finetune_steps} minibatch steps of {s.batch_size}, evaluated every "
        f"{s.finetune_eval_every}){attacker_budgets(s)}{benign_settings(s)}; cap "
        f"{format_number(s.seconds)} s per "
        f"attacker and task; target = {s.target_fraction:g} × θ0's best accuracy for that "
        f"attacker; TPE sampler seed {s.seed}; storage `{s.storage}`; "
        f"{format_number(suite.wall_seconds)} s in all.",
        "",
        verdict_text(
            label,
            slowdowns,
            (w.attacker.value, w.slowdown, w.reached),
            utility,
            [
                n
                for n, e in suite.attackers.items()
                if e.harmful.original.steps_to_target is None
                and e.harmful.immunized.steps_to_target is None
            ],
        ),
        "",
        f"Worst case (Eq. A5, over the {len(w.competent)} competent attackers): "
        f"`{w.attacker}`, slowdown **{format_number(w.slowdown)}**"
        f"{'' if w.reached else ' (lower bound)'}, RFD {w.rfd:.1f} % beside RIR_θ0 "
        f"{format_number(rir)}. Strongest attacker on θ_I: `{w.strongest}`, best harmful "
        f"accuracy {w.accuracy_immunized:.3f} (θ0: {w.accuracy_original:.3f} over all "
        "attackers)."
        + (
            ""
            if u is None
            else f" Benign linear-probe accuracy {u.accuracy_original:.3f} → "
            f"{u.accuracy_immunized:.3f}."
        ),
        "",
        *(
            []
            if suite.yardstick is None
            else [*yardstick_lines(suite.yardstick, s.target_fraction), ""]
        ),
        "Per attacker (a diagnostic: each with its own target, so a weight-free attacker is "
        "never slowed):",
        "",
        "| attacker | family | harmful target | steps θ0 → θ_I | slowdown | best acc. θ0 → θ_I "
        "| AUC θ0 → θ_I | RFD % | benign best acc. θ0 → θ_I | benign slowdown | setting (θ_I) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *(_row(n, e) for n, e in suite.attackers.items()),
    ]


def attack_page(metrics: DeepRunMetrics, suite: DeepAttackSuite) -> ReportPage:
    """``attack_report.md``, ``attack_best_so_far.png`` and ``attack_slowdowns.png``."""
    lines = report_lines(metrics, suite)
    return ReportPage(
        title="Worst-case attack suite",
        body=lines,
        figures=[
            FigureSpec("attack_best_so_far.png", partial(_curves_figure, suite)),
            FigureSpec("attack_slowdowns.png", partial(_slowdown_figure, metrics, suite)),
        ],
    )
