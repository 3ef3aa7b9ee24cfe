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
