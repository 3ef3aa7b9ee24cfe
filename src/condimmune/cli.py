"""The ``condimmune`` command line: run, list, evaluate, sweep.

Errors in the user's input (unknown experiment/method/key, missing data, bad values) end
with a one-line message on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import datetime as _dt
import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from tqdm.auto import tqdm

from condimmune.core.records import RecordError
from condimmune.experiments.config import (
    Config,
    DeepExperimentConfig,
    ExperimentConfig,
    apply_overrides,
    default_config,
    load_config,
)
from condimmune.experiments.records import DeepRunMetrics, LinearRunMetrics
from condimmune.experiments.registry import EXPERIMENT_DESCRIPTIONS, Experiment
from condimmune.methods.registry import registered_methods

app = typer.Typer(
    add_completion=False,
    no_args_is_help=False,
    help="Model immunization from a condition-number perspective (ICML 2025), honestly measured.",
)
console = Console()
err_console = Console(stderr=True)

USER_ERRORS = (ValueError, TypeError, FileNotFoundError, FloatingPointError)


P = ParamSpec("P")
R = TypeVar("R")


def _user_errors(fn: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
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


def _print_metrics(m: LinearRunMetrics) -> None:
    from condimmune.experiments.report import headline, summary_rows

    table = Table(title=f"{m.experiment} · {m.method} · seed {m.seed}")
    table.add_column("quantity")
    table.add_column("raw", justify="right")
    table.add_column("immunized", justify="right")
    for quantity, raw, immunized in summary_rows(m):
        table.add_row(quantity, raw, immunized)
    console.print(table)
    head = Table(show_header=False)
    head.add_column("headline")
    head.add_column("value", justify="right")
    for name, value in headline(m):
        head.add_row(name, value)
    console.print(head)


def _print_deep_metrics(m: DeepRunMetrics) -> None:
    from condimmune.experiments.deep_report import deep_headline

    table = Table(title=f"{m.experiment} · {m.method} · seed {m.seed}")
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
    if isinstance(cfg, DeepExperimentConfig):
        from condimmune.experiments.deep_runner import run_deep_experiment

        deep_art = run_deep_experiment(cfg, out, progress=progress)
        if deep_art.metrics is None:  # a non-zero rank of a multi-process run
            return
        _print_deep_metrics(deep_art.metrics)
    else:
        from condimmune.experiments.linear_runner import run_experiment

        _print_metrics(run_experiment(cfg, out, progress=progress).metrics)
    console.print(f"run directory: {out}  (report: {out / 'report.md'})")


@app.command(name="list")
def list_() -> None:
    """Show the experiments and methods (ours and the baselines)."""
    experiments = [(e.value, text, "") for e, text in EXPERIMENT_DESCRIPTIONS.items()]
    methods = [
        (
            spec.name,
            spec.description,
            ", ".join(
                where
                for where, ok in (("linear", spec.supports_linear), ("deep", spec.supports_deep))
                if ok
            ),
        )
        for spec in registered_methods()
    ]
    for title, rows in (
        ("experiments", experiments),
        ("methods (--set train.method=NAME)", methods),
    ):
        table = Table(title=title)
        table.add_column("name")
        table.add_column("description")
        if rows is methods:
            table.add_column("runs on")
        for row in rows:
            table.add_row(*(row if rows is methods else row[:2]))
        console.print(table)


@app.command()
@_user_errors
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="a run directory written by `condimmune run`")],
) -> None:
    """Recompute a saved run's metrics from its files and compare with its metrics.json."""
    from condimmune.experiments.linear_runner import evaluate_run
    from condimmune.experiments.records import metric_differences

    try:
        recomputed, saved = evaluate_run(run_dir)
    except RecordError as exc:  # metrics.json does not hold a complete, well-typed record
        err_console.print(f"[bold red]error:[/] recomputed metrics differ: {exc}", highlight=False)
        raise typer.Exit(1) from None
    _print_metrics(recomputed)
    differ = metric_differences(recomputed, saved)
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
    from condimmune.attacks.attackers import Attacker
    from condimmune.experiments.attack_runner import attack_run
    from condimmune.experiments.report import format_number

    names = [a.value for a in Attacker] if attackers == "all" else attackers.split(",")
    bar = tqdm(total=len(names), desc="attackers", disable=not progress, leave=False)

    def tick(_attacker: str) -> None:
        bar.update()

    result = attack_run(
        run_dir, [n.strip() for n in names], budget=budget, target=target, on_progress=tick
    )
    bar.close()
    table = Table(title=f"attack suite (target {result.target:g}, budget {result.budget})")
    for col in (
        "attacker",
        "harmful steps raw → imm.",
        "harmful slowdown",
        "benign slowdown",
        "best harmful (imm.)",
    ):
        table.add_column(col, justify="right")
    for name, d in result.summaries.items():
        table.add_row(
            name,
            f"{format_number(d.harmful_steps_raw)} → {format_number(d.harmful_steps_immunized)}",
            format_number(d.harmful_slowdown),
            format_number(d.benign_slowdown),
            format_number(d.harmful_best),
        )
    console.print(table)
    for label, w in (
        ("worst case", result.worst),
        ("worst case, first-order attackers", result.worst_first_order),
    ):
        if w is not None:
            console.print(
                f"{label}: {w.attacker_immunized} needs {w.steps_immunized} steps on "
                f"immunized features vs {w.attacker_raw} {w.steps_raw} on raw inputs: "
                f"slowdown {format_number(w.harmful_slowdown)}"
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
    from condimmune.experiments.report import format_number
    from condimmune.experiments.sweep import parse_pairs, run_sweep
    from condimmune.experiments.sweep_tables import summarize

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
    if not isinstance(cfg, ExperimentConfig):
        raise ValueError(f"sweep runs linear experiments; {cfg.experiment} is a deep experiment")
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
        if not s.runs:
            table.add_row(s.method, "0", *["—"] * 5)
            continue
        table.add_row(
            s.method,
            str(s.runs),
            format_number(s.mean_rir),
            format_number(s.mean_rir_paper_compatible),
            format_number(s.mean_bound),
            f"{s.benign_kept}/{s.runs}",
            format_number(s.mean_wall_seconds),
        )
    console.print(table)
    console.print(f"sweep directory: {out}  (table: {out / 'sweep.md'})")
    failed = [r for r in rows if r.failed]
    if failed:
        err_console.print(
            f"[bold red]error:[/] {len(failed)} of {len(rows)} runs failed, first: "
            f"{failed[0].run_dir}: {failed[0].error}"
        )
        raise typer.Exit(1)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
