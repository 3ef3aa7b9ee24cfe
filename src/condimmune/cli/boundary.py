"""The command line's one error boundary: an error the user can cause ends with one line
``error: <what>: <where>; <how to fix>`` on stderr and exit code 2
(:func:`condimmune.experiments.errors.user_message` is the one table of such errors); any
other exception is a bug: a short ``internal error`` line and exit code 3; ``--debug``
shows the traceback instead. A command that cleaned up after SIGINT/SIGTERM exits 130/143
after one ``interrupted:`` line."""

from __future__ import annotations

import copy
import warnings
from typing import Any

import typer
from rich.console import Console
from rich.text import Text
from tqdm.auto import tqdm
from typer.core import TyperGroup
from typer.exceptions import TyperException

from condimmune.experiments.errors import user_message
from condimmune.experiments.interrupt import Interrupted

# no rich markup anywhere: what is printed is data (a sweep arm "condnum [train.epochs=2]",
# a path with brackets), and markup would silently drop the bracketed part
console = Console(markup=False)
err_console = Console(stderr=True, markup=False)

USER_ERROR_EXIT, INTERNAL_ERROR_EXIT = 2, 3


def say(label: str, message: str, style: str = "bold red") -> None:
    """One line on stderr (never wrapped, never read as rich markup), after closing the
    progress bars that an error left open (so it starts a line of its own)."""
    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()
    line = " ".join(message.split())
    err_console.print(Text.assemble((label, style), " ", line), soft_wrap=True, highlight=False)


def show_warning(message: Warning | str, category: type[Warning], *_args: Any, **_kw: Any) -> None:
    say("warning:", str(message), "bold yellow")


class Boundary(TyperGroup):
    """The command line's one error boundary (see the module docstring)."""

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)  # which takes the global --debug too:
        if command is not None and "debug" not in [p.name for p in command.params]:
            command.params.append(debug := copy.copy(self.params[0]))  # _options' --debug
            debug.expose_value, debug.callback = False, lambda c, _, on: c.meta.update(debug=on)
        return command

    def invoke(self, ctx: Any) -> Any:
        with warnings.catch_warnings():
            warnings.showwarning = show_warning
            try:
                return super().invoke(ctx)
            except (TyperException, typer.Exit, typer.Abort):
                raise
            except Interrupted as exc:  # a command that cleaned up after SIGINT or SIGTERM
                say("interrupted:", str(exc), "bold yellow")
                raise typer.Exit(exc.exit_status) from None
            except Exception as exc:
                if ctx.params.get("debug") or ctx.meta.get("debug"):
                    raise
                message = user_message(exc)
                if message is not None:
                    say("error:", message)
                    raise typer.Exit(USER_ERROR_EXIT) from None
                first = (str(exc).splitlines() or [""])[0][:300]
                say(
                    "internal error:",
                    f"{type(exc).__name__}: {first} (a bug in condimmune, not in your input); "
                    "rerun with --debug to see the traceback, and please report it",
                )
                raise typer.Exit(INTERNAL_ERROR_EXIT) from None
