"""``condimmune attack-matrix RUN_DIR... --out DIR``: attacked deep runs combined.

Runs are grouped by (experiment, method); every number is the mean ± sample standard
deviation over a group's runs (its seeds; one run says "(1 run)"), with the runs (seeds)
behind each method. Runs that do not mix (a seed twice, other configs or attack settings,
foreign files, non-finite numbers) are refused (:mod:`condimmune.experiments.matrix_runs`).
Written into a new directory, atomically:

* ``attack_matrix.md`` — the yardstick per method (S, S_max, P, the prefix ceiling), the
  per-attacker table (harmful slowdown θ_I ÷ θ0), worst case, utility, RIR_θ0, the worst
  case's RFD, and one verdict paragraph per method written from the numbers;
* ``attack_matrix.png`` — the heat map of the mean slowdown (log₁₀ colour scale centred at
  1×, lower bounds hatched, methods over the utility cap grey: :mod:`.figures`);
* ``attack_matrix_curves.png`` — per method, the best-so-far harmful accuracy of its most
  frequent worst-case attacker, θ0 vs θ_I, mean over seeds, and the mean target;
* ``attack_matrix.json`` — the table as records (:class:`MatrixGroup`).

A value whose target some seed did not reach within the budget is a lower bound, ``≥``.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from condimmune.attacks.deep_headline import DeepAttackSuite
from condimmune.experiments.figures import HeatCell, draw_factor_heat_map, factor_text
from condimmune.experiments.matrix_groups import MatrixGroup, MatrixResult, Stat, group_runs
from condimmune.experiments.matrix_runs import load_matrix_runs
from condimmune.experiments.pipelines.deep.attack_report import (
    attacker_budgets,
    benign_settings,
    best_so_far,
)
from condimmune.experiments.report import save_figure
from condimmune.experiments.rundir import claim_output_dir, write_directory_atomically
from condimmune.experiments.verdict import verdict_text

__all__ = ["write_attack_matrix"]


def _text(stat: Stat | None) -> str:
    return "—" if stat is None else stat.text()


def _label(g: MatrixGroup, several: bool) -> str:
    return f"{g.experiment}/{g.method}" if several else g.method


def _fails_cap(g: MatrixGroup, cap: float) -> bool:
    """The verdict's rule: the mean benign-probe drop over the seeds exceeds the cap."""
    return g.utility_drop is not None and g.utility_drop.mean > cap


def _heat_map(groups: list[MatrixGroup], labels: list[str], cap: float, path: Path) -> None:
    """Mean slowdown per attacker (rows) and method (columns) on one diverging log scale
    centred at 1× (:func:`~condimmune.experiments.figures.draw_factor_heat_map`); lower
    bounds hatched; a method whose mean benign-probe drop exceeds the utility cap greyed."""
    names = list(dict.fromkeys(n for g in groups for n in g.slowdown))
    cells = [
        [
            HeatCell(s.mean, factor_text(s.mean, s.lower_bound), s.lower_bound, _fails_cap(g, cap))
            if (s := g.slowdown.get(n)) is not None
            else None
            for g in groups
        ]
        for n in names
    ]
    logs = [abs(math.log10(c.value)) for row in cells for c in row if c and c.value > 0]
    fig = Figure(figsize=(1.1 * len(groups) + 3.4, 0.34 * len(names) + 2.4), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    draw_factor_heat_map(
        fig,
        ax,
        cells,
        bound=max([1.0, *logs]),
        quantity="harmful-task slowdown θ_I ÷ θ0 (mean over seeds)",
        excluded=f"fails the utility cap (benign probe down more than {cap:g} points): no defence",
    )
    ticks = [
        f"{label}\n(fails cap, {len(g.passes_cap) - sum(g.passes_cap)}/{len(g.passes_cap)} seeds)"
        if not all(g.passes_cap)
        else label
        for g, label in zip(groups, labels, strict=True)
    ]
    ax.set_xticks(range(len(groups)), ticks, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("immunization method")
    ax.set_ylabel("attacker")
    experiments = ", ".join(dict.fromkeys(g.experiment for g in groups))
    seeds = sorted({len(g.runs) for g in groups})
    ax.set_title(
        f"{experiments}: harmful-task slowdown per attacker and method "
        f"({'/'.join(map(str, seeds))} seed{'' if seeds == [1] else 's'} each)",
        fontsize=10,
    )
    save_figure(fig, path)


def _curves(
    groups: list[MatrixGroup],
    labels: list[str],
    runs: dict[str, DeepAttackSuite],
    path: Path,
) -> None:
    """Per method, the best-so-far harmful accuracy of its most frequent worst-case
    attacker, θ0 vs θ_I, mean over the seeds whose evaluation steps match, and the mean
    target."""
    cols = min(4, len(groups))
    rows = math.ceil(len(groups) / cols)
    # constrained layout: a row's titles would otherwise overlap the x labels of the row above
    fig = Figure(figsize=(4.2 * cols, 3.2 * rows + 0.5), layout="constrained")
    for k, (g, label) in enumerate(zip(groups, labels, strict=True)):
        ax = fig.add_subplot(rows, cols, k + 1)
        attacker = Counter(g.worst_attackers).most_common(1)[0][0]
        entries = [runs[r].attackers[attacker] for r in g.runs if attacker in runs[r].attackers]
        steps = entries[0].eval_steps
        same = [e for e in entries if e.eval_steps == steps]
        for side, color in (("original", "C0"), ("immunized", "C3")):
            curves = [best_so_far(getattr(e.harmful, side).curve) for e in same]
            mean = [statistics.fmean(v) for v in zip(*curves, strict=True)]
            ax.plot(steps, mean, color=color, label="θ0" if side == "original" else "θ_I")
        target = statistics.fmean(e.harmful.target for e in same)
        ax.axhline(target, color="grey", lw=0.8, ls=":", label="target (mean)")
        ax.set_title(
            f"{label}: {attacker} ({len(same)} seed{'s' if len(same) > 1 else ''})", fontsize=9
        )
        if k >= len(groups) - cols:
            ax.set_xlabel("attack step")
        if k % cols == 0:
            ax.set_ylabel("best-so-far harmful accuracy", fontsize=8)
        ax.legend(fontsize=7, loc="lower right")
    experiments = ", ".join(dict.fromkeys(g.experiment for g in groups))
    fig.suptitle(
        f"{experiments}: each method's most frequent worst-case attacker, held-out harmful "
        "accuracy (mean over seeds)",
        fontsize=10,
    )
    save_figure(fig, path)


def _markdown(groups: list[MatrixGroup], labels: list[str], first: DeepAttackSuite) -> str:
    s = first.settings
    names = list(dict.fromkeys(n for g in groups for n in g.slowdown))
    lines = [
        "# Worst-case attack matrix",
        "",
        f"{sum(len(g.runs) for g in groups)} runs. Settings (the same for every run): {s.trials} "
        f"trials per attacker and model on cached features ({s.probe_steps} steps), "
        f"{s.finetune_trials} for network attackers ({s.finetune_steps} steps of "
        f"{s.batch_size}, evaluated every {s.finetune_eval_every}){attacker_budgets(s)}"
        f"{benign_settings(s)}; "
        f"target {s.target_fraction:g} × θ0's best; utility cap {s.utility_cap:g} points.",
        "",
        "Harmful-task slowdown θ_I ÷ θ0 (mean ± std over seeds; ≥: some seed did not reach "
        "the target, a lower bound).",
        "",
        "| attacker | " + " | ".join(labels) + " |",
        "|---" * (len(labels) + 1) + "|",
    ]
    for n in names:
        cells = [g.slowdown[n].text() if n in g.slowdown else "—" for g in groups]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")

    yardstick = [
        ("**S = T*(θ_I) / T*(θ0)** (FLOPs to one target)", [f"**{_text(g.s)}**" for g in groups]),
        ("S_max (weight-free ceiling)", [_text(g.s_max) for g in groups]),
        ("P = log S / log S_max", [_text(g.p) for g in groups]),
        ("cheapest attacker on θ_I, per seed", [", ".join(g.cheapest or []) for g in groups]),
        (
            "S floor: attackers that stopped short of τ on θ_I counted at what they spent",
            [_text(g.s_floor) for g in groups],
        ),
        (
            "attackers stopped short on θ_I, per seed",
            [", ".join(map(str, g.stopped_short or [])) or "—" for g in groups],
        ),
        (
            "attackers stopped short on θ0, per seed",
            [", ".join(map(str, g.theta0_short or [])) or "—" for g in groups],
        ),
        (
            "θ0 settled by Eq. R1: attackers run again, per seed (— before the rule)",
            [
                ", ".join("—" if n is None else str(n) for n in g.theta0_extended or []) or "—"
                for g in groups
            ],
        ),
        ("S over the weight-reading attackers only", [_text(g.s_reading) for g in groups]),
        ("C(prefix): ceiling if the prefix is kept", [_text(g.c_prefix) for g in groups]),
    ]
    if any(g.c_curve for g in groups):  # Eq. Y6, where the runs measured it
        yardstick.append(
            (
                "C(k): θ0 kept through tap k, re-initialised after it",
                [
                    "; ".join(f"{t} {s.text()}" for t, s in (g.c_curve or {}).items()) or "—"
                    for g in groups
                ],
            )
        )
    summary = [
        *(yardstick if any(g.s is not None for g in groups) else []),
        ("runs (seeds)", [f"{len(g.runs)} ({', '.join(map(str, g.seeds))})" for g in groups]),
        ("**worst case**", [f"**{g.worst_slowdown.text()}**" for g in groups]),
        ("worst-case attackers", [", ".join(sorted(set(g.worst_attackers))) for g in groups]),
        ("RFD of the worst case, %", [g.worst_rfd.text() for g in groups]),
        ("RIR_θ0 (honest κ)", [g.rir_theta0.text() for g in groups]),
        (
            "benign linear-probe drop, points",
            [g.utility_drop.text() if g.utility_drop else "—" for g in groups],
        ),
        ("passes the utility cap", [f"{sum(g.passes_cap)}/{len(g.passes_cap)}" for g in groups]),
        ("attack wall time per run, s", [g.attack_seconds.text() for g in groups]),
    ]
    for name, cells in summary:
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "![heat map](attack_matrix.png)", "", "![curves](attack_matrix_curves.png)", ""]
    for g, label in zip(groups, labels, strict=True):
        # held: θ_I missed the target in every seed; otherwise judged by the mean
        slowdowns = {n: (st.mean, st.unreached < st.n) for n, st in g.slowdown.items()}
        worst = Counter(g.worst_attackers).most_common(1)[0][0]
        utility = (g.utility_drop.mean, first.settings.utility_cap) if g.utility_drop else None
        text = verdict_text(
            f"`{label}` (mean over {len(g.runs)} seed{'s' if len(g.runs) > 1 else ''})",
            slowdowns,
            (worst, g.worst_slowdown.mean, g.worst_slowdown.unreached < g.worst_slowdown.n),
            utility,
        )
        lines += [text, ""]
    return "\n".join(lines)


def write_attack_matrix(paths: Sequence[Path], out: Path) -> MatrixResult:
    """Combine the attacked deep runs found in ``paths`` into a new directory ``out``
    (refusing runs that do not mix: :func:`~condimmune.experiments.matrix_runs.
    load_matrix_runs`)."""
    loaded = load_matrix_runs(paths)
    keys = list(dict.fromkeys((r.metrics.experiment, r.metrics.method_label) for r in loaded))
    groups = [
        group_runs(k, [r for r in loaded if (r.metrics.experiment, r.metrics.method_label) == k])
        for k in keys
    ]
    several = len({k[0] for k in keys}) > 1
    labels = [_label(g, several) for g in groups]
    suites = {str(r.path): r.suite for r in loaded}
    text = _markdown(groups, labels, loaded[0].suite)

    def write(tmp: Path) -> None:
        cap = loaded[0].suite.settings.utility_cap
        _heat_map(groups, labels, cap, tmp / "attack_matrix.png")
        _curves(groups, labels, suites, tmp / "attack_matrix_curves.png")
        (tmp / "attack_matrix.md").write_text(text)
        records = [g.to_json() for g in groups]
        (tmp / "attack_matrix.json").write_text(json.dumps(records, indent=1, allow_nan=True))

    with claim_output_dir(out) as final:
        write_directory_atomically(final, write)
    unverified = sum(not r.verified for r in loaded)
    return MatrixResult([r.path for r in loaded], [k[1] for k in keys], groups, unverified)
