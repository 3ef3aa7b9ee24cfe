"""Where Optuna studies live: :class:`Study` (a storage URL and a name), opened or created
(SQLite in write-ahead-log mode, safe when two processes create one file at once), and a
study's finished trials in order of trial number. The searches of
:mod:`condimmune.attacks.search` are built on these."""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from condimmune.core.errors import ArgumentError

if TYPE_CHECKING:  # imported where a search runs
    import optuna

__all__ = ["Study", "finished_trials", "open_study"]


@dataclass(frozen=True)
class Study:
    """Where one model's search lives: an Optuna storage URL (``None``: in memory) and the
    study's name."""

    storage: str | None
    name: str


_CREATE_ATTEMPTS = 5


@functools.lru_cache(maxsize=8)
def _sqlite(url: str) -> optuna.storages.RDBStorage:
    """An SQLite storage in write-ahead-log mode with ``synchronous=NORMAL``: still safe
    against a killed process, without an fsync per commit (an Optuna trial makes about ten
    commits; the default mode made the storage the bottleneck of a CPU attack run)."""
    import optuna
    import sqlalchemy

    for attempt in range(_CREATE_ATTEMPTS):
        try:
            storage = optuna.storages.RDBStorage(
                url, engine_kwargs={"connect_args": {"timeout": 60}}
            )
            break
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError) as exc:
            # two processes created the same new file's schema at once (two runs of a matrix
            # attacking with one θ0 storage, an attack's workers): the other one's is there
            # now (a duplicate row, or "table ... already exists"), use it
            lost_race = isinstance(exc, sqlalchemy.exc.IntegrityError) or "already exists" in str(
                exc
            )
            if not lost_race or attempt + 1 == _CREATE_ATTEMPTS:
                raise
            time.sleep(0.1 * (attempt + 1))

    def pragmas(connection: Any, _record: object) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    sqlalchemy.event.listen(storage.engine, "connect", pragmas)
    storage.engine.dispose()  # reconnect with the pragmas
    return storage


def open_study(where: Study) -> optuna.Study:
    """The study ``where`` (created when missing). Its sampler is left to the search, which
    seeds one per trial (:func:`condimmune.attacks.search.trial_sampler_seed`)."""
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    optuna.logging.set_verbosity(logging.WARNING)  # optuna's own logger, not torch or global
    try:
        url = where.storage
        storage = _sqlite(url) if url is not None and url.startswith("sqlite:") else url
        return optuna.create_study(
            storage=storage,
            study_name=where.name,
            direction="maximize",
            load_if_exists=True,
        )
    except (ValueError, ImportError, optuna.exceptions.OptunaError, SQLAlchemyError) as exc:
        raise ArgumentError(
            "{storage} = {url!r} cannot be opened: {reason}", url=where.storage, reason=exc
        ) from None


def finished_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The study's completed trials, by trial number."""
    import optuna

    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return sorted(done, key=lambda t: t.number)
