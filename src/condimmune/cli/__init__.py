"""The ``condimmune`` command line: run, list, config, evaluate, attack, attack-matrix,
sweep, sweep-table (also ``python -m condimmune.cli``).

Every command runs inside one error boundary (:mod:`condimmune.cli.boundary`): an error
the user can cause ends with one ``error:`` line and exit code 2, a bug with an
``internal error`` line and exit code 3 (``--debug``, before or after the command, shows
the traceback). ``evaluate`` exits 1 when the recomputed metrics differ, ``sweep`` when
some of its runs failed, 130/143 after one ``interrupted:`` line when SIGINT/SIGTERM
stopped it (and it cleaned up).
"""

from __future__ import annotations

import atexit
import datetime as _dt
import os
import sys
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from condimmune.cli.boundary import Boundary, console, say
from condimmune.cli.progress import Bars
from condimmune.core.records import RecordError
from condimmune.experiments.registry import EXPERIMENT_DESCRIPTIONS

if TYPE_CHECKING:  # torch is imported by the commands that compute, not by --help
    from condimmune.experiments.report import Table as ResultTable

_DEBUG_HELP = "show the traceback of any error (for bug reports); before or after the command"
app = typer.Typer(
    cls=Boundary,
    add_completion=False,
    no_args_is_help=False,
    pretty_exceptions_enable=False,
    help="Model immunization from a condition-number perspective (ICML 2025), honestly measured.",
)


@app.callback()
def _options(debug: Annotated[bool, typer.Option("--debug", help=_DEBUG_HELP)] = False) -> None:
    """Model immunization from a condition-number perspective (ICML 2025), honestly measured."""


def _table(
    title: str | None,
    columns: list[str],
    rows: Iterable[Sequence[str]],
    *,
    header: bool = True,
    numbers: bool = True,
) -> None:
    """Print a table; with ``numbers``, every column but the first is right-aligned. A cell
    too wide for the terminal folds onto more lines instead of being cut with an ellipsis
    (a sweep arm's name carries its swept values: ``condnum [train.epochs=2,…]``); cells are
    plain text, never rich markup."""
    table = Table(title=title, show_header=header)
    for i, name in enumerate(columns):
        table.add_column(name, justify="right" if numbers and i else "left", overflow="fold")
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))  # plain text, never markup
    console.print(table)


def _print(tables: Iterable[ResultTable]) -> None:
    for t in tables:
        _table(t.title, t.columns, t.rows, header=t.columns[:1] != ["headline"])


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
ThreadsOpt = Annotated[
    int | None,
    typer.Option(
        min=0,
        help="CPU threads: numpy's BLAS for a linear run, torch for a deep run (config key "
        "`threads`; 0: the library's default, all cores)",
    ),
]


@app.command()
def run(
    experiment: ExperimentArg = None,
    out: Annotated[
        Path | None, typer.Option(help="run directory (default: runs/<name>-<time>)")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="random seed")] = None,
    set_: SetOpt = None,
    config: ConfigOpt = None,
    progress: ProgressOpt = True,
    threads: ThreadsOpt = None,
) -> None:
    """Immunize a model on real data, print the result table and write the run directory."""
    from condimmune.experiments.config import resolve_config
    from condimmune.experiments.pipeline import pipeline_for, resolve_plan
    from condimmune.experiments.runner import run_plan
    from condimmune.experiments.threads import use_threads

    extra = [] if threads is None else [f"threads={threads}"]
    cfg = resolve_config(experiment, config, [*(set_ or []), *extra], seed=seed)
    plan = resolve_plan(cfg)
    use_threads(plan.threads, plan.family)
    if out is None:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path("runs") / f"{plan.name}-{plan.method.name}-{stamp}"
    with Bars() as bars:
        result = run_plan(plan, out, progress=progress, on_progress=bars if progress else None)
    if result is None:  # a process of a multi-process run that does not write the run
        return
    pipeline = pipeline_for(plan.family)
    _print(pipeline.summary(result.metrics))
    for line in pipeline.closing_lines(result.metrics, out):
        console.print(line, highlight=False)
    console.print(f"run directory: {out}  (report: {out / 'report.md'})")


@app.command(name="list")
def list_() -> None:
    """Show the experiments and methods (ours and the baselines)."""
    from condimmune.methods.base import ModelFamily
    from condimmune.methods.registry import registered_methods

    experiments = [(e.value, text) for e, text in EXPERIMENT_DESCRIPTIONS.items()]
    methods = [
        (s.name, s.description, ", ".join(f.value for f in ModelFamily if s.supports(f)))
        for s in registered_methods()
    ]
    _table("experiments", ["name", "description"], experiments, numbers=False)
    columns = ["name", "description", "runs on"]
    _table("methods (--set train.method=NAME)", columns, methods, numbers=False)


@app.command(name="config")
def config_(
    experiment: ExperimentArg = None, set_: SetOpt = None, config: ConfigOpt = None
) -> None:
    """Print an experiment's resolved config as YAML (usable as --config), each key with its
    type, default and description."""
    from condimmune.experiments.config import resolve_config
    from condimmune.experiments.config.describe import describe_config

    typer.echo(describe_config(resolve_config(experiment, config, set_ or [])), nl=False)


@app.command()
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="a run directory written by `condimmune run`")],
) -> None:
    """Recompute a saved run's metrics from its files and compare with its metrics.json."""
    from condimmune.experiments.library import evaluate_run
    from condimmune.experiments.pipeline import pipeline_for
    from condimmune.experiments.records import metric_differences
    from condimmune.experiments.registry import experiment_spec

    _use_the_runs_threads(run_dir)
    try:
        recomputed, saved = evaluate_run(run_dir)
    except RecordError as exc:  # metrics.json does not hold a complete, well-typed record
        say("error:", f"recomputed metrics differ: {exc}")
        raise typer.Exit(1) from None
    _print(pipeline_for(experiment_spec(recomputed.experiment).family).summary(recomputed))
    differ = metric_differences(recomputed, saved)
    if differ:
        say("error:", f"recomputed metrics differ: {', '.join(differ)}")
        raise typer.Exit(1)
    console.print("recomputed metrics match metrics.json")


def _use_the_runs_threads(run_dir: Path) -> None:
    """Recompute on the threads the run was made with: a BLAS on more threads sums in
    another order, which moves a raw-pixel run's κ's (rank cut-off) past the comparison's
    tolerance. A config.yaml that does not load leaves the default; reading the run then
    reports it."""
    from condimmune.core.errors import UserError
    from condimmune.experiments.config import ConfigError, load_config
    from condimmune.experiments.registry import experiment_spec
    from condimmune.experiments.threads import use_threads

    try:
        config = load_config(run_dir / "config.yaml")
    except (ConfigError, UserError, OSError):
        return
    use_threads(config.threads, experiment_spec(config.experiment).family)


@app.command()
def attack(
    run_dir: Annotated[Path, typer.Argument(help="a run directory written by `condimmune run`")],
    attackers: Annotated[
        str | None,
        typer.Option(help="comma-separated attackers, or 'all' (= --set attack.attackers=...)"),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="an attack.* key of the run's config, e.g. --set attack.suite_budget=100 "
            "(linear) or --set attack.trials=5 (deep)",
        ),
    ] = None,
    progress: ProgressOpt = True,
) -> None:
    """Attack a run (linear: raw vs immunized features; deep: θ0 vs θ_I, each attacker with a
    hyperparameter search); add the results to metrics.json, write attack_report.md."""
    from condimmune.experiments.attack import attack_run_dir, attack_settings_note
    from condimmune.experiments.threads import keep_freed_memory

    keep_freed_memory()  # both families' suites train heads or networks with torch

    chosen = [] if attackers is None else [f"attack.attackers={attackers}"]
    if note := attack_settings_note(run_dir, [*(set_ or []), *chosen]):
        console.print(note)
    with Bars() as bars:  # its first bar once the run and the options are checked
        outcome = attack_run_dir(
            run_dir, [*(set_ or []), *chosen], on_progress=bars if progress else None
        )
    _print([outcome.summary])
    console.print("\n".join(outcome.lines))


@app.command(name="attack-matrix")
def attack_matrix(
    runs: Annotated[
        list[Path],
        typer.Argument(help="deep run directories after `condimmune attack`, or folders of them"),
    ],
    out: Annotated[Path, typer.Option(help="new directory for the matrix report")],
) -> None:
    """Combine attacked deep runs: per method and attacker the harmful slowdown (mean ± std
    over seeds), a heat map on a log scale, the worst-case curves and a verdict per method."""
    from condimmune.experiments.attack_matrix import write_attack_matrix

    done = write_attack_matrix(runs, out)
    bare = f", {done.unverified} a bare metrics.json (not checked)" if done.unverified else ""
    console.print(f"{len(done.runs)} runs{bare}: {out / 'attack_matrix.md'}")


@app.command()
def sweep(
    experiment: ExperimentArg = None,
    out: Annotated[Path | None, typer.Option(help="sweep directory")] = None,
    methods: Annotated[str, typer.Option(help="comma-separated methods")] = "condnum",
    seeds: Annotated[str, typer.Option(help="comma-separated seeds")] = "0",
    pairs: Annotated[
        str | None,
        typer.Option(
            help="digit-pair experiments: 'all' (90 ordered pairs, the default) or e.g. "
            "'1-7,3-8'; refused for the others"
        ),
    ] = None,
    workers: Annotated[int, typer.Option(help="parallel processes (at most one per run)")] = 2,
    set_: SetOpt = None,
    config: ConfigOpt = None,
    progress: ProgressOpt = True,
    resume: Annotated[
        bool, typer.Option(help="reuse finished runs in --out and run only the rest")
    ] = False,
) -> None:
    """Run an experiment over methods, seeds, digit pairs and listed --set values
    (--set train.epochs=1,3 runs both) in parallel; write one table.

    A run that fails is listed with its error and does not stop the others; the command
    then exits with code 1 after writing the tables."""
    from condimmune.experiments.config import resolve_config
    from condimmune.experiments.registry import experiment_spec
    from condimmune.experiments.sweep import sweep_command
    from condimmune.experiments.sweep_jobs import split_grid
    from condimmune.experiments.threads import use_threads

    sets = set_ or []
    plain, grid = split_grid(resolve_config(experiment, config, []), sets)
    cfg = resolve_config(experiment, config, plain)
    use_threads(cfg.threads, experiment_spec(cfg.experiment).family)
    result = sweep_command(
        cfg,
        methods=methods,
        seeds=seeds,
        pairs=pairs,
        out=out,
        workers=workers,
        progress=progress,
        resume=resume,
        grid=grid,
    )
    _print([result.summary])
    console.print(f"sweep directory: {result.out}  (table: {result.out / 'sweep.md'})")
    if result.failed:
        first = result.failed[0]
        say(
            "error:",
            f"{len(result.failed)} of {len(result.rows)} runs failed, first: {first.run_dir}: "
            f"{first.error}",
        )
        raise typer.Exit(1)


@app.command(name="sweep-table")
def sweep_table(
    sweeps: Annotated[
        list[Path],
        typer.Argument(help="sweep directories (or their sweep.csv files) to combine"),
    ],
    out: Annotated[Path, typer.Option(help="new directory for the combined tables")],
) -> None:
    """Combine sweeps run apart (other methods, pairs or machines) into one sweep.csv,
    sweep.md and one heat map per method, as a single sweep would have written them."""
    from condimmune.experiments.sweep_combine import combine_sweeps

    rows, summary = combine_sweeps(sweeps, out)
    _table(f"{len(rows)} runs from {len(sweeps)} sweeps", summary.columns, summary.rows)
    console.print(f"combined tables: {out / 'sweep.md'}")


def main() -> None:
    """The ``condimmune`` entry point: :data:`app`, then the exit without the interpreter's
    teardown of every module, once the ``atexit`` handlers have run and stdout and stderr are
    flushed. Freeing torch's modules and tensors object by object cost ≈ 0.5–1 s of every
    command that computes (issue #30). When a non-daemon thread is still alive the exit is
    the ordinary one, which waits for it."""
    try:
        app()
        code: object = 0
    except SystemExit as stop:
        code = stop.code
    if isinstance(code, str):  # what sys.exit("message") prints
        print(code, file=sys.stderr)
        code = 1
    status = 0 if code is None else int(code) if isinstance(code, int) else 1
    if any(not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(status)
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
