"""The heat maps of a linear sweep over digit pairs (like the paper's Fig. 2): one per arm,
the RIR (Eq. 15) of each (benign, harmful) pair, geometric mean over its seeds.

Every map of one sweep shares the rows and columns (the digits the sweep ran) and the
colour scale: log₁₀ RIR on ``±bound`` decades, diverging about RIR = 1 (no immunization),
``bound`` the largest ``|log₁₀ RIR|`` of any arm (:mod:`condimmune.experiments.figures`).
Each cell shows its RIR. A pair whose held-out benign accuracy fell by more than
:data:`UTILITY_CAP_POINTS` (mean over seeds) is greyed: it was bought by breaking the benign
task. A pair whose runs all failed is greyed and says so. The title says whether the
inputs were rank-deficient (raw pixels: the RIR is unbounded) or not, which the ``bound``
column records: read from the rows only, so a sweep's figure and ``sweep-table``'s of the
same ``sweep.csv`` are the same figure.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from matplotlib.figure import Figure

from condimmune.experiments.figures import HeatCell, draw_factor_heat_map, factor_text
from condimmune.experiments.report import FigureSpec, save_figure
from condimmune.experiments.sweep_rows import SweepRow

__all__ = ["UTILITY_CAP_POINTS", "heat_maps"]

UTILITY_CAP_POINTS = 5.0
"""Held-out benign accuracy a pair may lose, in points, before its cell is greyed: the
deep attack suite's default utility cap (``attack.utility_cap``)."""


def _inputs(rows: Sequence[SweepRow]) -> str:
    """What the runs' features were, from the ``bound`` column (raw pixels give an unbounded
    RIR): from the rows alone, so that ``sweep`` and ``sweep-table`` on the same CSV draw the
    same title whether or not the run directories are still there."""
    bounds = [r["bound"] for r in rows if not r.failed]
    if bounds and all(b == math.inf for b in bounds):
        return "rank-deficient inputs (RIR unbounded)"
    return "full-rank inputs (RIR bounded)" if bounds else "no finished run"


def _file_part(arm: str) -> str:
    """``arm`` as part of a file name: an arm with swept values (``condnum [train.epochs=1]``)
    becomes ``condnum_train.epochs-1``, no spaces, brackets or ``=`` to quote in a shell."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", arm.replace("=", "-")).strip("_")


def _cell(rows: list[SweepRow]) -> HeatCell:
    done = [r for r in rows if not r.failed]
    rirs = [r["rir"] for r in done]
    values = [v for v in rirs if isinstance(v, float) and v > 0 and math.isfinite(v)]
    if not values:
        return HeatCell(math.nan, "failed", excluded=True)
    value = math.exp(statistics.fmean(math.log(v) for v in values))
    drops = [
        100 * (r["benign_original"] - r["benign_immunized"])
        for r in done
        if r["benign_metric"] == "accuracy"
        and isinstance(r["benign_original"], float)
        and isinstance(r["benign_immunized"], float)
    ]
    broken = bool(drops) and statistics.fmean(drops) > UTILITY_CAP_POINTS
    return HeatCell(value, factor_text(value), excluded=broken)


def _draw(
    cells: list[list[HeatCell | None]],
    digits: tuple[list[int], list[int]],
    bound: float,
    title: str,
    path: Path,
) -> None:
    benign, harmful = digits
    fig = Figure(figsize=(0.5 * len(harmful) + 2.9, 0.42 * len(benign) + 1.9), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    draw_factor_heat_map(
        fig,
        ax,
        cells,
        bound=bound,
        quantity="RIR (Eq. 15)",
        excluded=f"benign accuracy down more than {UTILITY_CAP_POINTS:g} points, or failed",
        unit="",
    )
    ax.set_xticks(range(len(harmful)), [str(d) for d in harmful])
    ax.set_yticks(range(len(benign)), [str(d) for d in benign])
    ax.set_xlabel('harmful digit ("d vs rest")')
    ax.set_ylabel('benign digit ("d vs rest")')
    ax.set_title(title, fontsize=9)
    save_figure(fig, path)


def heat_maps(rows: Sequence[SweepRow], arms: list[str]) -> list[FigureSpec]:
    """``heatmap_<arm>.png`` for each arm of a sweep's ``rows`` (none without digit pairs)."""
    pairs = {(r["benign"], r["harmful"]) for r in rows}
    keyed = [(a, b) for a, b in pairs if isinstance(a, int) and isinstance(b, int)]
    if not keyed:
        return []  # no digit pairs (house price): no heat map
    digits = (sorted({a for a, _ in keyed}), sorted({b for _, b in keyed}))
    maps: dict[str, list[list[HeatCell | None]]] = {}
    for arm in arms:
        by_pair: dict[tuple[object, object], list[SweepRow]] = {}
        for r in rows:
            if r.arm == arm:
                by_pair.setdefault((r["benign"], r["harmful"]), []).append(r)
        maps[arm] = [
            [_cell(found) if (found := by_pair.get((a, b))) else None for b in digits[1]]
            for a in digits[0]
        ]
    logs = [
        abs(math.log10(c.value))
        for cells in maps.values()
        for line in cells
        for c in line
        if c is not None and not c.excluded
    ]
    bound = max([1.0, *logs])
    figures = []
    for arm, cells in maps.items():
        mine = [r for r in rows if r.arm == arm]
        seeds = len({r.seed for r in mine})
        title = (
            f"{arm}: RIR per digit pair\n{mine[0].experiment if mine else ''}, {_inputs(mine)}, "
            + (f"geometric mean over {seeds} seeds" if seeds > 1 else "1 seed")
        )
        draw = partial(_draw, cells, digits, bound, title)
        figures.append(FigureSpec(f"heatmap_{_file_part(arm)}.png", draw))
    return figures
