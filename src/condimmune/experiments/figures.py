"""Drawing rules every report figure shares (matplotlib's object API, no global state).

* **Factors on a log scale** (slowdowns θ_I ÷ θ0, RIRs): 1× is the neutral value. Heat maps
  colour log₁₀ of the factor with a diverging map centred at 0 (= 1×), on one scale
  ``±bound`` decades for every panel that is compared; bars grow from 1×, right for a
  factor above 1 (slower), left for one below.
* **Lower bounds** (``≥``: the target was not reached within the budget) are hatched, and
  say ``≥`` in their text.
* **Excluded values** (a method that fails the utility cap, a run that failed) are drawn in
  grey, whatever their value: a broken model must not look like a strong defence.
* **Relative suboptimality curves** are shown on ``[target · 10⁻³, top]``
  (:func:`suboptimality_window`): three decades past the target is where an attacker's
  progress can still be told from the float rounding of its loss (which reaches 1e-16 and,
  for an exact solver, 0 or a denormal); values outside are drawn on the edge.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import Normalize, to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import NullLocator

__all__ = [
    "EXCLUDED_GREY",
    "FLOOR_DECADES",
    "HeatCell",
    "clamp",
    "draw_factor_heat_map",
    "factor_bars",
    "factor_text",
    "plot_spectra",
    "suboptimality_window",
]

FLOOR_DECADES = 3
"""How many decades below the target a relative-suboptimality axis reaches."""
_CEILING = 1e3
"""The highest a relative-suboptimality axis reaches (a diverging attacker goes beyond)."""
EXCLUDED_GREY = "0.82"
_HATCH = "///"
_CMAP = colormaps["RdBu_r"].with_extremes(bad="white")


def factor_text(value: float, lower_bound: bool = False, unit: str = "") -> str:
    """A factor in at most 3 significant digits, compact (``2.1e3``), ``≥`` for a bound."""
    if not math.isfinite(value):
        text = str(value)
    else:
        text = f"{value:.3g}".replace("e+0", "e").replace("e-0", "e-").replace("e+", "e")
    return f"{'≥' if lower_bound else ''}{text}{unit}"


def suboptimality_window(curves: Iterable[np.ndarray], target: float) -> tuple[float, float]:
    """``(bottom, top)`` of a log axis of relative suboptimality: bottom = target ·
    10^-FLOOR_DECADES, top = twice the largest finite value, between 1 and 10³ (curves start
    at 1; a diverging attacker is cut at 10³)."""
    highest = max((float(np.nanmax(c)) for c in curves if np.isfinite(c).any()), default=1.0)
    return target * 10.0**-FLOOR_DECADES, 2 * min(max(highest, 1.0), _CEILING)


def clamp(values: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """``values`` clipped into ``window`` (NaN, a step not run, stays NaN)."""
    clipped: np.ndarray = np.clip(values, *window)
    return clipped


def plot_spectra(
    ax: Axes, lines: Sequence[tuple[str, np.ndarray, str]], cutoff: float, task: str
) -> None:
    """Eigenvalues ÷ the largest, largest first, of each ``(label, eigenvalues, style)`` in
    ``lines`` on a log axis that reaches a little below the smallest; eigenvalues under the
    numerical-range ``cutoff`` (relative to the largest: zero up to rounding) are drawn at
    ``cutoff / 10``, beside a dotted line at the cut-off, which is shown only then."""
    scaled = [
        (label, np.maximum(lam / lam.max(), cutoff / 10), style) for label, lam, style in lines
    ]
    for label, lam, style in scaled:
        ax.semilogy(np.arange(1, lam.size + 1), lam, style, label=label)
    lowest = min(float(lam.min()) for _, lam, _ in scaled)
    if lowest < cutoff:
        ax.axhline(cutoff, color="grey", lw=0.8, ls=":", label="numerical-range cut-off")
    ax.set_ylim(lowest / 3, 2)
    ax.set_title(f"{task} task: covariance spectrum")
    ax.set_xlabel("eigenvalue index (largest first)")
    ax.set_ylabel("eigenvalue / largest eigenvalue")
    ax.legend(fontsize=8, loc="lower left")


@dataclass(frozen=True)
class HeatCell:
    """One cell of a factor heat map: the factor (> 0), its text, whether it is a lower
    bound, and whether it is excluded (greyed: see the module docstring)."""

    value: float
    text: str
    lower_bound: bool = False
    excluded: bool = False


def _text_colour(rgba: Sequence[float]) -> str:
    """Black or white, whichever contrasts more with a cell of colour ``rgba`` (WCAG 2:
    relative luminance L of the linearized sRGB channels; black wins above L = 0.179, where
    (L + 0.05) / 0.05 = 1.05 / (L + 0.05))."""
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgba[:3]]
    luminance = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    return "black" if luminance > 0.179 else "white"


def draw_factor_heat_map(
    fig: Figure,
    ax: Axes,
    cells: Sequence[Sequence[HeatCell | None]],
    *,
    bound: float,
    quantity: str,
    excluded: str,
    unit: str = "×",
) -> None:
    """Cells (rows × columns) coloured by log₁₀ of their factor on ``±bound`` decades
    (diverging, centred at 1×), each with its text in a contrasting colour; lower bounds
    hatched, excluded cells grey, missing cells (``None``) white. The colour bar names
    ``quantity``; the legend below explains the hatching and ``excluded`` (the reason cells
    are grey), for the kinds present."""
    norm = Normalize(-bound, bound)
    grid = np.full((len(cells), len(cells[0]) if cells else 0), np.nan)
    for i, row in enumerate(cells):
        for j, cell in enumerate(row):
            if cell is not None and not cell.excluded and cell.value > 0:
                grid[i, j] = math.log10(cell.value)
    image = ax.imshow(np.clip(grid, -bound, bound), cmap=_CMAP, norm=norm, aspect="auto")
    size = 7 if grid.size <= 200 else 6
    hatched = greyed = False
    for i, row in enumerate(cells):
        for j, cell in enumerate(row):
            if cell is None:
                continue
            colour, background = "0.25", to_rgba(EXCLUDED_GREY)
            if cell.excluded:
                greyed = True
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, color=EXCLUDED_GREY, lw=0))
            elif math.isfinite(grid[i, j]):
                background = _CMAP(norm(grid[i, j]))
                colour = _text_colour(background)
            box = None
            if cell.lower_bound:
                hatched = True
                edge = "white" if colour == "white" else "0.35"
                hatch = Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch=_HATCH, lw=0)
                hatch.set_edgecolor(edge)
                hatch.set_alpha(0.45)
                ax.add_patch(hatch)
                # the text on a patch of the cell's colour: the hatching does not cross it
                box = {"facecolor": background, "edgecolor": "none", "pad": 1.2}
            ax.text(
                j, i, cell.text, ha="center", va="center", fontsize=size, color=colour, bbox=box
            )
    decades = range(-math.floor(bound), math.floor(bound) + 1)
    bar = fig.colorbar(image, ax=ax, ticks=list(decades), shrink=0.9)
    bar.ax.set_yticklabels([factor_text(10.0**k, unit=unit) for k in decades], fontsize=7)
    bar.set_label(f"{quantity}\n(log₁₀ colour scale; white = 1{unit}, no effect)", fontsize=8)
    handles = []
    if hatched:
        handles.append(
            Patch(facecolor="white", edgecolor="0.35", hatch=_HATCH, label="≥ lower bound")
        )
    if greyed:
        handles.append(Patch(facecolor=EXCLUDED_GREY, label=excluded))
    if handles:  # below everything, where constrained layout makes room for it
        fig.legend(
            handles=handles,
            loc="outside lower center",
            ncols=len(handles),
            fontsize=7,
            frameon=False,
        )


def factor_bars(
    ax: Axes, names: Sequence[str], values: Sequence[float], lower_bounds: Sequence[bool]
) -> None:
    """Horizontal bars of factors on a log axis, from 1× to the factor (right: above 1, in
    red; left: below 1, in blue), lower bounds hatched, each bar's value at its end; the
    axis symmetric about 1× in log space, ticked at factors (1, 2, 5 per decade)."""
    logs = [math.log10(v) for v in values]
    reach = max([0.3, *map(abs, logs)]) * 1.35
    for k, (value, bound) in enumerate(zip(values, lower_bounds, strict=True)):
        colour = "C3" if value > 1 else "C0"
        ax.barh(k, value - 1, left=1, color=colour, hatch=_HATCH if bound else None, alpha=0.8)
        side = "left" if value >= 1 else "right"
        offset = 1.06 if value >= 1 else 1 / 1.06
        ax.text(value * offset, k, factor_text(value, bound, "×"), va="center", ha=side, fontsize=7)
    ax.set_xscale("log")
    ax.set_xlim(10**-reach, 10**reach)
    ticks = [m * 10.0**k for k in range(-6, 7) for m in (1, 2, 5)]
    ticks = [t for t in ticks if 10**-reach <= t <= 10**reach]
    if len(ticks) > 9:  # wide ranges: decades only
        ticks = [t for t in ticks if math.log10(t).is_integer()]
    ax.set_xticks(ticks, [factor_text(t, unit="×") for t in ticks], fontsize=8)
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_yticks(range(len(names)), list(names), fontsize=8)
    ax.set_ylim(len(names) - 0.5, -0.5)
    ax.axvline(1.0, color="black", lw=0.8)
