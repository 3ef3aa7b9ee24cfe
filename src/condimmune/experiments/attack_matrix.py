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
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

from condimmune.attacks.deep_headline import DeepAttackSuite
from condimmune.attacks.registry import DEEP_ATTACKERS, PREFIX_ONLY
from condimmune.attacks.yardstick import ceiling, weight_reading_slowdown
from condimmune.core.records import JsonRecord
from condimmune.experiments.figures import HeatCell, draw_factor_heat_map, factor_text
from condimmune.experiments.matrix_runs import MatrixRun, load_matrix_runs
from condimmune.experiments.pipelines.deep.attack_report import benign_settings, best_so_far
from condimmune.experiments.report import save_figure
from condimmune.experiments.rundir import claim_output_dir, write_directory_atomically
from condimmune.experiments.verdict import verdict_text

__all__ = ["MatrixGroup", "MatrixResult", "Stat", "write_attack_matrix"]


@dataclass(frozen=True)
class Stat(JsonRecord):
    """Mean ± sample std over ``n`` runs, of which ``unreached`` are lower bounds (slowdowns
    whose target θ_I did not reach within the budget)."""

    mean: float
    std: float
    n: int
    unreached: int = 0

    @classmethod
    def of(cls, values: Sequence[float], unreached: int = 0) -> Stat:
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return cls(statistics.fmean(values), std, len(values), unreached)

    @property
    def lower_bound(self) -> bool:
        return self.unreached > 0

    def text(self, digits: int = 3) -> str:
        """``mean ± std``; a single run's value says so instead of a ``± 0``."""
        mark = "≥ " if self.lower_bound else ""
        spread = f" ± {self.std:.2g}" if self.n > 1 else " (1 run)"
        return f"{mark}{self.mean:.{digits}g}{spread}"


@dataclass(frozen=True)
class MatrixGroup(JsonRecord):
    """One (experiment, method) over its runs."""

    experiment: str
    method: str
    seeds: list[int]
    runs: list[str]
    slowdown: dict[str, Stat]
    worst_slowdown: Stat
    worst_attackers: list[str]
    worst_rfd: Stat
    utility_drop: Stat | None
    passes_cap: list[bool]
    rir_theta0: Stat
    attack_seconds: Stat
    s: Stat | None = None
    """The yardstick's S = T*(θ_I)/T*(θ0) (Eq. Y4) over the runs that measured it."""
    s_max: Stat | None = None
    """Its from-scratch ceiling S_max over the runs that measured it."""
    p: Stat | None = None
    """P = log S / log S_max (Eq. Y5) over the runs with S_max > 1."""
    s_reading: Stat | None = None
    """S over the weight-reading attackers only (a diagnostic: the weight-free left out)."""
    c_prefix: Stat | None = None
    """The prefix ceiling C(prefix) / T*(θ0) over the runs that measured it."""


@dataclass(frozen=True)
class MatrixResult:
    """The runs combined, the methods (in order), the groups, and how many of the runs were
    a ``metrics.json`` alone (no run directory whose files could be verified)."""

    runs: list[Path]
    methods: list[str]
    groups: list[MatrixGroup]
    unverified: int


def _group(key: tuple[str, str], runs: list[MatrixRun]) -> MatrixGroup:
    suites = [r.suite for r in runs]
    names = list(dict.fromkeys(n for s in suites for n in s.attackers))
    slowdown = {
        n: Stat.of(
            [s.attackers[n].harmful.slowdown for s in suites if n in s.attackers],
            sum(not s.attackers[n].harmful.reached for s in suites if n in s.attackers),
        )
        for n in names
    }
    utilities = [s.utility for s in suites if s.utility is not None]
    sticks = [s.yardstick for s in suites if s.yardstick is not None]
    ceilings = [y for y in sticks if y.s_max is not None and y.cheapest_weight_free is not None]
    free = {a.value for a, spec in DEEP_ATTACKERS.items() if spec.weight_free}
    reading = [r for y in sticks if (r := weight_reading_slowdown(y, free)) is not None]
    prefix = [c for y in sticks if (c := ceiling(y, PREFIX_ONLY)) is not None]
    return MatrixGroup(
        experiment=key[0],
        method=key[1],
        seeds=[r.metrics.seed for r in runs],
        runs=[str(r.path) for r in runs],
        slowdown=slowdown,
        worst_slowdown=Stat.of(
            [s.worst_case.slowdown for s in suites],
            sum(not s.worst_case.reached for s in suites),
        ),
        worst_attackers=[s.worst_case.attacker.value for s in suites],
        worst_rfd=Stat.of([s.worst_case.rfd for s in suites]),
        utility_drop=Stat.of([u.drop_points for u in utilities]) if utilities else None,
        passes_cap=[u.passes for u in utilities],
        rir_theta0=Stat.of([r.metrics.rir_theta0.honest.rir_mean for r in runs]),
        attack_seconds=Stat.of([s.wall_seconds for s in suites]),
        s=_stat([y.s for y in sticks], sum(not y.cheapest_immunized.reached for y in sticks)),
        s_max=_stat(
            [y.s_max for y in ceilings if y.s_max is not None],
            sum(
                c.cheapest_weight_free is not None and not c.cheapest_weight_free.reached
                for c in ceilings
            ),
        ),
        p=_stat([y.p for y in sticks if y.p is not None]),
        s_reading=_stat([r[0] for r in reading], sum(not r[1] for r in reading)),
        c_prefix=_stat([c[0] for c in prefix], sum(not c[1] for c in prefix)),
    )


def _stat(values: Sequence[float], unreached: int = 0) -> Stat | None:
    """:meth:`Stat.of`, or ``None`` when no run measured the value."""
    return Stat.of(values, unreached) if values else None


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
        f"({'/'.join(map(str, seeds))} seeds each)",
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
        f"{s.batch_size}, evaluated every {s.finetune_eval_every}){benign_settings(s)}; "
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
        ("S over the weight-reading attackers only", [_text(g.s_reading) for g in groups]),
        ("C(prefix): ceiling if the prefix is kept", [_text(g.c_prefix) for g in groups]),
    ]
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
    keys = list(dict.fromkeys((r.metrics.experiment, r.metrics.method) for r in loaded))
    groups = [
        _group(k, [r for r in loaded if (r.metrics.experiment, r.metrics.method) == k])
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
