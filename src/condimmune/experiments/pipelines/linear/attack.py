"""The attack suite on a saved linear run (``condimmune attack RUN_DIR``).

The suite (:mod:`condimmune.attacks.suite`) runs every attacker of ``attack.attackers`` on
both tasks, raw inputs vs the run's immunized features, ``attack.suite_budget`` steps each,
to relative suboptimality ``attack.target``; the results go into the run's
``metrics.json`` (``attacks``, ``attack_worst_case`` and, when first-order attackers ran,
``attack_worst_case_first_order``, and ``attack_suite_settings``), into
``attack_report.md`` with two figures, and into a section of ``report.md`` (replaced on a
re-run). An attack adds its attackers to those of earlier attacks under the same settings
(the worst cases are over all of them; the figures show this command's attackers) and
replaces the results of earlier attacks under other settings, saying so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from matplotlib.figure import Figure

from condimmune.attacks.registry import Attacker
from condimmune.attacks.suite_records import (
    DECOMPOSITION_ATTACKERS,
    AttackSummary,
    SuiteSettings,
    WorstCase,
)
from condimmune.core.progress import ProgressCallback
from condimmune.experiments.figures import clamp, suboptimality_window
from condimmune.experiments.pipeline import AttackOutcome
from condimmune.experiments.pipelines.linear.run import LinearLoaded
from condimmune.experiments.report import (
    FigureSpec,
    ReportPage,
    Table,
    format_number,
    plotted_points,
    save_figure,
)
from condimmune.experiments.verdict import slowdown_text, steps_text, verdict_text

if TYPE_CHECKING:  # the suite trains with torch: imported when a run is attacked
    from condimmune.attacks.suite import SuiteEntry

__all__ = ["ATTACK_SECTION", "AttackSuiteResult", "attack_linear"]

ATTACK_SECTION = "## Attack suite (`condimmune attack`)"


@dataclass(frozen=True)
class AttackSuiteResult:
    """The suite on one run: the trajectories of the attackers this command ran, the
    summaries of every attacker on record (this command's and, under the same settings,
    earlier ones'), the worst cases over them, and the settings."""

    entries: dict[Attacker, SuiteEntry]
    summaries: dict[str, AttackSummary]
    worst: WorstCase
    worst_first_order: WorstCase | None
    settings: SuiteSettings
    dropped: list[str]
    """Attackers of an earlier attack under other settings, whose results were replaced."""

    @property
    def target(self) -> float:
        return self.settings.target

    @property
    def budget(self) -> int:
        return self.settings.budget


def _merged(
    loaded: LinearLoaded, new: dict[str, AttackSummary], settings: SuiteSettings
) -> tuple[dict[str, AttackSummary], list[str]]:
    """This attack's summaries added to the run's earlier ones when those were made under
    the same settings (an attacker run again is replaced); otherwise only the new ones, and
    the names of the earlier ones they replace."""
    earlier = loaded.metrics.attacks or {}
    if loaded.metrics.attack_suite_settings == settings:
        return {**earlier, **new}, []
    return dict(new), sorted(set(earlier) - set(new))


def attack_linear(loaded: LinearLoaded, on_progress: ProgressCallback | None) -> AttackOutcome:
    """Run the suite of the run's attack options on ``loaded``; return the updated metrics
    (merged with earlier attackers of the same settings), the report and what the command
    prints."""
    options = loaded.plan.options.attack
    settings = SuiteSettings(options.target, options.suite_budget, options.full_curves)
    budget = settings.budget
    # the suite's attackers train with torch's optimizers: only `attack` imports torch
    import torch

    from condimmune.attacks.suite import run_attack_suite

    benign, harmful, t = loaded.data.benign, loaded.data.harmful, torch.from_numpy
    entries = run_attack_suite(
        [a.value for a in options.attackers],
        benign=(t(benign.x_train), t(benign.y_train)),
        harmful=(t(harmful.x_train), t(harmful.y_train)),
        weight=t(loaded.model.weight),
        target=settings.target,
        budget=budget,
        seed=loaded.plan.seed,
        full_curves=settings.full_curves,
        on_progress=on_progress,
    )
    summaries, dropped = _merged(
        loaded, {a.value: e.summary(budget) for a, e in entries.items()}, settings
    )
    by_attacker = {Attacker(name): summary for name, summary in summaries.items()}
    first_order = (
        WorstCase.of(by_attacker, budget, exclude=DECOMPOSITION_ATTACKERS)
        if set(by_attacker) - DECOMPOSITION_ATTACKERS
        else None
    )
    result = AttackSuiteResult(
        entries=entries,
        summaries=summaries,
        worst=WorstCase.of(by_attacker, budget),
        worst_first_order=first_order,
        settings=settings,
        dropped=dropped,
    )
    metrics = replace(
        loaded.metrics,
        attacks=result.summaries,
        attack_worst_case=result.worst,
        attack_worst_case_first_order=result.worst_first_order,
        attack_suite_settings=settings,
    )
    return AttackOutcome(metrics, _page(result), *_printed(result, loaded.run_dir))


def _printed(result: AttackSuiteResult, run_dir: Path) -> tuple[Table, list[str]]:
    f, budget = format_number, result.budget
    # the lower bounds read as in the report: steps `> budget`, slowdowns `≥ x`
    rows = [
        [
            name,
            f"{steps_text(d.harmful_steps_original, budget)} → "
            f"{steps_text(d.harmful_steps_immunized, budget)}",
            slowdown_text(d.harmful_slowdown, d.harmful_reached),
            slowdown_text(d.benign_slowdown, d.benign_steps_immunized is not None),
            f(d.harmful_best),
        ]
        for name, d in result.summaries.items()
    ]
    columns = [
        "attacker",
        "harmful steps orig. → imm.",
        "harmful slowdown",
        "benign slowdown",
        "best harmful (imm.)",
    ]

    def steps(count: int) -> str:  # an unreached target counts as budget + 1 steps
        return steps_text(count if count <= budget else None, budget)

    lines = [
        f"{label}: {w.attacker_immunized} needs {steps(w.steps_immunized)} steps on immunized "
        f"features vs {w.attacker_original} {steps(w.steps_original)} on raw inputs: slowdown "
        f"{slowdown_text(w.harmful_slowdown, w.steps_immunized <= budget)}"
        for label, w in (
            ("worst case", result.worst),
            ("worst case, first-order attackers", result.worst_first_order),
        )
        if w is not None
    ]
    title = f"attack suite (target {result.target:g}, budget {result.budget})"
    if result.dropped:
        lines.append(
            f"replaced the results of {', '.join(result.dropped)} (an earlier attack with "
            "other attack settings)"
        )
    return Table(columns, rows, title), [*lines, f"report: {run_dir / 'attack_report.md'}"]


def _task_figure(result: AttackSuiteResult, task: str, path: Path) -> None:
    """One panel per attacker: its relative suboptimality on raw inputs and on the immunized
    features, the y axis on :func:`suboptimality_window` shared by the panels."""
    entries = result.entries
    cols = min(4, len(entries))
    rows = math.ceil(len(entries) / cols)
    curves = {
        attacker: [
            (label, plotted_points(getattr(entry, f"{task}_{side}").curve), style)
            for label, side, style in (
                ("original (raw inputs)", "original", "--"),
                ("immunized", "immunized", "-"),
            )
        ]
        for attacker, entry in entries.items()
    }
    every = (values for drawn in curves.values() for _, (_, values), _ in drawn)
    window = suboptimality_window(every, result.target)
    # constrained layout: a row's titles would otherwise overlap the x labels above
    fig = Figure(figsize=(3.2 * cols + 0.6, 2.6 * rows + 0.6), layout="constrained")
    for i, (attacker, drawn) in enumerate(curves.items()):
        ax = fig.add_subplot(rows, cols, i + 1)
        for label, (steps, values), style in drawn:
            ax.semilogy(steps, clamp(values, window), style, label=label)
        ax.axhline(result.target, color="grey", lw=0.8, ls=":", label="target")
        ax.set_ylim(*window)
        ax.set_title(attacker.value, fontsize=9)
        ax.tick_params(labelsize=7)
        if i % cols == 0:
            ax.set_ylabel("relative suboptimality", fontsize=8)
        if i >= len(curves) - cols:
            ax.set_xlabel("attack step", fontsize=8)
        if i == 0:
            ax.legend(fontsize=7)
    fig.suptitle(
        f"{task} task: relative suboptimality (L(w_t) − L*) / (L(w_0) − L*) per attack step "
        f"(below {window[0]:.0e}: drawn on the bottom edge)",
        fontsize=10,
    )
    save_figure(fig, path)


def _page(result: AttackSuiteResult) -> ReportPage:
    """``attack_report.md`` and ``attacks_harmful.png``/``attacks_benign.png``."""
    worst, worst_first_order = result.worst, result.worst_first_order
    target, budget = result.target, result.budget
    stops = "ran every step" if result.settings.full_curves else "stopped at the target"
    intro = [
        f"Target: relative suboptimality {target:g} of the squared probing loss; budget "
        f"{budget} steps per attacker (unreached targets count as {budget + 1} steps, so "
        f"those slowdowns are lower bounds); each attacker {stops}.",
        "",
        f"**Worst case (the attacker's best choice):** fastest on raw inputs "
        f"`{worst.attacker_original}` ({worst.steps_original} steps), fastest on immunized "
        f"features `{worst.attacker_immunized}` ({worst.steps_immunized} steps): "
        f"slowdown **{format_number(worst.harmful_slowdown)}**.",
    ]
    earlier = [name for name in result.summaries if Attacker(name) not in result.entries]
    if earlier:
        intro += [
            "",
            f"The table and worst cases include {', '.join(earlier)} from an earlier attack "
            "with the same settings; the figures show this attack's attackers.",
        ]
    if worst_first_order is not None:
        w = worst_first_order
        intro += [
            "",
            f"Among first-order attackers only (no least-squares solve, no whitening): "
            f"`{w.attacker_original}` {w.steps_original} steps on the original vs "
            f"`{w.attacker_immunized}` {w.steps_immunized} immunized: slowdown "
            f"**{format_number(w.harmful_slowdown)}**.",
        ]
    f = format_number
    rows = [
        [
            name,
            f"{steps_text(d.harmful_steps_original, budget)} → "
            f"{steps_text(d.harmful_steps_immunized, budget)}",
            f"{f(d.harmful_seconds_original)} → {f(d.harmful_seconds_immunized)}",
            slowdown_text(d.harmful_slowdown, d.harmful_reached),
            f"{steps_text(d.benign_steps_original, budget)} → "
            f"{steps_text(d.benign_steps_immunized, budget)}",
            slowdown_text(d.benign_slowdown, d.benign_steps_immunized is not None),
            f(d.harmful_best),
            d.setting_immunized,
        ]
        for name, d in result.summaries.items()
    ]
    slowdowns = {n: (d.harmful_slowdown, d.harmful_reached) for n, d in result.summaries.items()}
    worst_reached = worst.steps_immunized <= budget
    intro += [
        "",
        verdict_text(
            "this run",
            slowdowns,
            (worst.attacker_immunized.value, worst.harmful_slowdown, worst_reached),
            None,
            [
                n
                for n, d in result.summaries.items()
                if d.harmful_steps_original is None and d.harmful_steps_immunized is None
            ],
        ),
    ]
    table = Table(
        [
            "attacker",
            "harmful steps orig. → imm.",
            "harmful seconds orig. → imm.",
            "harmful slowdown",
            "benign steps orig. → imm.",
            "benign slowdown",
            "best harmful value (imm.)",
            "setting",
        ],
        rows,
    )
    return ReportPage(
        title="Attack suite",
        intro=intro,
        tables=[table],
        figures=[
            FigureSpec(f"attacks_{task}.png", partial(_task_figure, result, task))
            for task in ("harmful", "benign")
        ],
    )
