"""The prefix ceilings C(k) across the depth (attacks/prefix_curve.py, Eq. Y6): which layers
come after a tap, the copies that keep θ0 through it, and the curve the suite records."""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import replace

import optuna
import pytest
import torch
from _helpers import separated_classes
from torch import nn

from condimmune.attacks.deep_cost import ExtractionFlops
from condimmune.attacks.deep_headline import DeepAttackSuite
from condimmune.attacks.deep_inputs import ReleasedModel, Task
from condimmune.attacks.deep_records import DeepAttackOptions
from condimmune.attacks.deep_suite import run_deep_suite
from condimmune.attacks.deep_train import TaskTensors
from condimmune.attacks.prefix_curve import kept_through, layers_after

K, CLASSES = 6, 3


def _network() -> nn.Module:
    """Three blocks in a row, the middle one with batch norm; a shared activation called
    before and after the middle block."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.block1 = nn.Linear(K, K)
            self.block2 = nn.Sequential(OrderedDict(linear=nn.Linear(K, K), norm=nn.BatchNorm1d(K)))
            self.block3 = nn.Linear(K, K)
            self.act = nn.Tanh()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.block3(self.act(self.block2(self.act(self.block1(x)))))
            return out

    torch.manual_seed(0)
    net = Net()
    with torch.no_grad():  # released running statistics, to see them reset
        net.block2.norm.running_mean.fill_(0.5)
    return net


EXAMPLE = torch.randn(4, K, generator=torch.Generator().manual_seed(1))

AFTER = {
    # the shared activation first runs right after block1 returns
    "block1": ["act", "block2", "block2.linear", "block2.norm", "block3"],
    # ... so for block2 it counts as before, though it runs after block2 too
    "block2": ["block3"],
    "block2.linear": ["block2.norm", "block3"],
    "block3": [],
}


@pytest.mark.parametrize("tap", AFTER, ids=list(AFTER))
def test_the_layers_after_a_tap_are_those_that_start_after_it_returns(tap: str) -> None:
    assert layers_after(_network(), tap, EXAMPLE) == AFTER[tap]


def test_a_copy_kept_through_a_tap_keeps_every_earlier_weight_and_resets_every_later_one():
    net = _network()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    torch.manual_seed(5)
    copy = kept_through(net, layers_after(net, "block1", EXAMPLE))()
    state = copy.state_dict()
    assert torch.equal(state["block1.weight"], before["block1.weight"])
    for name in ("block2.linear.weight", "block3.weight", "block3.bias"):
        assert not torch.equal(state[name], before[name]), name
    assert torch.equal(state["block2.norm.running_mean"], torch.zeros(K))  # statistics reset
    assert all(p.requires_grad for p in copy.parameters())
    after = net.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())  # the original untouched


TAP_ERRORS = {
    "no-such-submodule": ("block9", "has no submodule 'block9'"),
    "never-called": ("unused", "does not run in the network's forward pass"),
}


@pytest.mark.parametrize("case", TAP_ERRORS.values(), ids=TAP_ERRORS.keys())
def test_a_misnamed_or_unused_tap_is_refused(case: tuple[str, str]) -> None:
    net = _network()
    net.unused = nn.Linear(K, K)
    tap, message = case
    with pytest.raises(ValueError, match=message):
        layers_after(net, tap, EXAMPLE)


def _task(gen: torch.Generator) -> TaskTensors:
    return separated_classes(gen, dims=K, classes=CLASSES, dtype=torch.float32)


def _released(network: nn.Module) -> ReleasedModel:
    gen = torch.Generator().manual_seed(0)
    data = {Task.HARMFUL: _task(gen), Task.BENIGN: _task(gen)}
    network.eval()
    with torch.no_grad():
        features = {
            t: TaskTensors(
                network(d.train_x).double(), d.train_y, network(d.test_x).double(), d.test_y, 3
            )
            for t, d in data.items()
        }
    return ReleasedModel(
        features,
        K,
        images=data,
        network=network,
        extraction=ExtractionFlops(100.0, 50.0),
        network_taps=(("first", "block1"), ("second", "block2"), ("last", "block3")),
    )


OPTIONS = DeepAttackOptions(
    trials=2,
    finetune_trials=2,
    probe_steps=30,
    finetune_steps=30,
    finetune_eval_every=10,
    batch_size=64,
    target_fraction=0.9,
    finetune_benign=False,
)


def test_the_suite_records_the_ceiling_at_every_tap_but_the_last(tmp_path):
    """One point per inner tap, its ceiling its cost over T*(θ0); searched beside θ0's
    studies (once: a second suite reads them back and gives the same curve)."""
    model = _released(_network())
    theta0 = f"sqlite:///{tmp_path / 'theta0.db'}"
    options = replace(
        OPTIONS,
        prefix_curve=True,
        original_storage=theta0,
        original_study_name="theta0",
        storage=f"sqlite:///{tmp_path / 'run.db'}",
    )
    suite = run_deep_suite(["linear-adam", "full-reinit"], model, model, options)
    y = suite.yardstick
    assert y is not None and y.prefix_curve is not None
    assert [p.tap for p in y.prefix_curve] == ["first", "second"]
    for point in y.prefix_curve:
        assert point.ceiling == pytest.approx(point.cost.flops / y.cheapest_original.flops)
        assert point.cost.attacker == f"keep-{point.tap}"
        assert point.cost.budget_steps == OPTIONS.finetune_steps
    keep = {
        s.study_name: s.n_trials
        for s in optuna.get_all_study_summaries(theta0)
        if "/keep-" in s.study_name
    }
    assert len(keep) == 2 and set(keep.values()) == {OPTIONS.finetune_trials}
    assert all(n.startswith("theta0/keep-") and n.endswith("/harmful/original") for n in keep)
    assert DeepAttackSuite.from_json(json.loads(json.dumps(suite.to_json()))) == suite
    again = run_deep_suite(["linear-adam", "full-reinit"], model, model, options)
    assert again.yardstick is not None and again.yardstick.prefix_curve == y.prefix_curve
    trials = {s.study_name: s.n_trials for s in optuna.get_all_study_summaries(theta0)}
    assert {n: trials[n] for n in keep} == keep  # read back, not searched again
    without = run_deep_suite(["linear-adam", "full-reinit"], model, model, OPTIONS)
    assert without.yardstick is not None and without.yardstick.prefix_curve is None
    assert "prefix_curve" not in json.dumps(without.yardstick.to_json())


MISSING = {
    "no-taps": ({"network_taps": ()}, "θ0's taps"),
    "no-network": ({"network": None}, "θ0's network"),
    "no-flops": ({"extraction": None}, "the extraction FLOPs"),
}


@pytest.mark.parametrize("case", MISSING.values(), ids=MISSING.keys())
def test_the_prefix_curve_is_refused_before_any_search_without_what_it_needs(case, tmp_path):
    change, named = case
    model = replace(_released(_network()), **change)
    storage = f"sqlite:///{tmp_path / 'run.db'}"
    with pytest.raises(ValueError, match=f"prefix ceilings .* need {named}"):
        run_deep_suite(
            ["linear-adam"], model, model, replace(OPTIONS, prefix_curve=True, storage=storage)
        )
    assert not (tmp_path / "run.db").exists()  # refused before the first search


def test_a_kept_copy_is_drawn_from_the_seed_and_leaves_the_generator_as_it_was():
    net = _network()
    make = kept_through(net, layers_after(net, "block2", EXAMPLE))
    torch.manual_seed(7)
    seeded = torch.random.get_rng_state()
    first = make().state_dict()["block3.weight"]
    assert torch.equal(torch.random.get_rng_state(), seeded)
    torch.manual_seed(7)
    assert torch.equal(make().state_dict()["block3.weight"], first)
    torch.manual_seed(8)
    assert not torch.equal(make().state_dict()["block3.weight"], first)
