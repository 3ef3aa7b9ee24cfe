"""Reports for both families: number formatting, figures (matplotlib's object API, no global
state), and the one report skeleton (:class:`~condimmune.experiments.pipeline.ReportPage` →
Markdown and PNG files)."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import Collection
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.legend import Legend
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.text import Text
from matplotlib.ticker import FixedFormatter

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "FIGURE_DIGEST_KEY",
    "FIGURE_STYLE",
    "PLOTTED_POINTS",
    "FigureSpec",
    "ReportPage",
    "Table",
    "figure_digest",
    "format_number",
    "page_markdown",
    "plotted_points",
    "read_figure_digest",
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


FIGURE_STYLE = 2
"""The version of the figures' look: part of every figure's digest (:func:`figure_digest`).
Raise it when a change of drawing code changes what a figure shows without changing its
texts, data, limits or colours (a new marker style, say), so that the test of the docs
figures asks for them to be rendered again."""

FIGURE_DIGEST_KEY = "condimmune-figure"
"""The PNG text chunk that holds a figure's digest."""


def _rounded(values: Any) -> Any:
    """Numbers rounded to 6 significant digits (nan and inf kept): what a figure shows does
    not depend on the last bits, which the CPU's vector units may change."""
    array: np.ndarray = np.ma.filled(np.ma.asarray(values, dtype=float), np.nan)
    return [float(f"{v:.6g}") if math.isfinite(v) else str(v) for v in array.ravel()]


def _artist(item: Any) -> list[Any]:
    """What one artist of an axes shows: kind, data, colours, texts (not how it rasterizes)."""
    if isinstance(item, Line2D):
        style = [to_hex(item.get_color()), item.get_linestyle(), item.get_marker()]
        return ["line", _rounded(item.get_xydata()), *map(str, style), item.get_label()]
    if isinstance(item, AxesImage):
        low, high = item.get_clim()
        cmap = item.get_cmap().name
        return ["image", _rounded(item.get_array()), cmap, _rounded([low, high])]
    if isinstance(item, Rectangle):
        box = [item.get_x(), item.get_y(), item.get_width(), item.get_height()]
        return [
            "box",
            _rounded(box),
            to_hex(item.get_facecolor(), keep_alpha=True),
            item.get_hatch(),
        ]
    if isinstance(item, Text):
        return ["text", item.get_text(), _rounded(item.get_position()), to_hex(item.get_color())]
    if isinstance(item, Legend):
        return ["legend", [t.get_text() for t in item.get_texts()]]
    if isinstance(item, Collection):
        return ["collection", _rounded(item.get_offsets()), str(item.get_hatch())]
    return []


def figure_digest(fig: Figure) -> str:
    r"""The sha256 of what ``fig`` shows, independent of how matplotlib and the CPU rasterize
    it: :data:`FIGURE_STYLE`, the figure's size, texts and legends, and per axes its title, axis
    labels, scales, limits and fixed tick labels, and each line's points, image's values
    and colour limits, box's bounds and colour, text, legend and collection (numbers
    rounded to 6 significant digits). Equal digests: equal figures up to rendering."""
    items: list[Any] = [FIGURE_STYLE, _rounded(fig.get_size_inches())]
    items += [t.get_text() for t in fig.texts] + [_artist(legend) for legend in fig.legends]
    for ax in fig.axes:
        items.append([ax.get_title(loc) for loc in ("left", "center", "right")])
        for axis, scale, limits in (
            (ax.xaxis, ax.get_xscale(), ax.get_xlim()),
            (ax.yaxis, ax.get_yscale(), ax.get_ylim()),
        ):
            formatter = axis.get_major_formatter()
            fixed = list(formatter.seq) if isinstance(formatter, FixedFormatter) else None
            items.append([axis.label.get_text(), scale, _rounded(limits), fixed])
        items += [_artist(child) for child in ax.get_children() if child is not ax.patch]
        items.append(to_hex(ax.get_facecolor()))
    text = json.dumps(items, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def save_figure(fig: Figure, path: Path) -> None:
    """Render ``fig`` to ``path`` (PNG) without touching pyplot's global state, with no
    clipped axis or tick labels, and :func:`figure_digest` in the PNG text chunk
    :data:`FIGURE_DIGEST_KEY`. A figure with a layout engine (``layout="constrained"``, every
    report figure) is already laid out to fit its canvas; any other gets the bounding box
    fitted to what is drawn, which costs a second layout pass (≈ 0.1 s a figure)."""
    FigureCanvasAgg(fig)
    metadata = {FIGURE_DIGEST_KEY: figure_digest(fig)}
    tight = fig.get_layout_engine() is None
    fig.savefig(
        path,
        format="png",
        dpi=110,
        bbox_inches="tight" if tight else None,
        pad_inches=0.08,
        metadata=metadata,
    )


def read_figure_digest(path: Path) -> str | None:
    """The digest :func:`save_figure` wrote into the PNG ``path`` (``None`` if it has none)."""
    from PIL import Image

    with Image.open(path) as image:
        value = image.info.get(FIGURE_DIGEST_KEY)
    return value if isinstance(value, str) else None


PLOTTED_POINTS = 2000
"""A curve is drawn through at most this many of its points (evenly spaced, the last one
always kept): a 2-inch-wide axis shows no more, and drawing 10⁵-step attack curves point by
point was half of the default run's report time."""


def plotted_points(curve: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, values)`` of a 1-d curve (a tensor or a numpy array) indexed by step, thinned
    to ``PLOTTED_POINTS``."""
    values = curve if isinstance(curve, np.ndarray) else curve.detach().cpu().numpy()
    n = values.shape[0]
    steps = np.unique(np.linspace(0, n - 1, min(n, PLOTTED_POINTS)).round().astype(np.int64))
    return steps, values[steps]


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
