from dataclasses import replace

import pytest

from condimmune.attacks import deep_objective
from condimmune.attacks.deep_inputs import Task
from condimmune.attacks.deep_objective import attacker_objective, heal_phase, step_budget
from condimmune.attacks.deep_records import DeepAttackOptions
from condimmune.attacks.registry import DEEP_ATTACKERS, DeepAttacker


class _Stop(Exception):
    pass


@pytest.mark.parametrize("steps", [None, 800], ids=["search-budget", "settling-budget"])
def test_the_heal_phase_keeps_the_common_budget_when_the_attack_runs_longer(monkeypatch, steps):
    """Eq. R1 runs heal-adam again with a longer harmful phase: its benign heal phase stays
    the common budget's, which is what its FLOPs count (harmful_curves)."""
    seen = []

    def inputs(attacker, spec, model, task, *, heal):
        seen.append(heal)
        raise _Stop

    monkeypatch.setattr(deep_objective, "attacker_inputs", inputs)
    options = DeepAttackOptions(finetune_steps=40, batch_size=64, seed=3)
    spec = DEEP_ATTACKERS[DeepAttacker.HEAL_ADAM]
    budget = step_budget(spec, options)
    if steps is not None:
        budget = replace(budget, steps=steps)
    with pytest.raises(_Stop):
        attacker_objective(DeepAttacker.HEAL_ADAM, spec, None, Task.HARMFUL, budget, options)
    assert seen == [heal_phase(options)] == [(40, 64, 3)]


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
