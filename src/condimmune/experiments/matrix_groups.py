"""The numbers of ``condimmune attack-matrix``: attacked runs of one (experiment, method)
combined into mean ± sample standard deviation over their seeds (:class:`MatrixGroup`);
:mod:`condimmune.experiments.attack_matrix` renders them."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from condimmune.attacks.registry import CLOSED_FORM, DEEP_ATTACKERS, PREFIX_ONLY, WEIGHT_FREE
from condimmune.attacks.yardstick import (
    PrefixPoint,
    ceiling,
    ceiling_stopped_short,
    original_stopped_short,
    slowdown_floor,
    weight_reading_slowdown,
)
from condimmune.core.records import JsonRecord
from condimmune.experiments.matrix_runs import MatrixRun

__all__ = ["MatrixGroup", "MatrixResult", "Stat", "group_runs"]


@dataclass(frozen=True)
class Stat(JsonRecord):
    """Mean ± sample std over ``n`` runs, of which ``unreached`` are lower bounds (slowdowns
    whose target θ_I did not reach within the budget) and ``upper`` only upper ends (an
    attacker stopped short of τ below the value: :func:`~condimmune.attacks.yardstick.\
stopped_short`)."""

    mean: float
    std: float
    n: int
    unreached: int = 0
    upper: int = 0

    @classmethod
    def of(cls, values: Sequence[float], unreached: int = 0, upper: int = 0) -> Stat:
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return cls(statistics.fmean(values), std, len(values), unreached, upper)

    @property
    def lower_bound(self) -> bool:
        return self.unreached > 0

    def text(self, digits: int = 3) -> str:
        """``mean ± std``; a single run's value says so instead of a ``± 0``; ``≥`` marks a
        lower bound, ``≤`` an upper end, ``≥/≤`` a mean over both."""
        marks = {(True, False): "≥ ", (False, True): "≤ ", (True, True): "≥/≤ "}
        mark = marks.get((self.lower_bound, self.upper > 0), "")
        spread = f" ± {self.std:.2g}" if self.n > 1 else " (1 run)"
        return f"{mark}{self.mean:.{digits}g}{spread}"


@dataclass(frozen=True)
class MatrixGroup(JsonRecord):
    """One (experiment, method) over its runs."""

    experiment: str
    method: str
    seeds: list[int]
    runs: list[str]
    slowdown: dict[str, Stat]
    worst_slowdown: Stat
    worst_attackers: list[str]
    worst_rfd: Stat
    utility_drop: Stat | None
    passes_cap: list[bool]
    rir_theta0: Stat
    attack_seconds: Stat
    s: Stat | None = None
    """The yardstick's S = T*(θ_I)/T*(θ0) (Eq. Y4) over the runs that measured it."""
    s_max: Stat | None = None
    """Its from-scratch ceiling S_max over the runs that measured it."""
    p: Stat | None = None
    """P = log S / log S_max (Eq. Y5) over the runs with S_max > 1."""
    s_reading: Stat | None = None
    """S over the weight-reading attackers only (a diagnostic: the weight-free left out)."""
    c_prefix: Stat | None = None
    """The prefix ceiling C(prefix) / T*(θ0) over the runs that measured it."""
    s_floor: Stat | None = None
    """The least S the recorded curves allow (:func:`~condimmune.attacks.yardstick.\
slowdown_floor`): below ``s`` when attackers stopped short of τ on θ_I."""
    stopped_short: list[int] | None = None
    """Per run, how many attackers on θ_I stopped at their budget below T*(θ_I)."""
    cheapest: list[str] | None = None
    """Per run, the cheapest attacker on θ_I (Eq. Y3)."""
    theta0_short: list[int] | None = None
    """Per run, how many attackers on θ0 stopped at their budget below T*(θ0)."""
    theta0_extended: list[int | None] | None = None
    """Per run, how many attackers Eq. R1 ran again on θ0 (``None``: a record made before θ0
    was settled)."""
    c_curve: dict[str, Stat] | None = None
    """``C(k)`` per tap (Eq. Y6) over the runs that measured it (``attack.prefix_curve``)."""


@dataclass(frozen=True)
class MatrixResult:
    """The runs combined, the methods (in order), the groups, and how many of the runs were
    a ``metrics.json`` alone (no run directory whose files could be verified)."""

    runs: list[Path]
    methods: list[str]
    groups: list[MatrixGroup]
    unverified: int


def group_runs(key: tuple[str, str], runs: list[MatrixRun]) -> MatrixGroup:
    """The runs of one (experiment, method) ``key`` combined."""
    suites = [r.suite for r in runs]
    names = list(dict.fromkeys(n for s in suites for n in s.attackers))
    slowdown = {
        n: Stat.of(
            [s.attackers[n].harmful.slowdown for s in suites if n in s.attackers],
            sum(not s.attackers[n].harmful.reached for s in suites if n in s.attackers),
        )
        for n in names
    }
    utilities = [s.utility for s in suites if s.utility is not None]
    sticks = [s.yardstick for s in suites if s.yardstick is not None]
    ceilings = [y for y in sticks if y.s_max is not None and y.cheapest_weight_free is not None]
    free = {a.value for a, spec in DEEP_ATTACKERS.items() if spec.weight_free}
    reading = [r for y in sticks if (r := weight_reading_slowdown(y, free)) is not None]
    prefix = [c for y in sticks if (c := ceiling(y, PREFIX_ONLY)) is not None]
    floors = [slowdown_floor(y, CLOSED_FORM, WEIGHT_FREE) for y in sticks]
    by_tap: dict[str, list[PrefixPoint]] = {}
    for point in (p for y in sticks for p in y.prefix_curve or []):
        by_tap.setdefault(point.tap, []).append(point)
    c_curve = {
        tap: Stat.of([p.ceiling for p in at], sum(not p.cost.reached for p in at))
        for tap, at in by_tap.items()
    }
    return MatrixGroup(
        experiment=key[0],
        method=key[1],
        seeds=[r.metrics.seed for r in runs],
        runs=[str(r.path) for r in runs],
        slowdown=slowdown,
        worst_slowdown=Stat.of(
            [s.worst_case.slowdown for s in suites],
            sum(not s.worst_case.reached for s in suites),
        ),
        worst_attackers=[s.worst_case.attacker.value for s in suites],
        worst_rfd=Stat.of([s.worst_case.rfd for s in suites]),
        utility_drop=Stat.of([u.drop_points for u in utilities]) if utilities else None,
        passes_cap=[u.passes for u in utilities],
        rir_theta0=Stat.of([r.metrics.rir_theta0.honest.rir_mean for r in runs]),
        attack_seconds=Stat.of([s.wall_seconds for s in suites]),
        s=_stat(
            [y.s for y in sticks],
            sum(not y.cheapest_immunized.reached for y in sticks),
            sum(bool(f[1]) for f in floors),
        ),
        s_max=_stat(
            [y.s_max for y in ceilings if y.s_max is not None],
            sum(
                c.cheapest_weight_free is not None and not c.cheapest_weight_free.reached
                for c in ceilings
            ),
        ),
        p=_stat(
            [y.p for y in sticks if y.p is not None],
            upper=sum(bool(f[1]) for y, f in zip(sticks, floors, strict=True) if y.p is not None),
        ),
        s_reading=_stat([r[0] for r in reading], sum(not r[1] for r in reading)),
        c_prefix=_stat(
            [c[0] for c in prefix],
            sum(not c[1] for c in prefix),
            sum(bool(ceiling_stopped_short(y, PREFIX_ONLY, CLOSED_FORM)) for y in sticks),
        ),
        s_floor=_stat([f[0] for f in floors]),
        stopped_short=[len(f[1]) for f in floors] if floors else None,
        cheapest=[y.cheapest_immunized.attacker for y in sticks] if sticks else None,
        theta0_short=[len(original_stopped_short(y, CLOSED_FORM)) for y in sticks] or None,
        theta0_extended=[len(y.extended_original) if y.theta0_settled else None for y in sticks]
        or None,
        c_curve=c_curve or None,
    )


def _stat(values: Sequence[float], unreached: int = 0, upper: int = 0) -> Stat | None:
    """:meth:`Stat.of`, or ``None`` when no run measured the value."""
    return Stat.of(values, unreached, upper) if values else None
