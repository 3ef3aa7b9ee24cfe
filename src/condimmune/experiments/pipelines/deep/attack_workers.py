"""A deep attack's searches in several processes (``attack.workers``, docs/attacks.md).

Every attacker's searches are independent of the others': a search's trials depend on its
seed, its study and the trials stored there (:func:`~condimmune.attacks.search.paired_search`).
So the searches of a suite are shared out among worker processes, one thread each, the
dearest attackers first (each worker takes the next attacker when it is free); each stores
its trials in the run's persistent Optuna storage. The suite itself then runs in this
process as before (:func:`~condimmune.attacks.deep_suite.run_deep_suite`) and reads every
finished trial back, so its numbers are those of the same suite run alone with one thread.
Workers are forked (:func:`~condimmune.experiments.workers.results_in_workers`): they share
the released models' tensors with this process instead of rebuilding them.
"""

from __future__ import annotations

import os
import sys
from contextlib import closing
from dataclasses import dataclass

from condimmune.attacks.deep_inputs import ReleasedModel
from condimmune.attacks.deep_records import DeepAttackOptions
from condimmune.attacks.deep_suite import run_deep_searches
from condimmune.attacks.registry import DEEP_ATTACKERS, DeepAttacker, DeepFamily
from condimmune.core.errors import ArgumentError
from condimmune.core.progress import Progress, ProgressCallback, report
from condimmune.experiments.threads import use_threads
from condimmune.experiments.workers import results_in_workers
from condimmune.methods.base import ModelFamily

__all__ = ["attack_workers", "dearest_first", "search_in_workers"]

# what an attacker's trials cost, roughly, from the dearest family to the cheapest: the
# whole network and the from-scratch CNN train a network per trial, the blocks part of one;
# the raw-pixel probes read the largest inputs; the probes read cached features
_COST_ORDER = (
    DeepFamily.FULL,
    DeepFamily.SCRATCH,
    DeepFamily.BLOCKS,
    DeepFamily.RAW,
    DeepFamily.TAP,
    DeepFamily.SKIP,
    DeepFamily.PROBE,
)


def attack_workers(setting: int, attackers: int, *, platform: str = sys.platform) -> int:
    """The worker processes of an attack: ``setting`` (0: one per core this process may
    use), at most one per attacker. Workers are forked, which only Linux does here: elsewhere
    0 means 1 and a larger setting is refused."""
    if setting < 0:
        raise ArgumentError("attack.workers must be ≥ 0 (0: one per core), got {v}", v=setting)
    if not platform.startswith("linux"):
        if setting > 1:
            raise ArgumentError(
                "attack.workers={v} needs forked worker processes, which condimmune starts on "
                "Linux only (this is {platform}): set attack.workers=1",
                v=setting,
                platform=platform,
            )
        return 1
    return max(1, min(setting or len(os.sched_getaffinity(0)), attackers))


def dearest_first(attackers: list[DeepAttacker]) -> list[DeepAttacker]:
    """``attackers`` in the order workers should take them: dearest family first (a free
    worker takes the next one, so the long searches do not come last), within a family as
    given; the hidden-layer probe before the linear ones."""

    def rank(attacker: DeepAttacker) -> tuple[int, bool]:
        spec = DEEP_ATTACKERS[attacker]
        return _COST_ORDER.index(spec.family), not spec.hidden

    return sorted(attackers, key=rank)


@dataclass(frozen=True)
class _Shared:
    """What every worker reads: inherited through the fork, never pickled."""

    original: ReleasedModel
    immunized: ReleasedModel
    options: DeepAttackOptions


_shared: _Shared | None = None


def _start(shared: _Shared) -> None:
    global _shared
    use_threads(1, ModelFamily.DEEP)  # one thread per worker: the workers fill the cores
    _shared = shared


def _search(attacker: str) -> str:
    assert _shared is not None, "a worker runs _start first"
    s = _shared
    run_deep_searches([attacker], s.original, s.immunized, s.options)
    return attacker


def search_in_workers(
    attackers: list[DeepAttacker],
    original: ReleasedModel,
    immunized: ReleasedModel,
    options: DeepAttackOptions,
    workers: int,
    *,
    on_progress: ProgressCallback | None = None,
) -> None:
    """Make (or read back) every search of ``attackers`` in ``workers`` processes (module
    docstring); ``on_progress`` hears each attacker as its worker finishes it (task
    ``"searches"``, the attacker just finished as the item). A failed search stops the
    others and raises here."""
    if workers < 2:
        raise ValueError(f"searches in workers need at least 2 workers, got {workers}")
    order = [a.value for a in dearest_first(attackers)]
    shared = _Shared(original, immunized, options)
    report(on_progress, Progress("searches", 0, len(order), order[0], "attacker"))
    results = results_in_workers(_search, order, workers, _start, (shared,))
    with closing(results):
        for done, name in enumerate(results, start=1):
            item = f"{name} done" if done < len(order) else ""
            report(on_progress, Progress("searches", done, len(order), item, "attacker"))
