import math
import time
from dataclasses import replace

import pytest

from condimmune.attacks import study_storage
from condimmune.attacks.search import (
    IntChoice,
    LogFloat,
    SearchOptions,
    Study,
    StudyTrials,
    TrialResult,
    Uniform,
    describe,
    paired_search,
    replayed,
)


def _quadratic(curvature: float, steps: int = 3):
    """GD on f(w) = (L/2)(w − 1)² from w = 0: the error after ``steps`` steps is
    |1 − lr·L|^steps, so the best learning rate is exactly 1/L (one step to the minimum)."""

    def objective(params, number):
        w, curve = 0.0, []
        for _ in range(steps):
            w -= params["lr"] * curvature * (w - 1.0)
            curve.append(-min(abs(w - 1.0), 1e6))
        return TrialResult(curve[-1], curve)

    return objective


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_search_finds_the_known_best_learning_rate_of_each_quadratic(seed):
    space = (LogFloat("lr", 1e-3, 10.0),)
    first, second = paired_search(
        space, (_quadratic(4.0), _quadratic(0.5)), SearchOptions(trials=40, seed=seed)
    )
    for trials, curvature in ((first, 4.0), (second, 0.5)):
        best = trials.params[trials.best]["lr"]
        assert abs(math.log(best * curvature)) < math.log(1.15), (curvature, best)
        assert len(trials.curves) == 40


def test_the_same_seed_gives_the_same_trials_and_another_seed_does_not():
    space = (LogFloat("lr", 1e-3, 1.0), Uniform("momentum", 0.0, 0.99), IntChoice("h", (8, 16)))
    objectives = (_quadratic(2.0), _quadratic(3.0))
    runs = [paired_search(space, objectives, SearchOptions(trials=6, seed=s)) for s in (1, 1, 2)]
    assert runs[0][0].params == runs[1][0].params and runs[0][1].params == runs[1][1].params
    assert runs[0][0].params != runs[2][0].params
    assert all(p["h"] in (8.0, 16.0) and 0 <= p["momentum"] <= 0.99 for p in runs[0][0].params)


def test_a_fixed_attacker_runs_once_per_model():
    calls = []

    def objective(params, number):
        calls.append(params)
        return TrialResult(1.0, [1.0])

    first, second = paired_search((), (objective, objective), SearchOptions(trials=20))
    assert len(first.curves) == len(second.curves) == 1 and calls == [{}, {}]
    assert describe({}) == "fixed" and describe({"lr": 0.0012}) == "lr=0.0012"


def test_the_wall_clock_cap_leaves_both_models_the_same_number_of_trials():
    def slow(params, number):
        time.sleep(0.03)
        return TrialResult(0.5, [0.5])

    first, second = paired_search(
        (LogFloat("lr", 1e-3, 1.0),), (slow, slow), SearchOptions(trials=50, seconds=0.15)
    )
    assert 1 <= len(first.curves) == len(second.curves) < 50


def test_a_stored_study_is_resumed_not_repeated(tmp_path):
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    calls = []

    def objective(params, number):
        calls.append(number)
        return TrialResult(-params["lr"], [-params["lr"]])

    space = (LogFloat("lr", 1e-3, 1.0),)
    first, _ = paired_search(
        space, (objective, objective), SearchOptions(trials=3, storage=storage, study_name="s")
    )
    calls.clear()
    again, other = paired_search(
        space, (objective, objective), SearchOptions(trials=5, storage=storage, study_name="s")
    )
    assert calls == [3, 3, 4, 4]  # two new trials per model, none repeated
    assert again.curves[:3] == first.curves and len(other.curves) == 5
    assert again.seconds >= 0


@pytest.mark.parametrize("first_part", [1, 2, 4], ids=lambda k: f"stopped-after-{k}")
def test_a_resumed_search_suggests_what_the_uninterrupted_one_would(tmp_path, first_part):
    """A search stopped (its time cap, a killed process) and resumed later draws the trials
    the uninterrupted search draws, not its first settings again."""
    space = (LogFloat("lr", 1e-3, 1.0), LogFloat("weight_decay", 1e-8, 1e-2))

    def objective(params, number):
        return TrialResult(-params["lr"], [-params["lr"]])

    def search(name: str, trials: int) -> tuple[StudyTrials, StudyTrials]:
        where = SearchOptions(trials=trials, storage=f"sqlite:///{tmp_path / name}.db")
        return paired_search(space, (objective, objective), where)

    straight = search("straight", 6)
    search("resumed", first_part)
    resumed = search("resumed", 6)
    for got, want in zip(resumed, straight, strict=True):
        assert got.params == want.params
        assert len({p["lr"] for p in got.params}) == 6  # no setting drawn twice


@pytest.mark.parametrize("stored", [False, True], ids=["in-memory", "sqlite"])
def test_replayed_settings_run_once_in_the_given_order_and_are_read_back(tmp_path, stored):
    storage = f"sqlite:///{tmp_path / 'replays.db'}" if stored else None
    calls = []

    def objective(params, number):
        calls.append((number, params["lr"]))
        return TrialResult(params["lr"] + number, [params["lr"], float(number)])

    where = Study(storage, "search/settled-40")
    settings = [(4, {"lr": 0.5}), (1, {"lr": 0.25})]
    got = replayed(where, settings, objective)
    assert calls == [(4, 0.5), (1, 0.25)]  # each with its search's trial number
    assert got.params == [{"lr": 0.5}, {"lr": 0.25}] and got.objectives == [4.5, 1.25]
    assert got.curves == [[0.5, 4.0], [0.25, 1.0]] and got.seconds >= 0
    calls.clear()
    again = replayed(where, [(1, {"lr": 0.25}), (7, {"lr": 0.125})], objective)
    if stored:  # another process of this θ0 finds the first setting stored
        assert calls == [(7, 0.125)] and again.curves[0] == got.curves[1]
    else:  # a new in-memory study each time: nothing to read back
        assert calls == [(1, 0.25), (7, 0.125)]
    assert again.params == [{"lr": 0.25}, {"lr": 0.125}] and again.numbers == [1, 7]
    calls.clear()
    other = replayed(where, [(1, {"lr": 0.75})], objective)  # the number, other parameters
    assert calls == [(1, 0.75)] and other.curves == [[0.75, 1.0]]

    def broken(params, number):
        return TrialResult(math.nan, [0.0])

    with pytest.raises(ValueError, match="objective must be finite"):
        replayed(Study(storage, "other"), [(0, {"lr": 1.0})], broken)


def _seeded(params, number):
    """A trial whose curve depends on its trial number, as a seeded attacker's does."""
    return TrialResult(params["lr"], [params["lr"], float(number % 7)])


def test_a_replay_reproduces_its_search_trial_after_a_trial_was_cut_off(tmp_path):
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    space, options = (LogFloat("lr", 1e-3, 1.0),), SearchOptions(1, storage=storage)

    def killed(params, number):
        if number == 1:  # the process died in trial 1: Optuna keeps it as RUNNING
            raise KeyboardInterrupt
        return _seeded(params, number)

    paired_search(space, (killed, killed), options, studies=(Study(storage, "s"),) * 2)
    with pytest.raises(KeyboardInterrupt):
        paired_search(
            space, (killed, killed), replace(options, trials=3), studies=(Study(storage, "s"),) * 2
        )
    found, _ = paired_search(
        space, (_seeded, _seeded), replace(options, trials=3), studies=(Study(storage, "s"),) * 2
    )
    assert found.numbers == [0, 2, 3]  # positions 0, 1, 2: trial 1 never finished
    picks = [(found.numbers[i], found.params[i]) for i in range(3)]
    again = replayed(Study(storage, "s/settled"), picks, _seeded)
    assert again.curves == found.curves and again.numbers == found.numbers


@pytest.mark.parametrize(
    "sizes",
    [(2, 2, 2, 1), (1, 2, 2, 2), (2, 2, 1, 2)],
    ids=["numbers", "params", "objectives"],
)
def test_study_trials_need_one_entry_per_trial(sizes):
    params, curves, objectives, numbers = sizes
    with pytest.raises(ValueError, match="one entry per trial, got"):
        StudyTrials(
            [{"lr": 1.0}] * params, [[0.0]] * curves, [0.0] * objectives, 1.0, [0] * numbers
        )


def test_search_errors_are_explained(tmp_path):
    ok = (_quadratic(1.0), _quadratic(1.0))
    space = (LogFloat("lr", 1e-3, 1.0),)
    with pytest.raises(ValueError, match="trials must be a positive int"):
        SearchOptions(trials=0)
    with pytest.raises(ValueError, match="seconds must be > 0"):
        SearchOptions(seconds=0.0)
    with pytest.raises(ValueError, match=r"storage = 'nonsense://x' cannot be opened"):
        paired_search(space, ok, SearchOptions(storage="nonsense://x"))
    with pytest.raises(ValueError, match=r"no trial finished within seconds = 1e-12 s"):
        paired_search(space, ok, SearchOptions(seconds=1e-12))

    def broken(params, number):
        return TrialResult(math.nan, [0.0])

    with pytest.raises(ValueError, match="objective must be finite"):
        paired_search(space, (broken, broken), SearchOptions(trials=2))


def _integrity() -> Exception:
    import sqlalchemy

    return sqlalchemy.exc.IntegrityError("INSERT INTO alembic_version", {}, Exception())


def _table_exists() -> Exception:
    import sqlalchemy

    return sqlalchemy.exc.OperationalError(
        "CREATE TABLE studies", {}, Exception("table studies already exists")
    )


@pytest.mark.parametrize("lost", [_integrity, _table_exists], ids=["duplicate-row", "table-exists"])
def test_a_storage_whose_schema_another_process_is_creating_is_opened(tmp_path, monkeypatch, lost):
    """Two runs of a matrix (or an attack's workers) open one new storage at the same
    moment: the one that loses the race to create the schema (an IntegrityError, or an
    OperationalError "table ... already exists") opens what the other created. Made
    deterministic here: the first attempt fails as it did in such a race."""
    import optuna

    real = optuna.storages.RDBStorage
    calls = []

    def racing(url: str, **kwargs: object) -> optuna.storages.RDBStorage:
        calls.append(url)
        if len(calls) == 1:
            real(url, **kwargs)  # "the other process" creates the schema
            raise lost()
        return real(url, **kwargs)

    monkeypatch.setattr(optuna.storages, "RDBStorage", racing)
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    storage = study_storage._sqlite(url)
    assert len(calls) == 2 and storage.get_all_studies() == []

    def always(url: str, **kwargs: object) -> optuna.storages.RDBStorage:
        raise lost()

    monkeypatch.setattr(optuna.storages, "RDBStorage", always)
    with pytest.raises(type(lost())):  # not a race: said after 5 tries
        study_storage._sqlite(f"sqlite:///{tmp_path / 'other.db'}")


def test_a_storage_that_fails_otherwise_is_not_retried(tmp_path, monkeypatch):
    import optuna
    import sqlalchemy

    calls = []

    def locked(url: str, **kwargs: object) -> optuna.storages.RDBStorage:
        calls.append(url)
        raise sqlalchemy.exc.OperationalError("SELECT", {}, Exception("disk I/O error"))

    monkeypatch.setattr(optuna.storages, "RDBStorage", locked)
    with pytest.raises(sqlalchemy.exc.OperationalError, match="disk I/O error"):
        study_storage._sqlite(f"sqlite:///{tmp_path / 'broken.db'}")
    assert len(calls) == 1
