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


def test_full_depth_on_a_model_without_taps_is_refused_in_one_line():
    import torch
    from torch import nn

    import condimmune as ci

    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)
    )
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 1, 8, 8, generator=gen), torch.arange(16) % 2
    with pytest.raises(ValueError, match="names no taps"):
        ci.immunize_model(
            model, features="2", benign=(x, y), harmful=(x, y), method="full-depth", epochs=1,
            batch_size=8,
        )  # fmt: skip
