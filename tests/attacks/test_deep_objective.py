from dataclasses import replace

import pytest

from condimmune.attacks import deep_objective
from condimmune.attacks.deep_inputs import Task
from condimmune.attacks.deep_objective import attacker_objective, heal_phase, step_budget
from condimmune.attacks.deep_records import DeepAttackOptions
from condimmune.attacks.registry import DEEP_ATTACKERS, DeepAttacker


class _Stop(Exception):
    pass


def _stopping_inputs(monkeypatch) -> list[tuple[int, int, int]]:
    """``attacker_inputs`` replaced by one that records the heal phase it is asked for and
    stops: the list it records into."""
    seen: list[tuple[int, int, int]] = []

    def inputs(attacker, spec, model, task, *, heal):
        seen.append(heal)
        raise _Stop

    monkeypatch.setattr(deep_objective, "attacker_inputs", inputs)
    return seen


@pytest.mark.parametrize("steps", [None, 800], ids=["search-budget", "settling-budget"])
def test_the_heal_phase_keeps_the_common_budget_when_the_attack_runs_longer(monkeypatch, steps):
    """Eq. R1 runs heal-adam again with a longer harmful phase: its benign heal phase stays
    the common budget's, which is what its FLOPs count (harmful_curves)."""
    seen = _stopping_inputs(monkeypatch)
    options = DeepAttackOptions(finetune_steps=40, batch_size=64, seed=3)
    spec = DEEP_ATTACKERS[DeepAttacker.HEAL_ADAM]
    budget = step_budget(spec, options)
    if steps is not None:
        budget = replace(budget, steps=steps)
    heal = DeepAttacker.HEAL_ADAM
    objective = attacker_objective(heal, spec, None, Task.HARMFUL, budget, options)
    with pytest.raises(_Stop):
        objective({"lr": 1e-3}, 0)
    assert seen == [heal_phase(options)] == [(40, 64, 3)]


def test_an_objective_prepares_its_inputs_at_its_first_trial_once(monkeypatch):
    """A search whose trials are all read back from storage never calls its objective, so
    it must not pay for the attacker's inputs (heal-adam's heal phase trains the network,
    whitening is an SVD): they are made at the first trial and shared by the rest."""
    made = []

    def inputs(attacker, spec, model, task, *, heal):
        made.append(attacker)
        return "data", None, 0

    monkeypatch.setattr(deep_objective, "attacker_inputs", inputs)
    monkeypatch.setattr(deep_objective, "probe_curve", lambda *args, **kwargs: [0.1, 0.5])
    spec = DEEP_ATTACKERS[DeepAttacker.LINEAR_ADAM]
    options = DeepAttackOptions()
    objective = attacker_objective(
        DeepAttacker.LINEAR_ADAM, spec, None, Task.HARMFUL, step_budget(spec, options), options
    )
    assert made == []
    results = [objective({"lr": 1e-2}, number) for number in range(3)]
    assert made == [DeepAttacker.LINEAR_ADAM]
    assert [r.curve for r in results] == [[0.1, 0.5]] * 3


def test_the_cost_of_a_healing_attacker_is_counted_without_healing(monkeypatch):
    """A step's FLOPs depend on the architecture only: harmful_curves asks for heal-adam's
    network with a heal phase of 0 steps (its heal steps are counted apart)."""
    seen = _stopping_inputs(monkeypatch)
    options = DeepAttackOptions(finetune_steps=40, batch_size=64, seed=3)

    class _Model:
        extraction = None

    with pytest.raises(_Stop):
        deep_objective.harmful_curves(DeepAttacker.HEAL_ADAM, _Model(), None, [0, 40], options)
    assert seen == [(0, 64, 3)]


# Stored searches are found by these names (runs/…/theta0_studies.db of the kept matrices):
# a change to an attacker's spec that is not meant to invalidate its trials must keep them.
STORED_NAMES = [
    pytest.param(DeepAttacker.LINEAR_GD, "linear-gd-33673dfe", id="linear-gd"),
    pytest.param(DeepAttacker.FULL_REINIT, "full-reinit-e215a8fb", id="full-reinit"),
]


@pytest.mark.parametrize(("attacker", "name"), STORED_NAMES)
def test_stored_searches_keep_their_names(attacker, name):
    options = DeepAttackOptions(study_name="run", original_study_name="theta0")
    original, _ = deep_objective.studies(attacker, Task.HARMFUL, options)
    assert original.name == f"theta0/{name}/harmful/original"


def test_a_revised_attacker_never_reads_its_earlier_revisions_searches(monkeypatch):
    """scratch-adam's network changed (revision 1): its studies are named apart from
    revision 0's, here shown with its fields unchanged so the revision alone tells them
    apart."""
    options = DeepAttackOptions(study_name="run")
    attacker = DeepAttacker.SCRATCH_ADAM
    revised, _ = deep_objective.studies(attacker, Task.HARMFUL, options)
    earlier = {**DEEP_ATTACKERS, attacker: replace(DEEP_ATTACKERS[attacker], revision=0)}
    monkeypatch.setattr(deep_objective, "DEEP_ATTACKERS", earlier)
    first, _ = deep_objective.studies(attacker, Task.HARMFUL, options)
    assert DEEP_ATTACKERS[attacker].revision == 1
    assert revised.name != first.name
    assert all(s.name.startswith("run/scratch-adam-") for s in (revised, first))
