r"""Hyperparameter search for an attacker: Optuna studies, seeded, with the same trial budget
for the original model θ0 and the immunized θ_I.

An attacker is given a search space (:class:`LogFloat`, :class:`Uniform`, :class:`IntChoice`)
and an objective ``trial(params, number) -> TrialResult`` to **maximise**: the area under the
best-so-far held-out accuracy curve (Eq. A3 of docs/attacks.md). :func:`paired_search` runs
two studies side by side, one per released model, one trial of each in turn, until each has
``trials`` finished trials or the wall-clock cap ``seconds`` has passed (checked before each
pair, so a trial always runs its whole step budget). Both studies then count the same number
of trials: the first ``min(n_θ0, n_θI)`` finished ones, by trial number.

Studies live in any Optuna storage (``None``: in memory; ``sqlite:///file.db``; any database
URL Optuna accepts, so several machines can share one search), each model's in its own
:class:`Study` (storage and name): runs that release the same θ0 name its studies alike and
share them, and a model-independent attacker names one study for both sides, searched once.
A study that already holds finished trials is resumed, not restarted: its trials' curves
are stored in the study (``user_attrs``), so the results are read back from the storage
alone. The sampler is Optuna's TPE seeded per trial from the search's seed and the trial's
number (:func:`trial_sampler_seed`): the same storage state and seed give the same
suggestions, and a resumed search suggests what the uninterrupted one would have (so a
study that two processes fill at once is safe but not reproducible: each sees the other's
trials). :func:`replayed` runs settings a search found
again (a longer step budget), stored the same way.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

from condimmune.attacks.study_storage import Study, finished_trials, open_study
from condimmune.core.errors import ArgumentError

if TYPE_CHECKING:  # imported where a search runs: `import condimmune...records` stays light
    import optuna

__all__ = [
    "IntChoice",
    "LogFloat",
    "Param",
    "SearchOptions",
    "Study",
    "StudyTrials",
    "TrialResult",
    "Uniform",
    "describe",
    "paired_search",
    "replayed",
    "trial_sampler_seed",
]


@dataclass(frozen=True)
class LogFloat:
    """A float searched on a log scale in ``[low, high]`` (learning rates, weight decay)."""

    name: str
    low: float
    high: float


@dataclass(frozen=True)
class Uniform:
    """A float searched uniformly in ``[low, high]`` (momentum)."""

    name: str
    low: float
    high: float


@dataclass(frozen=True)
class IntChoice:
    """One of a few integers (hidden width)."""

    name: str
    choices: tuple[int, ...]


Param: TypeAlias = LogFloat | Uniform | IntChoice


@dataclass(frozen=True)
class TrialResult:
    """What one trial measured: the objective and the held-out accuracy at each eval step."""

    objective: float
    curve: list[float]


@dataclass(frozen=True)
class StudyTrials:
    """The finished trials of one study in order of trial number: parameters, curves,
    objectives, and each one's Optuna trial ``numbers`` (which seeded it; not its position
    when a trial of the study failed or was cut off)."""

    params: list[dict[str, float]]
    curves: list[list[float]]
    objectives: list[float]
    seconds: float
    numbers: list[int]

    def __post_init__(self) -> None:
        sizes = {len(self.params), len(self.curves), len(self.objectives), len(self.numbers)}
        if len(sizes) != 1:
            raise ValueError(
                "params, curves, objectives and numbers must have one entry per trial, got "
                f"{len(self.params)}, {len(self.curves)}, {len(self.objectives)}, "
                f"{len(self.numbers)}"
            )

    def truncated(self, count: int) -> StudyTrials:
        return StudyTrials(
            self.params[:count],
            self.curves[:count],
            self.objectives[:count],
            self.seconds,
            self.numbers[:count],
        )

    @property
    def best(self) -> int:
        """Index of the best trial (highest objective; the first one on ties)."""
        if not self.objectives:
            raise ValueError("the study has no finished trial")
        return max(range(len(self.objectives)), key=lambda i: (self.objectives[i], -i))


@dataclass(frozen=True)
class SearchOptions:
    """``trials`` per model; ``seconds``: wall-clock cap for the pair of searches;
    ``storage``: an Optuna storage URL (``None``: in memory); ``study_name``: the prefix of
    the two studies' names; ``seed``: the TPE sampler's seed."""

    trials: int = 20
    seconds: float = math.inf
    storage: str | None = None
    study_name: str = "attack"
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.trials, bool) or not isinstance(self.trials, int) or self.trials < 1:
            raise ValueError(f"trials must be a positive int, got {self.trials!r}")
        if not self.seconds > 0:
            raise ValueError(f"seconds must be > 0, got {self.seconds!r}")


Objective: TypeAlias = Callable[[Mapping[str, float], int], TrialResult]
"""``objective(params, trial_number) -> TrialResult`` (maximised)."""


def describe(params: Mapping[str, float]) -> str:
    """``lr=0.001, momentum=0.9`` (``"fixed"`` when nothing was searched)."""
    if not params:
        return "fixed"
    return ", ".join(f"{k}={v:.3g}" for k, v in params.items())


def _suggest(trial: optuna.Trial, space: tuple[Param, ...]) -> dict[str, float]:
    out: dict[str, float] = {}
    for p in space:
        if isinstance(p, LogFloat):
            out[p.name] = trial.suggest_float(p.name, p.low, p.high, log=True)
        elif isinstance(p, Uniform):
            out[p.name] = trial.suggest_float(p.name, p.low, p.high)
        else:
            out[p.name] = float(trial.suggest_categorical(p.name, list(p.choices)))
    return out


def _read(study: optuna.Study, space: tuple[Param, ...]) -> StudyTrials:
    done = finished_trials(study)
    params = [{p.name: float(t.params[p.name]) for p in space} for t in done]
    return _collected(done, params, [t.number for t in done])


def _collected(
    done: Sequence[optuna.trial.FrozenTrial], params: list[dict[str, float]], numbers: list[int]
) -> StudyTrials:
    return StudyTrials(
        params=params,
        curves=[[float(v) for v in t.user_attrs["result"]["curve"]] for t in done],
        objectives=[float(t.value) for t in done if t.value is not None],
        seconds=sum(float(t.user_attrs["result"]["seconds"]) for t in done),
        numbers=numbers,
    )


def trial_sampler_seed(seed: int, number: int) -> int:
    """The TPE sampler's seed for trial ``number`` of a search seeded with ``seed``: the
    search's own seed for its first trial (whose draw is what it always was), a digest of
    both for the later ones."""
    if number == 0:
        return seed
    digest = hashlib.sha256(f"{seed}/{number}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def _run_one(
    study: optuna.Study, space: tuple[Param, ...], objective: Objective, seed: int
) -> None:
    import optuna

    # TPE seeded by the search's seed and the number the trial gets: its draws depend on
    # (seed, number, the finished trials) alone, so a resumed search suggests what it would
    # have suggested uninterrupted. One sampler seeded per process replayed its first draws
    # after a restart: a capped search resumed later repeated its first trials' settings.
    number = len(study.get_trials(deepcopy=False))
    study.sampler = optuna.samplers.TPESampler(seed=trial_sampler_seed(seed, number))
    trial = study.ask()
    value, record = _measured(objective, _suggest(trial, space), trial.number)
    trial.set_user_attr("result", record)
    study.tell(trial, value)


def _measured(
    objective: Objective, params: Mapping[str, float], number: int
) -> tuple[float, dict[str, Any]]:
    """One trial's objective and its stored result (curve, seconds)."""
    start = time.perf_counter()
    result = objective(params, number)
    if not math.isfinite(result.objective):
        raise ValueError(f"the attack objective must be finite, got {result.objective}")
    curve = [float(v) for v in result.curve]
    return result.objective, {"curve": curve, "seconds": time.perf_counter() - start}


def paired_search(
    space: tuple[Param, ...],
    objectives: tuple[Objective, Objective],
    options: SearchOptions,
    *,
    studies: tuple[Study, Study] | None = None,
) -> tuple[StudyTrials, StudyTrials]:
    """Search ``space`` for both objectives (θ0 first, then θ_I, one trial each in turn).

    ``studies`` says where each search lives (default: ``options.storage``, named
    ``<options.study_name>/original`` and ``…/immunized``). The same study for both sides
    means the two objectives are the same function (an attacker that reads no released
    weight): it is searched once, with the first objective, and returned for both.
    An empty ``space`` (a fixed attacker, e.g. GD with step 1/L) runs one trial per model.
    Returns the two studies' first ``n`` finished trials, ``n`` equal for both (module
    docstring)."""
    target = options.trials if space else 1
    where = studies or tuple(
        Study(options.storage, f"{options.study_name}/{name}") for name in ("original", "immunized")
    )
    if where[0] == where[1]:
        only = _search(open_study(where[0]), space, objectives[0], target, options)
        return only, only
    opened = tuple(open_study(w) for w in where)
    start = time.perf_counter()
    while True:
        counts = [len(finished_trials(s)) for s in opened]  # other machines may add trials too
        if min(counts) >= target or time.perf_counter() - start > options.seconds:
            break
        for i in (0, 1):  # the study that lags behind catches up first
            if counts[i] < target and counts[i] <= min(counts):
                _run_one(opened[i], space, objectives[i], options.seed)
                counts[i] += 1
    first, second = (_read(s, space) for s in opened)
    n = min(len(first.curves), len(second.curves), target)
    _check_finished(n, options)
    return first.truncated(n), second.truncated(n)


def _search(
    study: optuna.Study,
    space: tuple[Param, ...],
    objective: Objective,
    target: int,
    options: SearchOptions,
) -> StudyTrials:
    """One study's first ``target`` finished trials, running trials until it has them or
    ``options.seconds`` have passed."""
    start = time.perf_counter()
    while len(finished_trials(study)) < target and time.perf_counter() - start <= options.seconds:
        _run_one(study, space, objective, options.seed)
    trials = _read(study, space)
    n = min(len(trials.curves), target)
    _check_finished(n, options)
    return trials.truncated(n)


def replayed(
    where: Study, settings: Sequence[tuple[int, Mapping[str, float]]], objective: Objective
) -> StudyTrials:
    """Each setting ``(trial number, params)`` run once by ``objective`` (with the search
    trial's number, which seeds it as the search did) in the study ``where``, in the order
    given; one the study already holds with the same number and parameters (stored by
    another method's run of this θ0) is read back instead. Stored as finished trials, number
    and parameters in ``user_attrs``; the result's ``numbers`` are the settings' numbers."""
    import optuna

    study = open_study(where)

    def key(number: int, params: Mapping[str, float]) -> tuple[int, tuple[tuple[str, float], ...]]:
        return number, tuple(sorted((name, float(v)) for name, v in params.items()))

    def stored() -> dict[tuple[int, tuple[tuple[str, float], ...]], optuna.trial.FrozenTrial]:
        # the first of a setting stored twice (two processes replaying it at once)
        return {
            key(int(t.user_attrs["setting"]), t.user_attrs["params"]): t
            for t in reversed(finished_trials(study))
        }

    for number, params in settings:
        if key(number, params) in stored():
            continue
        value, record = _measured(objective, params, number)
        attrs = {"setting": number, "params": dict(params), "result": record}
        study.add_trial(optuna.trial.create_trial(value=value, user_attrs=attrs))
    held = stored()
    picked = [held[key(number, params)] for number, params in settings]
    return _collected(
        picked, [dict(params) for _, params in settings], [number for number, _ in settings]
    )


def _check_finished(n: int, options: SearchOptions) -> None:
    if n == 0:
        raise ArgumentError(
            "{study}: no trial finished within {seconds} = {value:g} s",
            study=options.study_name,
            value=options.seconds,
        )
