"""Plots and ``report.md`` for a run directory (matplotlib's object API, no global state)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from condimmune.experiments.rundir import replace_atomically
from condimmune.core.spectral import covariance_eigenvalues

if TYPE_CHECKING:
    from condimmune.experiments.linear_runner import RunArtifacts

__all__ = ["format_number", "summary_rows", "write_attack_report", "write_report"]


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


def summary_rows(m: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(quantity, raw, immunized) rows shared by the CLI table and report.md."""
    bt = m["benign_task"]
    rows = [
        (
            "κ benign (numerical range)",
            m["kappa"]["benign"]["raw"],
            m["kappa"]["benign"]["immunized"],
        ),
        (
            "κ harmful (numerical range)",
            m["kappa"]["harmful"]["raw"],
            m["kappa"]["harmful"]["immunized"],
        ),
        (
            "κ benign (paper-compatible)",
            m["kappa_paper_compatible"]["benign"]["raw"],
            m["kappa_paper_compatible"]["benign"]["immunized"],
        ),
        (
            "κ harmful (paper-compatible)",
            m["kappa_paper_compatible"]["harmful"]["raw"],
            m["kappa_paper_compatible"]["harmful"]["immunized"],
        ),
        (f"benign task {bt['metric']} (held out)", bt["raw"], bt["immunized"]),
        (
            f"attack steps to {m['attack']['target']:g} (harmful)",
            m["attack"]["steps_raw"],
            m["attack"]["steps_immunized"],
        ),
        (
            f"attack steps to {m['attack']['target']:g} (benign)",
            m["attack"]["benign_steps_raw"],
            m["attack"]["benign_steps_immunized"],
        ),
    ]
    for name, r in m["attack"].get("rescaling_attackers", {}).items():
        label = {"standardize": "standardizes", "whiten": "PCA-whitens"}[name]
        rows.append(
            (f"harmful steps if attacker {label} first", r["steps_raw"], r["steps_immunized"])
        )
    return [(name, format_number(a), format_number(b)) for name, a, b in rows]


def headline(m: dict[str, Any]) -> list[tuple[str, str]]:
    bound = m["rir_bound"]
    bound_text = "unbounded" if bound["unbounded"] else format_number(bound["value"])
    fraction = m.get("rir_fraction_of_bound")
    return [
        ("RIR (numerical range, headline)", format_number(m["rir"])),
        ("RIR (paper-compatible)", format_number(m["rir_paper_compatible"])),
        (
            "harmful κ ratio (i) / benign κ ratio (ii)",
            f"{format_number(m['harmful_ratio'])} / {format_number(m['benign_ratio'])}",
        ),
        ("RIR bound over invertible linear extractors", bound_text),
        ("RIR / bound", format_number(fraction) if fraction is not None else "— (unbounded)"),
        (
            "harmful attack slowdown (steps immunized / raw)",
            format_number(m["attack"]["harmful_slowdown"]),
        ),
        (
            "immunized by Def. 3.1 (κ_H ×10, κ_P not larger, loss kept)",
            format_number(m["immunization_check"]["immunized"]),
        ),
    ]


def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110, bbox_inches="tight")


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
            curve = res.relative_suboptimality.clamp_min(1e-300)
            ax.semilogy(curve.numpy(), style, label=f"{label} ({res.steps_to_target:,} steps)")
        ax.axhline(target, color="grey", lw=0.8, ls=":")
        ax.set_title(f"{name} task: GD linear probing, step 1/L")
        ax.set_xlabel("attack step")
        ax.set_ylabel("(L(w_t) − L*) / (L(w_0) − L*)")
        ax.legend(fontsize=8)
    _save(fig, path)


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
        ax.legend(fontsize=8)
    _save(fig, path)


def _training_figure(art: RunArtifacts, path: Path) -> None:
    h = art.history
    fig = Figure(figsize=(10, 3.5))
    ax = fig.add_subplot(1, 2, 1)
    epochs = range(1, len(h.task_loss) + 1)
    kappa = art.metrics["kappa"]
    for task, values, color in (
        ("benign", h.log_kappa_benign, "C0"),
        ("harmful", h.log_kappa_harmful, "C1"),
    ):
        ax.plot(epochs, values, color=color, label=f"log κ {task}")
        ax.axhline(
            math.log(kappa[task]["raw"]), color=color, ls="--", lw=0.8, label=f"log κ {task}, raw"
        )
    ax.set_xlabel("epoch")
    ax.legend(fontsize=8)
    ax.set_title("condition numbers during training")
    ax2 = fig.add_subplot(1, 2, 2)
    ax2.plot(epochs, h.task_loss)
    ax2.set_xlabel("epoch")
    ax2.set_title("benign task loss")
    _save(fig, path)


def write_report(directory: Path, art: RunArtifacts) -> None:
    """Write the PNG plots and ``report.md`` into ``directory``."""
    m = art.metrics
    _attack_figure(art, directory / "attack_curves.png")
    _spectra_figure(art, directory / "spectra.png")
    _training_figure(art, directory / "training.png")
    lines = [
        f"# {m['experiment']} — {m['method']} (seed {m['seed']})",
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
        f"**Bound.** {m['rir_bound']['reason']}.",
        "",
    ]
    if m["rir_bound"]["unbounded"]:
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
        *[f"- {n}" for n in m["notes"]],
        "",
        f"Wall time {m['wall_seconds']:.2f} s (training {m['train_seconds']:.2f} s).",
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


def write_attack_report(
    directory: Path,
    entries: dict,
    worst: dict[str, Any],
    *,
    target: float,
    budget: int,
    worst_first_order: dict[str, Any] | None = None,
) -> None:
    """``attack_report.md`` and ``attacks_harmful.png``/``attacks_benign.png`` for a run."""
    for task in ("harmful", "benign"):
        cols = 4
        rows = math.ceil(len(entries) / cols)
        fig = Figure(figsize=(3.2 * cols, 2.6 * rows))
        for i, (attacker, entry) in enumerate(entries.items()):
            ax = fig.add_subplot(rows, cols, i + 1)
            for label, outcome, style in (
                ("raw", getattr(entry, f"{task}_raw"), "--"),
                ("immunized", getattr(entry, f"{task}_immunized"), "-"),
            ):
                curve = outcome.curve.clamp(1e-18, 1e3).numpy()
                ax.semilogy(curve, style, label=label)
            ax.axhline(target, color="grey", lw=0.8, ls=":")
            ax.set_title(attacker.value, fontsize=9)
            ax.tick_params(labelsize=7)
            if i == 0:
                ax.legend(fontsize=7)
        fig.suptitle(f"{task} task: relative suboptimality per attack step")
        fig.tight_layout()
        replace_atomically(
            directory / f"attacks_{task}.png",
            lambda tmp, fig=fig: _save(fig, tmp),
        )
    lines = [
        "# Attack suite",
        "",
        f"Target: relative suboptimality {target:g} of the squared probing loss; budget "
        f"{budget} steps per attacker (unreached targets count as {budget + 1} steps, so "
        "those slowdowns are lower bounds).",
        "",
        f"**Worst case (the attacker's best choice):** fastest on raw inputs "
        f"`{worst['attacker_raw']}` ({worst['steps_raw']} steps), fastest on immunized "
        f"features `{worst['attacker_immunized']}` ({worst['steps_immunized']} steps): "
        f"slowdown **{format_number(worst['harmful_slowdown'])}**.",
        "",
    ]
    if worst_first_order is not None:
        w = worst_first_order
        lines += [
            f"Among first-order attackers only (no least-squares solve, no whitening): "
            f"`{w['attacker_raw']}` {w['steps_raw']} steps raw vs `{w['attacker_immunized']}` "
            f"{w['steps_immunized']} immunized: slowdown "
            f"**{format_number(w['harmful_slowdown'])}**.",
            "",
        ]
    lines += [
        "| attacker | harmful steps raw → imm. | harmful seconds raw → imm. | harmful slowdown "
        "| benign steps raw → imm. | benign slowdown | best harmful value (imm.) | setting |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for attacker, entry in entries.items():
        d = entry.to_dict(budget)
        lines.append(
            f"| {attacker.value} | {format_number(d['harmful_steps_raw'])} → "
            f"{format_number(d['harmful_steps_immunized'])} | "
            f"{format_number(d['harmful_seconds_raw'])} → "
            f"{format_number(d['harmful_seconds_immunized'])} | "
            f"{format_number(d['harmful_slowdown'])} | {format_number(d['benign_steps_raw'])} → "
            f"{format_number(d['benign_steps_immunized'])} | "
            f"{format_number(d['benign_slowdown'])} | {format_number(d['harmful_best'])} | "
            f"{d['setting_immunized']} |"
        )
    lines += ["", "![harmful](attacks_harmful.png)", "", "![benign](attacks_benign.png)", ""]
    replace_atomically(directory / "attack_report.md", lambda tmp: tmp.write_text("\n".join(lines)))
    # The run's report.md gets (or has replaced) the same section, so one page has it all.
    report = directory / "report.md"
    if report.is_file():
        head = report.read_text().split(ATTACK_SECTION)[0].rstrip("\n")
        section = "\n".join([ATTACK_SECTION, "", *lines[2:]])
        replace_atomically(report, lambda tmp: tmp.write_text(f"{head}\n\n{section}"))


ATTACK_SECTION = "## Attack suite (`condimmune attack`)"
