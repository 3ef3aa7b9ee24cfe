"""Reports for both families: number formatting, figures (matplotlib's object API, no global
state), and the one report skeleton (:class:`~condimmune.experiments.pipeline.ReportPage` →
Markdown and PNG files)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "PLOTTED_POINTS",
    "FigureSpec",
    "ReportPage",
    "Table",
    "format_number",
    "page_markdown",
    "plotted_points",
    "replace_section",
    "save_figure",
    "write_page",
]


@dataclass(frozen=True)
class Table:
    """A table to print or render: column headers and rows of cells (text)."""

    columns: list[str]
    rows: list[list[str]]
    title: str | None = None

    def markdown(self) -> list[str]:
        return [
            "| " + " | ".join(self.columns) + " |",
            "|" + "---|" * len(self.columns),
            *("| " + " | ".join(row) + " |" for row in self.rows),
        ]


@dataclass(frozen=True)
class FigureSpec:
    """A figure file of a report: its name and how to draw it into a path."""

    name: str
    draw: Callable[[Path], None]


@dataclass(frozen=True)
class ReportPage:
    """A report (``report.md``, ``attack_report.md``): title, the lines before the tables,
    the tables, the lines after them, and the figures (drawn, then shown at the end)."""

    title: str
    intro: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    body: list[str] = field(default_factory=list)
    figures: list[FigureSpec] = field(default_factory=list)


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


def save_figure(fig: Figure, path: Path) -> None:
    """Render ``fig`` to ``path`` (PNG) without touching pyplot's global state."""
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110)


PLOTTED_POINTS = 2000
"""A curve is drawn through at most this many of its points (evenly spaced, the last one
always kept): a 2-inch-wide axis shows no more, and drawing 10⁵-step attack curves point by
point was half of the default run's report time."""


def plotted_points(curve: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, values)`` of a 1-d curve indexed by step, thinned to ``PLOTTED_POINTS``."""
    n = curve.numel()
    steps = np.unique(np.linspace(0, n - 1, min(n, PLOTTED_POINTS)).round().astype(np.int64))
    return steps, curve.detach().cpu().numpy()[steps]


def page_markdown(page: ReportPage, *, with_title: bool = True) -> list[str]:
    """The Markdown lines of ``page``: title, intro, tables, body, figures."""
    lines = [f"# {page.title}", ""] if with_title else []
    if page.intro:
        lines += [*page.intro, ""]
    for table in page.tables:
        lines += [*table.markdown(), ""]
    lines += page.body
    for figure in page.figures:
        lines += ["", f"![{figure.name.removesuffix('.png').replace('_', ' ')}]({figure.name})"]
    return [*lines, ""] if page.figures else lines


def write_page(directory: Path, page: ReportPage, name: str = "report.md") -> None:
    """Draw ``page``'s figures into ``directory`` and write its Markdown there as ``name``
    (each file to a temporary name, then renamed)."""
    from condimmune._files import replace_atomically

    for figure in page.figures:
        replace_atomically(directory / figure.name, figure.draw)
    text = "\n".join(page_markdown(page))
    replace_atomically(directory / name, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def replace_section(
    report: Path, heading: str, lines: list[str], *, into: Path | None = None
) -> None:
    """Give ``report`` (if it exists) the section ``heading`` + ``lines`` at its end,
    replacing the one an earlier call wrote; the result goes to ``into`` (default:
    ``report`` itself)."""
    from condimmune._files import replace_atomically

    if not report.is_file():
        return
    head = report.read_text(encoding="utf-8").split(heading)[0].rstrip("\n")
    text = "\n".join([head, "", heading, "", *lines])
    replace_atomically(into or report, lambda tmp: tmp.write_text(text, encoding="utf-8"))
