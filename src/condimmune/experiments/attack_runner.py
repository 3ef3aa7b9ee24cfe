"""``condimmune attack RUN_DIR``: the attack suite on a saved linear run, its metrics and report.

The suite (:mod:`condimmune.attacks.suite`) runs every attacker on both tasks, raw inputs
vs the run's immunized features; the results go into the run's ``metrics.json``
(``attacks``, ``attack_worst_case`` and, when first-order attackers ran,
``attack_worst_case_first_order``), into ``attack_report.md`` with two figures, and into a
section of ``report.md`` (replaced on a re-run).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

from matplotlib.figure import Figure

from condimmune.attacks.registry import Attacker
from condimmune.attacks.suite import (
    DECOMPOSITION_ATTACKERS,
    AttackSummary,
    SuiteEntry,
    WorstCase,
    run_attack_suite,
)
from condimmune.experiments.linear_runner import load_run, update_metrics
from condimmune.experiments.report import format_number, plotted_points, save_figure
from condimmune.experiments.rundir import replace_atomically, run_dir_lock

__all__ = ["ATTACK_SECTION", "AttackSuiteResult", "attack_run", "write_attack_report"]

ATTACK_SECTION = "## Attack suite (`condimmune attack`)"


@dataclass(frozen=True)
class AttackSuiteResult:
    """The suite on one run: per-attacker trajectories and summaries, and the worst cases."""

    entries: dict[Attacker, SuiteEntry]
    summaries: dict[str, AttackSummary]
    worst: WorstCase
    worst_first_order: WorstCase | None
    target: float
    budget: int


MAX_BUDGET = 1_000_000
"""The largest ``--budget``: the same bound as the config's ``attack.budget``."""


def attack_run(
    run_dir: Path,
    attackers: list[str],
    *,
    budget: int,
    target: float | None,
    on_progress: Callable[[str], None] | None = None,
) -> AttackSuiteResult:
    """:func:`_attack_run` holding the run directory's lock (:func:`.rundir.run_dir_lock`)
    from reading the run to writing its reports: a concurrent invocation on the same run is
    refused with a message, never interleaved with this one."""
    with run_dir_lock(Path(run_dir).resolve()):
        return _attack_run(
            run_dir, attackers, budget=budget, target=target, on_progress=on_progress
        )


def _attack_run(
    run_dir: Path,
    attackers: list[str],
    *,
    budget: int,
    target: float | None,
    on_progress: Callable[[str], None] | None = None,
) -> AttackSuiteResult:
    """Run the suite on a linear run directory and record it there (metrics.json, reports).

    ``target`` defaults to the run's ``attack.target``; both ``budget`` and ``target`` are
    checked before any attacker runs."""
    if not 1 <= budget <= MAX_BUDGET:
        raise ValueError(
            f"--budget must be 1–{MAX_BUDGET:,} steps (the curves are kept in memory), got {budget}"
        )
    if target is not None and not (0.0 < target < 1.0):
        raise ValueError(
            f"--target must be a relative suboptimality in (0, 1), got {target}; e.g. 1e-3"
        )
    run = load_run(run_dir)
    goal = run.config.attack.target if target is None else target
    entries = run_attack_suite(
        list(attackers),
        benign=(run.data.benign.x_train, run.data.benign.y_train),
        harmful=(run.data.harmful.x_train, run.data.harmful.y_train),
        weight=run.model.weight,
        target=goal,
        budget=budget,
        seed=run.config.seed,
        on_progress=on_progress,
    )
    first_order = (
        WorstCase.of(entries, budget, exclude=DECOMPOSITION_ATTACKERS)
        if set(entries) - DECOMPOSITION_ATTACKERS
        else None
    )
    result = AttackSuiteResult(
        entries=entries,
        summaries={a.value: e.summary(budget) for a, e in entries.items()},
        worst=WorstCase.of(entries, budget),
        worst_first_order=first_order,
        target=goal,
        budget=budget,
    )
    metrics = replace(
        run.metrics,
        attacks=result.summaries,
        attack_worst_case=result.worst,
        attack_worst_case_first_order=result.worst_first_order,
    )
    update_metrics(run_dir, metrics)
    write_attack_report(Path(run_dir), result)
    return result


def write_attack_report(directory: Path, result: AttackSuiteResult) -> None:
    """``attack_report.md`` and ``attacks_harmful.png``/``attacks_benign.png`` for a run."""
    entries, worst, worst_first_order = result.entries, result.worst, result.worst_first_order
    target, budget = result.target, result.budget
    for task in ("harmful", "benign"):
        cols = 4
        rows = math.ceil(len(entries) / cols)
        # constrained layout: a row's titles would otherwise overlap the x labels above
        fig = Figure(figsize=(3.2 * cols, 2.6 * rows), layout="constrained")
        for i, (attacker, entry) in enumerate(entries.items()):
            ax = fig.add_subplot(rows, cols, i + 1)
            for label, outcome, style in (
                ("raw", getattr(entry, f"{task}_raw"), "--"),
                ("immunized", getattr(entry, f"{task}_immunized"), "-"),
            ):
                ax.semilogy(*plotted_points(outcome.curve.clamp(1e-18, 1e3)), style, label=label)
            ax.axhline(target, color="grey", lw=0.8, ls=":")
            ax.set_title(attacker.value, fontsize=9)
            ax.tick_params(labelsize=7)
            if i == 0:
                ax.legend(fontsize=7)
        fig.suptitle(f"{task} task: relative suboptimality per attack step")
        fig.tight_layout()
        replace_atomically(directory / f"attacks_{task}.png", partial(save_figure, fig))
    lines = [
        "# Attack suite",
        "",
        f"Target: relative suboptimality {target:g} of the squared probing loss; budget "
        f"{budget} steps per attacker (unreached targets count as {budget + 1} steps, so "
        "those slowdowns are lower bounds).",
        "",
        f"**Worst case (the attacker's best choice):** fastest on raw inputs "
        f"`{worst.attacker_raw}` ({worst.steps_raw} steps), fastest on immunized "
        f"features `{worst.attacker_immunized}` ({worst.steps_immunized} steps): "
        f"slowdown **{format_number(worst.harmful_slowdown)}**.",
        "",
    ]
    if worst_first_order is not None:
        w = worst_first_order
        lines += [
            f"Among first-order attackers only (no least-squares solve, no whitening): "
            f"`{w.attacker_raw}` {w.steps_raw} steps raw vs `{w.attacker_immunized}` "
            f"{w.steps_immunized} immunized: slowdown "
            f"**{format_number(w.harmful_slowdown)}**.",
            "",
        ]
    lines += [
        "| attacker | harmful steps raw → imm. | harmful seconds raw → imm. | harmful slowdown "
        "| benign steps raw → imm. | benign slowdown | best harmful value (imm.) | setting |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, d in result.summaries.items():
        lines.append(
            f"| {name} | {format_number(d.harmful_steps_raw)} → "
            f"{format_number(d.harmful_steps_immunized)} | "
            f"{format_number(d.harmful_seconds_raw)} → "
            f"{format_number(d.harmful_seconds_immunized)} | "
            f"{format_number(d.harmful_slowdown)} | {format_number(d.benign_steps_raw)} → "
            f"{format_number(d.benign_steps_immunized)} | "
            f"{format_number(d.benign_slowdown)} | {format_number(d.harmful_best)} | "
            f"{d.setting_immunized} |"
        )
    lines += ["", "![harmful](attacks_harmful.png)", "", "![benign](attacks_benign.png)", ""]
    replace_atomically(directory / "attack_report.md", lambda tmp: tmp.write_text("\n".join(lines)))
    # The run's report.md gets (or has replaced) the same section, so one page has it all.
    report = directory / "report.md"
    if report.is_file():
        head = report.read_text().split(ATTACK_SECTION)[0].rstrip("\n")
        section = "\n".join([ATTACK_SECTION, "", *lines[2:]])
        replace_atomically(report, lambda tmp: tmp.write_text(f"{head}\n\n{section}"))
