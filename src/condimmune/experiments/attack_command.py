"""What ``condimmune attack RUN_DIR`` does, for both kinds of run: it picks the suite from the
run directory (deep runs hold ``immunized.safetensors``), checks that the options fit that
kind, runs it (:mod:`.attack_runner` or :mod:`.deep_attack_runner`) and returns the summary
the command prints (a table and a few lines; this module prints nothing)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from condimmune.attacks.registry import Attacker
from condimmune.experiments.deep_attack_runner import deep_attack_run, is_deep_run
from condimmune.experiments.report import format_number as f

__all__ = ["AttackOutput", "run_attack_command"]

_LINEAR_BUDGET = 500
_LINEAR_COLUMNS = ["attacker", "harmful steps raw → imm.", "harmful slowdown", "benign slowdown"]


@dataclass(frozen=True)
class AttackOutput:
    """The printed summary: a table (title, columns, rows), then lines."""

    title: str
    columns: list[str]
    rows: list[list[str]]
    lines: list[str]


def run_attack_command(
    run_dir: Path,
    attackers: str | None,
    budget: int | None,
    target: float | None,
    overrides: list[str],
    on_progress: Callable[[str], None],
) -> AttackOutput:
    """Run the suite that fits ``run_dir`` (see the module docstring): ``attackers`` (comma
    list or ``all``), ``budget``/``target`` for linear runs, ``attack.*`` overrides for deep
    ones."""
    if is_deep_run(run_dir):
        if budget is not None or target is not None:
            raise ValueError(
                "--budget and --target are for linear runs; for a deep run set "
                "attack.probe_steps, attack.finetune_steps or attack.target_fraction with --set"
            )
        chosen = [] if attackers is None else [f"attack.attackers={attackers}"]
        return _deep(run_dir, [*overrides, *chosen], on_progress)
    if overrides:
        raise ValueError("--set is for deep runs; a linear run takes --budget and --target")
    names = attackers or "all"
    return _linear(
        run_dir,
        [a.value for a in Attacker] if names == "all" else names.split(","),
        _LINEAR_BUDGET if budget is None else budget,
        target,
        on_progress,
    )


def _linear(
    run_dir: Path,
    names: list[str],
    budget: int,
    target: float | None,
    on_progress: Callable[[str], None],
) -> AttackOutput:
    from condimmune.experiments.attack_runner import attack_run

    result = attack_run(
        run_dir, [n.strip() for n in names], budget=budget, target=target, on_progress=on_progress
    )
    rows = [
        [
            name,
            f"{f(d.harmful_steps_raw)} → {f(d.harmful_steps_immunized)}",
            f(d.harmful_slowdown),
            f(d.benign_slowdown),
            f(d.harmful_best),
        ]
        for name, d in result.summaries.items()
    ]
    lines = [
        f"{label}: {w.attacker_immunized} needs {w.steps_immunized} steps on immunized "
        f"features vs {w.attacker_raw} {w.steps_raw} on raw inputs: slowdown "
        f"{f(w.harmful_slowdown)}"
        for label, w in (
            ("worst case", result.worst),
            ("worst case, first-order attackers", result.worst_first_order),
        )
        if w is not None
    ]
    return AttackOutput(
        f"attack suite (target {result.target:g}, budget {result.budget})",
        [*_LINEAR_COLUMNS, "best harmful (imm.)"],
        rows,
        [*lines, f"report: {Path(run_dir) / 'attack_report.md'}"],
    )


def _deep(run_dir: Path, overrides: list[str], on_progress: Callable[[str], None]) -> AttackOutput:
    suite, _ = deep_attack_run(run_dir, overrides=overrides, on_progress=on_progress)
    rows = []
    for name, e in suite.attackers.items():
        h = e.harmful
        rows.append(
            [
                name,
                f"{f(h.original.steps_to_target)} → {f(h.immunized.steps_to_target)}",
                f(h.slowdown) + ("" if h.reached else " (≥)"),
                f"{h.original.best_accuracy:.3f} → {h.immunized.best_accuracy:.3f}",
                f"{h.rfd:.1f}",
            ]
        )
    w, u = suite.worst_case, suite.utility
    lines = [
        f"worst case: {w.attacker} slowed {f(w.slowdown)}×{'' if w.reached else ' (≥)'}; "
        f"strongest on θ_I: {w.strongest} ({w.accuracy_immunized:.3f} vs "
        f"{w.accuracy_original:.3f} on θ0)"
    ]
    if u is not None:
        lines.append(
            f"utility: benign linear probe {u.accuracy_original:.3f} → "
            f"{u.accuracy_immunized:.3f} ({round(-u.drop_points, 1) + 0.0:+.1f} pts, cap "
            f"{u.cap_points:g}): {'passes' if u.passes else 'FAILS the cap'}"
        )
    return AttackOutput(
        "deep attack suite (harmful task)",
        ["attacker", "steps θ0 → θ_I", "slowdown", "best acc. θ0 → θ_I", "RFD %"],
        rows,
        [*lines, f"report: {Path(run_dir) / 'attack_report.md'}"],
    )
