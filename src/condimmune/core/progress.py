"""How a long computation says how far it is: a :class:`Progress` event handed to a
:data:`ProgressCallback`. The library never prints; whoever calls it decides what to show
(the command line draws one bar per depth, :mod:`condimmune.cli.progress`).

A phase reports ``Progress(task, done, total, item)`` when it starts (``done = 0``), after
each unit and when it ends (``done = total``); ``depth = 1`` reports the steps inside the
item under way of the depth-0 phase that encloses it (an attacker's optimizer steps, a
probe's iterations), and ends with that item."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

__all__ = ["Progress", "ProgressCallback", "report", "step_counter", "steps_within"]


@dataclass(frozen=True)
class Progress:
    """``done`` of ``total`` units of ``task`` are finished; ``item`` names the unit under way
    (``""`` when none is); ``unit`` names what is counted (``"attacker"``, ``"step"``);
    ``depth`` 0 is a phase of a command, 1 the steps inside its current item."""

    task: str
    done: int
    total: int
    item: str = ""
    unit: str = "step"
    depth: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.done <= self.total or self.total < 1:
            raise ValueError(
                f"progress of {self.task!r}: done = {self.done} of total = {self.total}; "
                "need 0 ≤ done ≤ total and total ≥ 1"
            )
        if self.depth not in (0, 1):
            raise ValueError(f"progress of {self.task!r}: depth = {self.depth}; use 0 or 1")


ProgressCallback: TypeAlias = Callable[[Progress], None]
"""Receives every :class:`Progress` event of a computation, in order."""


def report(callback: ProgressCallback | None, event: Progress) -> None:
    """Hand ``event`` to ``callback`` (nothing without one)."""
    if callback is not None:
        callback(event)


def steps_within(
    callback: ProgressCallback | None, task: str, parts: int, part: int, item: str
) -> ProgressCallback | None:
    """The callback of part ``part`` (0-based) of ``parts`` equal parts of ``task``: its
    events, counted within the part, become depth-1 events of the whole ``task``, named
    ``item`` and the part's own item (``"harmful θ_I"`` + ``"lr=0.2/L"``)."""
    if callback is None:
        return None
    target = callback

    def forward(event: Progress) -> None:
        name = ", ".join(text for text in (item, event.item) if text)
        done = part * event.total + event.done
        target(Progress(task, done, parts * event.total, name, event.unit, depth=1))

    return forward


def _ignore(_steps: int) -> None:
    """Counts nothing: nobody is watching."""


def step_counter(
    callback: ProgressCallback | None, task: str, parts: int, steps: int, part: int, item: str
) -> Callable[[int], None]:
    """``count(t)``: part ``part`` (0-based) of ``task``'s ``parts`` parts of ``steps`` steps
    each has taken ``t`` steps (a part that ends early jumps to the next part's start).
    Reports about 100 times per part, so that counting costs nothing next to a step."""
    if callback is None:
        return _ignore
    target, stride, total = callback, max(1, steps // 100), parts * steps

    def count(done: int) -> None:
        if done % stride == 0 or done >= steps:
            target(Progress(task, part * steps + min(done, steps), total, item))

    return count
