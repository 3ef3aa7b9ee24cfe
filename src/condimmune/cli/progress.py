"""The command line's progress bars: the library's :class:`~condimmune.core.progress.Progress`
events drawn with tqdm on stderr, as the bars the library still draws itself (training
epochs, immunization steps, sweeps) are, in the same format: what is under way, ``k/n``,
and ``[elapsed<time left, rate]``.

One bar per depth: the phase (``attackers (full-sgd):  27%|██▋ | 3/11 [01:23<03:40,
27.9s/attacker]``) and, below it, the steps of its current item. A bar appears with the
first event of its phase, so a command that fails on its inputs draws none; with
``--no-progress`` the command passes no callback and nothing is drawn."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from tqdm.auto import tqdm

from condimmune.core.progress import Progress

__all__ = ["Bars"]


class Bars:
    """Draws :class:`Progress` events (the callback of a command's long phases); use it as
    a context manager, which closes what is still drawn when the command's work ends."""

    def __init__(self) -> None:
        self._bars: dict[int, tuple[str, tqdm[Any]]] = {}

    def __call__(self, event: Progress) -> None:
        self._close(deeper_than=event.depth)  # the enclosing phase moved on: its item ended
        name = "  " * event.depth + (f"{event.task} ({event.item})" if event.item else event.task)
        known, new = self._bars.get(event.depth), False
        if known is None or known[0] != event.task or known[1].disable or event.done < known[1].n:
            # a new phase, or the bar was closed under it (an error or warning line, which
            # closes every bar first: cli.boundary.say)
            self._close(deeper_than=event.depth - 1)
            if event.done >= event.total:
                return  # the end of a phase whose bar is gone: nothing left to show
            bar = tqdm(
                desc=name, total=event.total, initial=event.done, unit=event.unit, leave=False
            )
            known = (event.task, bar)
            self._bars[event.depth], new = known, True
        bar = known[1]
        bar.total = event.total
        bar.set_description_str(name, refresh=False)
        shown = bar.update(event.done - bar.n)
        if event.depth == 0 and not (shown or new):  # few events: show each (tqdm waits 0.1 s)
            bar.refresh()
        if event.done >= event.total:
            self._close(deeper_than=event.depth - 1)

    def _close(self, *, deeper_than: int) -> None:
        for depth in sorted(self._bars, reverse=True):
            if depth > deeper_than:
                self._bars.pop(depth)[1].close()

    def __enter__(self) -> Bars:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._close(deeper_than=-1)
