"""docs/api.md's snippet runs as printed: immunize a torchvision model on the packaged MNIST
digits, attack the pair, run a named experiment, through the public API only."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_api_snippet_runs_and_returns_typed_results(capsys: pytest.CaptureFixture[str]):
    import condimmune as ci

    page = (ROOT / "docs" / "api.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)\n```", page, flags=re.S)
    namespace: dict = {}
    exec(compile(code, "docs/api.md", "exec"), namespace)
    result, suite, run = namespace["result"], namespace["suite"], namespace["run"]
    assert isinstance(result, ci.ImmunizedModel) and result.history.global_step == 4
    # θ_I's frozen parts are θ0's: only layer4 and the head were trained
    before, after = result.original.state_dict(), result.immunized.state_dict()
    changed = {k for k in before if not before[k].equal(after[k])}
    assert changed and all(k.startswith(("body.model.layer4.", "head.")) for k in changed)
    assert isinstance(suite, ci.DeepAttackSuite)
    assert set(suite.attackers) == {"linear-adam", "std-adam"}
    assert isinstance(run, ci.RunResult) and run.plan.method.options.harmful_step == 0.1
    assert capsys.readouterr().out.count("\n") == 2
