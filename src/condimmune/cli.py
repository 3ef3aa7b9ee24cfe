"""The ``condimmune`` command line: run, list, evaluate, sweep.

Errors in the user's input (unknown experiment/method/key, missing data, bad values) end
with a one-line message on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import datetime as _dt
import functools
import math
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from tqdm.auto import tqdm

from condimmune.experiments.config import (
    EXPERIMENT_DESCRIPTIONS,
    METHOD_DESCRIPTIONS,
    Config,
    Experiment,
    apply_overrides,
    default_config,
    is_deep,
    load_config,
)

app = typer.Typer(
    add_completion=False,
    no_args_is_help=False,
    help="Model immunization from a condition-number perspective (ICML 2025), honestly measured.",
)
console = Console()
err_console = Console(stderr=True)

USER_ERRORS = (ValueError, TypeError, FileNotFoundError, FloatingPointError)


def _user_errors(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as exc:
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def _resolve_config(
    experiment: str | None, config_file: Path | None, seed: int | None, sets: list[str]
) -> Config:
    if config_file is not None:
        config = load_config(config_file, experiment)
        if experiment is not None and config.experiment != experiment:
            raise ValueError(
                f"{config_file} is for experiment {config.experiment!r}, not {experiment!r}"
            )
    else:
        config = default_config(experiment or Experiment.MNIST_PAIR.value)
    if seed is not None:
        sets = [*sets, f"seed={seed}"]
    return apply_overrides(config, sets)


def _print_metrics(m: dict) -> None:
    from condimmune.experiments.report import headline, summary_rows

    table = Table(title=f"{m['experiment']} · {m['method']} · seed {m['seed']}")
    table.add_column("quantity")
    table.add_column("raw", justify="right")
    table.add_column("immunized", justify="right")
    for row in summary_rows(m):
        table.add_row(*row)
    console.print(table)
    head = Table(show_header=False)
    head.add_column("headline")
    head.add_column("value", justify="right")
    for row in headline(m):
        head.add_row(*row)
    console.print(head)


def _print_deep_metrics(m: dict) -> None:
    from condimmune.experiments.deep_report import deep_headline

    table = Table(title=f"{m['experiment']} · {m['method']} · seed {m['seed']}")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    for row in deep_headline(m):
        table.add_row(*row)
    console.print(table)


ExperimentArg = Annotated[
    str | None,
    typer.Argument(help="experiment name (see `condimmune list`); default: mnist-pair"),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="override a config key, e.g. --set train.epochs=5 (repeatable)"),
]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="YAML file over the experiment's defaults")
]
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="show progress bars")]


@app.command()
@_user_errors
def run(
    experiment: ExperimentArg = None,
    out: Annotated[
        Path | None, typer.Option(help="run directory (default: runs/<name>-<time>)")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="random seed")] = None,
    set_: SetOpt = None,
    config: ConfigOpt = None,
    progress: ProgressOpt = True,
) -> None:
    """Immunize a model on real data, print the result table and write the run directory."""
    cfg = _resolve_config(experiment, config, seed, set_ or [])
    if out is None:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path("runs") / f"{cfg.experiment}-{cfg.train.method}-{stamp}"
    if is_deep(cfg):
        from condimmune.experiments.deep_runner import run_deep_experiment

        deep_art = run_deep_experiment(cfg, out, progress=progress)
        if not deep_art.primary:
            return
        _print_deep_metrics(deep_art.metrics)
    else:
        from condimmune.experiments.linear_runner import run_experiment

        _print_metrics(run_experiment(cfg, out, progress=progress).metrics)
    console.print(f"run directory: {out}  (report: {out / 'report.md'})")


@app.command(name="list")
def list_() -> None:
    """Show the experiments and methods (ours and the baselines)."""
    for title, descriptions in (
        ("experiments", EXPERIMENT_DESCRIPTIONS),
        ("methods (--set train.method=NAME)", METHOD_DESCRIPTIONS),
    ):
        table = Table(title=title)
        table.add_column("name")
        table.add_column("description")
        for choice, text in descriptions.items():
            table.add_row(choice.value, text)
        console.print(table)


@app.command()
@_user_errors
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="a run directory written by `condimmune run`")],
) -> None:
    """Recompute a saved run's metrics from its files and compare with its metrics.json."""
    from condimmune.experiments.linear_runner import evaluate_run, metrics_agree

    recomputed, saved = evaluate_run(run_dir)
    _print_metrics(recomputed)
    differ = metrics_agree(recomputed, saved)
    if differ:
        err_console.print(f"[bold red]error:[/] recomputed metrics differ: {', '.join(differ)}")
        raise typer.Exit(1)
    console.print("recomputed metrics match metrics.json")


@app.command()
@_user_errors
def attack(
    run_dir: Annotated[Path, typer.Argument(help="a run directory written by `condimmune run`")],
    attackers: Annotated[
        str, typer.Option(help="comma-separated attackers, or 'all' (see docs)")
    ] = "all",
    budget: Annotated[int, typer.Option(help="steps per attacker")] = 500,
    target: Annotated[float | None, typer.Option(help="default: the run's attack.target")] = None,
    progress: ProgressOpt = True,
) -> None:
    """Fine-tune on the harmful and benign tasks with many attackers, raw vs immunized;
    add the results to metrics.json and write attack_report.md with plots."""
    from condimmune.attacks.suite import (
        DECOMPOSITION_ATTACKERS,
        Attacker,
        run_attack_suite,
        worst_case,
    )
    from condimmune.experiments.report import format_number, write_attack_report
    from condimmune.experiments.linear_runner import load_run, update_metrics

    config, data, model, _, _ = load_run(run_dir)
    names = [a.value for a in Attacker] if attackers == "all" else attackers.split(",")
    if budget < 1:
        raise ValueError(f"--budget must be ≥ 1, got {budget}")
    goal = config.attack.target if target is None else target
    bar = tqdm(total=len(names), desc="attackers", disable=not progress, leave=False)
    entries = run_attack_suite(
        [n.strip() for n in names],
        benign=(data.benign.x_train, data.benign.y_train),
        harmful=(data.harmful.x_train, data.harmful.y_train),
        weight=model.weight,
        target=goal,
        budget=budget,
        seed=config.seed,
        on_progress=lambda _name: bar.update(),
    )
    bar.close()
    worst = worst_case(entries, budget)
    additions = {
        "attacks": {a.value: e.to_dict(budget) for a, e in entries.items()},
        "attack_worst_case": worst,
    }
    if set(entries) - DECOMPOSITION_ATTACKERS:
        additions["attack_worst_case_first_order"] = worst_case(
            entries, budget, exclude=DECOMPOSITION_ATTACKERS
        )
    update_metrics(run_dir, additions)
    write_attack_report(
        Path(run_dir),
        entries,
        worst,
        target=goal,
        budget=budget,
        worst_first_order=additions.get("attack_worst_case_first_order"),
    )
    table = Table(title=f"attack suite (target {goal:g}, budget {budget})")
    for col in (
        "attacker",
        "harmful steps raw → imm.",
        "harmful slowdown",
        "benign slowdown",
        "best harmful (imm.)",
    ):
        table.add_column(col, justify="right")
    for a, e in entries.items():
        d = e.to_dict(budget)
        table.add_row(
            a.value,
            f"{format_number(d['harmful_steps_raw'])} → "
            f"{format_number(d['harmful_steps_immunized'])}",
            format_number(d["harmful_slowdown"]),
            format_number(d["benign_slowdown"]),
            format_number(d["harmful_best"]),
        )
    console.print(table)
    for label, key in (
        ("worst case", "attack_worst_case"),
        ("worst case, first-order attackers", "attack_worst_case_first_order"),
    ):
        if key in additions:
            w = additions[key]
            console.print(
                f"{label}: {w['attacker_immunized']} needs {w['steps_immunized']} steps on "
                f"immunized features vs {w['attacker_raw']} {w['steps_raw']} on raw inputs: "
                f"slowdown {format_number(w['harmful_slowdown'])}"
            )
    console.print(f"report: {Path(run_dir) / 'attack_report.md'}")


@app.command()
@_user_errors
def sweep(
    experiment: ExperimentArg = None,
    out: Annotated[Path | None, typer.Option(help="sweep directory")] = None,
    methods: Annotated[str, typer.Option(help="comma-separated methods")] = "condnum",
    seeds: Annotated[str, typer.Option(help="comma-separated seeds")] = "0",
    pairs: Annotated[str, typer.Option(help="'all' (90 ordered pairs) or e.g. '1-7,3-8'")] = "all",
    workers: Annotated[int, typer.Option(help="parallel processes")] = 2,
    set_: SetOpt = None,
    config: ConfigOpt = None,
    progress: ProgressOpt = True,
    resume: Annotated[
        bool, typer.Option(help="reuse finished runs in --out and run only the rest")
    ] = False,
) -> None:
    """Run an experiment over methods, seeds and digit pairs in parallel; write one table.

    A run that fails is listed with its error and does not stop the others; the command
    then exits with code 1 after writing the tables."""
    from condimmune.experiments.sweep import parse_pairs, run_sweep, summarize

    cfg = _resolve_config(experiment, config, None, set_ or [])
    try:
        seed_list = [int(s) for s in seeds.split(",")]
    except ValueError:
        raise ValueError(f"--seeds must be comma-separated integers, got {seeds!r}") from None
    if workers < 1:
        raise ValueError(f"--workers must be ≥ 1, got {workers}")
    if out is None:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path("runs") / f"sweep-{cfg.experiment}-{stamp}"
    rows = run_sweep(
        cfg,
        methods=[m.strip() for m in methods.split(",")],
        seeds=seed_list,
        pairs=parse_pairs(pairs),
        out_dir=out,
        workers=workers,
        progress=progress,
        resume=resume,
    )
    table = Table(title=f"sweep: {cfg.experiment} ({len(rows)} runs)")
    for col in (
        "method",
        "runs",
        "mean RIR",
        "mean RIR (paper-compat.)",
        "mean bound",
        "κ_P kept",
        "s/run",
    ):
        table.add_column(col, justify="right")
    for s in summarize(rows):
        if not s["runs"]:
            table.add_row(s["method"], "0", *["—"] * 5)
            continue
        table.add_row(
            s["method"],
            str(s["runs"]),
            f"{s['mean_rir']:.4g}",
            f"{s['mean_rir_paper_compatible']:.4g}",
            "inf" if math.isinf(s["mean_bound"]) else f"{s['mean_bound']:.4g}",
            f"{s['benign_kept']}/{s['runs']}",
            f"{s['mean_wall_seconds']:.2f}",
        )
    console.print(table)
    console.print(f"sweep directory: {out}  (table: {out / 'sweep.md'})")
    failed = [r for r in rows if r["error"]]
    if failed:
        err_console.print(
            f"[bold red]error:[/] {len(failed)} of {len(rows)} runs failed, first: "
            f"{failed[0]['run_dir']}: {failed[0]['error']}"
        )
        raise typer.Exit(1)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
