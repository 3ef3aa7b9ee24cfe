"""The deep attack suite on constructed problems whose answers are known."""

import copy
import json
import math
from dataclasses import replace

import pytest
import torch
from _helpers import separated_classes
from torch import nn

from condimmune.attacks import deep_objective
from condimmune.attacks.deep_headline import (
    DeepAttackSuite,
    DeepWorstCase,
    UtilityCheck,
    rescored,
    suite_record,
)
from condimmune.attacks.deep_inputs import fit_task_transform
from condimmune.attacks.deep_records import (
    DeepAttackerSummary,
    DeepAttackOptions,
    TaskAttack,
    redact,
    relative_finetuning_deviation,
    steps_to,
)
from condimmune.attacks.deep_suite import ReleasedModel, Task, run_deep_suite
from condimmune.attacks.deep_train import (
    Budget,
    TaskTensors,
    best_so_far_area,
    network_curve,
    probe_curve,
    zero_head,
)
from condimmune.attacks.probes import AttackerTransform, fit_transform
from condimmune.attacks.registry import (
    DEEP_ATTACKERS,
    DeepAttacker,
    DeepFamily,
    Optimizer,
)
from condimmune.attacks.search import StudyTrials
from condimmune.attacks.yardstick import Cost, Yardstick

K, CLASSES = 6, 3
NETWORKS = (DeepFamily.BLOCKS, DeepFamily.FULL, DeepFamily.SCRATCH)


def _task(gen: torch.Generator) -> TaskTensors:
    """Three well-separated Gaussian classes in 6 dimensions (Bayes accuracy ≈ 1)."""
    return separated_classes(gen, dims=K, classes=CLASSES)


def _blocks() -> nn.Module:
    """Trainable blocks that start as the identity (so the features are well conditioned)."""
    module = nn.Sequential(nn.Linear(K, K), nn.BatchNorm1d(K), nn.Linear(K, K))
    with torch.no_grad():
        for layer in (module[0], module[2]):
            layer.weight.copy_(torch.eye(K))
            layer.bias.zero_()
    return module


def _released(data: dict[Task, TaskTensors], module: nn.Module) -> ReleasedModel:
    """Features = the module's output on the inputs; the inputs serve as prefix, skip
    features, tap activations and images (the module is both the blocks and the whole
    network)."""
    module.eval()
    with torch.no_grad():
        features = {
            t: TaskTensors(
                module(d.train_x.float()).double(),
                d.train_y,
                module(d.test_x.float()).double(),
                d.test_y,
                d.classes,
            )
            for t, d in data.items()
        }
    floats = {
        t: TaskTensors(d.train_x.float(), d.train_y, d.test_x.float(), d.test_y, d.classes)
        for t, d in data.items()
    }
    return ReleasedModel(features, K, data, floats, floats, module, module, taps=data)


OPTIONS = DeepAttackOptions(
    trials=3,
    finetune_trials=2,
    probe_steps=40,
    finetune_steps=40,
    finetune_eval_every=10,
    batch_size=64,
    target_fraction=0.9,
)


@pytest.fixture(scope="module")
def problem() -> dict[Task, TaskTensors]:
    gen = torch.Generator().manual_seed(0)
    return {Task.HARMFUL: _task(gen), Task.BENIGN: _task(gen)}


@pytest.mark.parametrize("attacker", list(DeepAttacker), ids=lambda a: a.value)
def test_every_attacker_reaches_the_target_on_a_well_conditioned_problem(attacker, problem):
    model = _released(problem, _blocks())
    suite = run_deep_suite([attacker], model, model, OPTIONS)
    entry = suite.attackers[attacker.value]
    # a weight-free attacker is not searched on the benign task: it would be the same on both
    assert (entry.benign is None) == DEEP_ATTACKERS[attacker].weight_free
    for task in (t for t in (entry.harmful, entry.benign) if t is not None):
        assert task.original.best_accuracy >= 0.8, task  # chance is 1/3
        # the same model twice, the same seeds: identical searches, nothing slowed
        assert task.reached and task.slowdown == 1.0 and task.rfd == 0.0
        assert task.original.curve == task.immunized.curve
        fixed = not DEEP_ATTACKERS[attacker].space  # nothing to search: one trial
        assert task.original.trials == (1 if fixed else 2 if entry.family in NETWORKS else 3)
    assert entry.eval_steps == Budget(40, 10 if entry.family in NETWORKS else 1).eval_steps


def test_whitening_undoes_any_invertible_map_and_standardising_any_diagonal_one(problem):
    gen = torch.Generator().manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(K, K, generator=gen, dtype=torch.float64))
    mixing = q @ torch.diag(torch.logspace(0, -3, K, dtype=torch.float64))
    diagonal = torch.logspace(0, -3, K, dtype=torch.float64)
    task = problem[Task.HARMFUL]
    # whitened features differ by a rotation: optimizers that are rotation-equivariant
    # (GD, momentum) are not slowed; standardised ones are identical under a diagonal map
    for attackers, transform in (
        ((DeepAttacker.WHITEN_GD, DeepAttacker.WHITEN_MOMENTUM), mixing),
        ((DeepAttacker.STD_GD, DeepAttacker.STD_ADAM), torch.diag(diagonal)),
    ):
        moved = TaskTensors(
            task.train_x @ transform.mT, task.train_y, task.test_x @ transform.mT, task.test_y, 3
        )
        base = ReleasedModel({Task.HARMFUL: task, Task.BENIGN: task}, K)
        changed = ReleasedModel({Task.HARMFUL: moved, Task.BENIGN: moved}, K)
        suite = run_deep_suite(list(attackers), base, changed, OPTIONS)
        for name in attackers:
            h = suite.attackers[name.value].harmful
            assert h.slowdown == 1.0 and h.rfd < 0.5, name
    # without the transform, the paper's attacker is slowed by the ill-conditioned map
    suite = run_deep_suite(
        ["linear-gd"],
        ReleasedModel({Task.HARMFUL: task, Task.BENIGN: task}, K),
        ReleasedModel(
            {
                t: TaskTensors(
                    task.train_x @ mixing.mT, task.train_y, task.test_x @ mixing.mT, task.test_y, 3
                )
                for t in Task
            },
            K,
        ),
        OPTIONS,
    )
    assert suite.attackers["linear-gd"].harmful.slowdown > 1.0


def test_feature_transforms_standardise_and_whiten_the_training_rows(problem):
    task = problem[Task.HARMFUL]
    std = fit_task_transform(AttackerTransform.STANDARDIZE, task).train_x
    torch.testing.assert_close(std.mean(0), torch.zeros(K, dtype=torch.float64))
    torch.testing.assert_close(std.square().mean(0), torch.ones(K, dtype=torch.float64))
    white = fit_task_transform(AttackerTransform.WHITEN, task).train_x
    torch.testing.assert_close(white.mT @ white / white.shape[0], torch.eye(K, dtype=torch.float64))
    assert fit_task_transform(AttackerTransform.NONE, task) is task


@pytest.mark.parametrize("kind", ["standardize", "whiten"])
@pytest.mark.parametrize("centre", [False, True], ids=["no-bias", "bias"])
def test_one_transform_fits_the_training_rows_and_maps_held_out_rows_alike(problem, kind, centre):
    """The one standardisation and whitening of both suites: the held-out map applied to the
    training rows gives the training features (to rounding), centred iff the probe has a
    bias; uncentred, it is the linear suite's (the offset of a bias-free probe is signal)."""
    x = problem[Task.HARMFUL].train_x + 3.0  # an offset, so that centring matters
    fitted = fit_transform(x, kind, centre=centre)
    torch.testing.assert_close(fitted.apply(x), fitted.train, rtol=1e-10, atol=1e-10)
    mean = fitted.train.mean(0)
    if centre:
        torch.testing.assert_close(mean, torch.zeros(K, dtype=torch.float64))
    else:
        if kind == "standardize":  # uncentred: the offset stays in the features
            assert float(mean.abs().min()) > 0.1
        torch.testing.assert_close(fitted.train, ci_attacker_features(x, kind), rtol=0, atol=0)


def ci_attacker_features(x: torch.Tensor, kind: str) -> torch.Tensor:
    from condimmune import attacker_features

    return attacker_features(x, kind)


def test_least_squares_and_gd_probes_are_the_closed_forms(problem):
    task = problem[Task.HARMFUL]
    budget = Budget(5)
    a = torch.nn.functional.pad(task.train_x, (0, 1), value=1.0)
    at = torch.nn.functional.pad(task.test_x, (0, 1), value=1.0)
    y = torch.nn.functional.one_hot(task.train_y, 3).double()
    w = torch.linalg.lstsq(a, y).solution
    expected = float(((at @ w).argmax(1) == task.test_y).double().mean())
    curve = probe_curve(task, Optimizer.LSTSQ, {"ridge": 1e-12}, budget)
    assert curve[0] == pytest.approx(1 / 3, abs=0.05)  # w = 0 predicts class 0
    assert curve[1:] == [pytest.approx(expected)] * 5
    step = a.shape[0] / (2 * float(torch.linalg.matrix_norm(a, ord=2)) ** 2)
    w = torch.zeros(K + 1, 3, dtype=torch.float64)
    for _ in range(5):
        w = w - step * (2 / a.shape[0]) * a.mT @ (a @ w - y)
    gd = probe_curve(task, Optimizer.GD_1L, {}, budget)
    assert gd[-1] == float(((at @ w).argmax(1) == task.test_y).double().mean())


def test_reinitialising_ignores_the_immunized_weights(problem):
    d = problem[Task.HARMFUL]
    task = TaskTensors(d.train_x.float(), d.train_y, d.test_x.float(), d.test_y, d.classes)
    budget = Budget(20, 5, 32)
    one, other = _blocks(), _blocks()
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(-7.0).add_(3.0)
    params = {"lr": 1e-2, "weight_decay": 1e-4}
    curves = [
        network_curve(
            lambda m=m: copy.deepcopy(m), K, task, Optimizer.ADAM, params, budget, reinit=r, seed=3
        )
        for m in (one, other)
        for r in (True, False)
    ]
    assert curves[0] == curves[2]  # re-initialised: the weights do not matter
    assert curves[1] != curves[3]  # fine-tuned: they do


class _Recording(nn.Module):
    """Blocks that record the mode of every forward pass."""

    def __init__(self, modes: list[bool]) -> None:
        super().__init__()
        self.blocks, self.modes = _blocks(), modes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.training)
        out: torch.Tensor = self.blocks(x)
        return out


def test_a_networks_first_point_is_its_zero_heads_accuracy_without_a_pass(problem):
    d = problem[Task.HARMFUL]
    task = TaskTensors(d.train_x.float(), d.train_y, d.test_x.float(), d.test_y, d.classes)
    modes: list[bool] = []
    params = {"lr": 1e-2, "weight_decay": 1e-4}
    curve = network_curve(lambda: _Recording(modes), K, task, Optimizer.ADAM, params, Budget(4, 2))
    untrained = nn.Sequential(_blocks(), zero_head(K, d.classes)).eval()
    with torch.no_grad():
        predicted = untrained(task.test_x).argmax(dim=1)
    assert curve[0] == float((predicted == task.test_y).double().mean())
    # step 1's training pass comes first: no evaluation pass was spent on step 0
    assert modes[0] is True and modes.count(False) == 2 * math.ceil(len(d.test_y) / 512)


class _Tokened(nn.Module):
    """Blocks plus a parameter no layer resets (as a ViT's class token)."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = _blocks()
        self.token = nn.Parameter(torch.zeros(K))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.blocks(x) + self.token
        return out


def test_reinitialising_draws_every_parameter_afresh():
    """A parameter without a ``reset_parameters`` of its own is drawn too, so two networks
    of one architecture re-initialise to the same weights whatever they held."""
    from condimmune.attacks.deep_train import _reinitialise

    nets = [_Tokened(), _Tokened()]
    with torch.no_grad():
        nets[1].token.fill_(5.0)
        nets[1].blocks[0].weight.mul_(-7.0)
    states = []
    for net in nets:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            _reinitialise(net)
        states.append(net.state_dict())
    assert states[0].keys() == states[1].keys()
    for name, value in states[0].items():
        assert torch.equal(value, states[1][name]), name
    assert states[0]["token"].abs().max() <= 0.04 and states[0]["token"].abs().max() > 0


def test_a_diverging_trial_keeps_its_last_accuracy(problem):
    curve = probe_curve(
        problem[Task.HARMFUL], Optimizer.MOMENTUM, {"lr_c": 1e9, "momentum": 0.9}, Budget(30)
    )
    assert len(curve) == 31 and all(math.isfinite(a) for a in curve)


def _trials(curves, objectives=None):
    objectives = objectives or [best_so_far_area(c) for c in curves]
    numbers = list(range(len(curves)))
    return StudyTrials([{"lr": float(i)} for i in numbers], curves, objectives, 1.0, numbers)


def test_metrics_of_hand_made_curves():
    steps = [0, 10, 20, 30]
    original = _trials([[0.2, 0.5, 0.9, 1.0], [0.2, 0.9, 0.95, 0.95]])
    immunized = _trials([[0.2, 0.3, 0.6, 0.96], [0.2, 0.4, 0.5, 0.5]])
    t = TaskAttack.of(original, immunized, steps, 0.95)
    assert t.target == pytest.approx(0.95)
    assert t.original.steps_to_target == 20 and t.immunized.steps_to_target == 30
    assert t.slowdown == 1.5 and t.reached
    assert t.original.setting == "lr=1" and t.original.best_accuracy == 1.0
    assert best_so_far_area([0.2, 0.9, 0.5, 0.95]) == pytest.approx((0.2 + 0.9 + 0.9 + 0.95) / 4)
    rfd = 100 * (abs(0.9 - 0.3) / 0.9 + abs(0.95 - 0.6) / 0.95 + abs(0.95 - 0.96) / 0.95) / 3
    assert t.rfd == pytest.approx(rfd)  # the best trials: original #1, immunized #0
    never = TaskAttack.of(original, _trials([[0.2, 0.2, 0.2, 0.2]]), steps, 0.95)
    assert not never.reached and never.slowdown == 31 / 20
    assert steps_to([[0.1, 0.2]], [0, 5], 0.5) is None
    assert steps_to([[0.1, 0.6], [0.7, 0.7]], [0, 5], 0.5) == 0
    instant = TaskAttack.of(_trials([[0.9, 0.9]]), _trials([[0.9, 0.9]]), [0, 1], 0.9)
    assert instant.slowdown == 1.0  # reached at step 0 on both sides


def _summary(orig: float, imm: float, slowdown: float, family=DeepFamily.PROBE):
    o = _trials([[0.1, orig]])
    i = _trials([[0.1, imm]])
    task = TaskAttack.of(o, i, [0, 1], 0.95)
    task = TaskAttack(task.target, task.original, task.immunized, slowdown, True, task.rfd)
    return DeepAttackerSummary(family, [0, 1], task, task)


def test_worst_case_only_counts_competent_attackers_and_utility_cap():
    summaries = {
        DeepAttacker.LINEAR_GD: _summary(0.95, 0.60, 5.0),
        DeepAttacker.BLOCKS_ADAM: _summary(0.99, 0.98, 1.2),
        DeepAttacker.SKIP_ADAM: _summary(0.30, 0.30, 1.0),  # never learns: not competent
    }
    worst = DeepWorstCase.of(summaries, 0.95)
    assert worst.attacker is DeepAttacker.BLOCKS_ADAM and worst.slowdown == 1.2
    assert worst.competent == [DeepAttacker.LINEAR_GD, DeepAttacker.BLOCKS_ADAM]
    assert worst.strongest is DeepAttacker.BLOCKS_ADAM and worst.accuracy_original == 0.99
    assert UtilityCheck.of(0.99, 0.95, 5.0).passes
    assert not UtilityCheck.of(0.99, 0.90, 5.0).passes
    assert UtilityCheck.of(0.99, 0.90, 5.0).drop_points == pytest.approx(9.0)
    with pytest.raises(ValueError, match="no attacker"):
        DeepWorstCase.of({}, 0.95)


def test_worst_case_competence_is_reaching_the_yardstick_target():
    # a weight-free attacker given a longer budget reaches 0.97; the weight-reading ones
    # reach 0.88 within the common budget, which set τ = 0.95 × 0.88
    summaries = {
        DeepAttacker.FULL_REINIT: _summary(0.97, 0.97, 1.0, DeepFamily.FULL),
        DeepAttacker.LINEAR_ADAM: _summary(0.88, 0.85, 3.0),
        DeepAttacker.WHITEN_GD: _summary(0.86, 0.86, 1.5),
        DeepAttacker.SKIP_ADAM: _summary(0.80, 0.80, 1.0, DeepFamily.SKIP),  # below τ
    }
    assert DeepWorstCase.of(summaries, 0.95).attacker is DeepAttacker.FULL_REINIT  # old bar
    worst = DeepWorstCase.of(summaries, 0.95, target=0.95 * 0.88)
    assert worst.attacker is DeepAttacker.WHITEN_GD and worst.slowdown == 1.5
    assert worst.competent == [DeepAttacker.LINEAR_ADAM, DeepAttacker.WHITEN_GD]
    with pytest.raises(ValueError, match="reaches the target"):
        DeepWorstCase.of(summaries, 0.95, target=0.99)


def test_rescored_recomputes_the_worst_case_under_the_yardstick_target():
    summaries = {
        DeepAttacker.FULL_REINIT: _summary(0.97, 0.97, 1.0, DeepFamily.FULL),
        DeepAttacker.LINEAR_ADAM: _summary(0.88, 0.85, 3.0),
    }
    options = DeepAttackOptions(trials=1, finetune_trials=1)
    stored = suite_record(summaries, options, 1.0)  # no yardstick: the fraction of the best
    assert stored.worst_case.attacker is DeepAttacker.FULL_REINIT
    stick = Yardstick(
        target=0.95 * 0.88,
        cheapest_original=Cost("linear-adam", 1.0, 1, True),
        cheapest_immunized=Cost("linear-adam", 3.0, 3, True),
        cheapest_weight_free=Cost("full-reinit", 10.0, 10, True),
        s=3.0,
        s_max=10.0,
        p=math.log(3.0) / math.log(10.0),
        original=[],
        immunized=[],
    )
    again = rescored(replace(stored, yardstick=stick))
    assert again.worst_case.attacker is DeepAttacker.LINEAR_ADAM
    assert again.attackers == stored.attackers and again.yardstick == stick


def test_suite_record_round_trips_and_hides_the_storage_password(problem):
    model = _released(problem, _blocks())
    options = DeepAttackOptions(
        trials=2, probe_steps=5, storage="postgresql://me:secret@db.example/studies"
    )
    assert redact(options.storage) == "postgresql://me:***@db.example/studies"
    with pytest.raises(ValueError, match="cannot be opened"):
        run_deep_suite(["linear-gd"], model, model, options)
    suite = run_deep_suite(["linear-adam", "linear-gd"], model, model, OPTIONS)
    back = DeepAttackSuite.from_json(json.loads(json.dumps(suite.to_json())))
    assert back == suite and suite.utility is not None and suite.utility.passes
    assert list(suite.attackers) == ["linear-adam", "linear-gd"]


def test_suite_errors_are_explained(problem):
    model = _released(problem, _blocks())
    bare = ReleasedModel(model.features, K)
    with pytest.raises(ValueError, match="at least one attacker"):
        run_deep_suite([], model, model, OPTIONS)
    with pytest.raises(ValueError, match="unknown attacker 'gd'"):
        run_deep_suite(["gd"], model, model, OPTIONS)
    with pytest.raises(ValueError, match="named twice"):
        run_deep_suite(["mlp-adam", "mlp-adam"], model, model, OPTIONS)
    for attacker, missing in (
        ("skip-adam", "skip features"),
        ("blocks-adam", "prefix activations"),
        ("full-adam", "images"),
    ):
        with pytest.raises(ValueError, match=f"needs the model's {missing}"):
            run_deep_suite([attacker], bare, bare, OPTIONS)
    for field, value, message in (
        ("trials", 0, "trials must be a positive int"),
        ("target_fraction", 1.5, "target_fraction must be in"),
        ("utility_cap", -1.0, "utility_cap must be ≥ 0"),
    ):
        with pytest.raises(ValueError, match=message):
            DeepAttackOptions(**{field: value})
    with pytest.raises(ValueError, match="eval_every must be a positive int"):
        Budget(10, 0)
    with pytest.raises(ValueError, match="RFD needs at least one evaluation step"):
        relative_finetuning_deviation([0.5], [0.5])


def test_the_registry_covers_every_attacker_once():
    assert set(DEEP_ATTACKERS) == set(DeepAttacker)
    probes = [a for a, s in DEEP_ATTACKERS.items() if s.linear_probe]
    assert DeepAttacker.MLP_ADAM not in probes and DeepAttacker.LINEAR_GD in probes
    assert DEEP_ATTACKERS[DeepAttacker.BLOCKS_REINIT].reinit
    prefix_only = {a.value for a, s in DEEP_ATTACKERS.items() if s.prefix_only}
    free = {"raw-lstsq", "raw-adam", "scratch-adam", "full-reinit"}
    assert prefix_only == free | {"skip-adam", "blocks-reinit"}
    assert {a.value for a, s in DEEP_ATTACKERS.items() if s.weight_free} == free


def test_the_benign_task_can_get_a_smaller_budget(problem):
    model = _released(problem, _blocks())
    options = DeepAttackOptions(
        trials=3,
        benign_trials=1,
        finetune_trials=2,
        finetune_steps=4,
        finetune_eval_every=2,
        probe_steps=5,
        finetune_benign=False,
    )
    suite = run_deep_suite(["linear-adam", "blocks-adam"], model, model, options)
    probe, blocks = suite.attackers["linear-adam"], suite.attackers["blocks-adam"]
    assert probe.harmful.original.trials == 3 and probe.benign is not None
    assert probe.benign.original.trials == 1
    assert blocks.benign is None and blocks.harmful.original.trials == 2
    assert suite.utility is not None  # from the linear probe's benign search
    with pytest.raises(ValueError, match="benign_trials must be a positive int"):
        DeepAttackOptions(benign_trials=0)


def test_the_weight_free_attackers_can_get_their_own_step_budget(problem):
    """``weight_free_steps`` lengthens raw-adam (a probe) and scratch-adam (a network) and
    nothing that reads the released weights."""
    from dataclasses import replace

    model = _released(problem, _blocks())
    options = replace(OPTIONS, trials=1, finetune_trials=1, weight_free_steps=60)
    names = ["linear-adam", "raw-adam", "scratch-adam", "blocks-adam"]
    suite = run_deep_suite(names, model, model, options)
    last = {name: suite.attackers[name].eval_steps[-1] for name in names}
    assert last == {"linear-adam": 40, "raw-adam": 60, "scratch-adam": 60, "blocks-adam": 40}
    assert suite.settings.weight_free_steps == 60
    with pytest.raises(ValueError, match="weight_free_steps must be a positive int"):
        DeepAttackOptions(weight_free_steps=0)


def test_the_raw_pixel_probe_can_get_a_budget_of_its_own(problem, monkeypatch):
    """``raw_probe_steps`` lengthens raw-adam alone (raw-lstsq stays one solve, scratch-adam
    keeps ``weight_free_steps``), and τ is still set at the common budget: the long run
    measures what τ costs, it does not raise it."""
    from dataclasses import replace

    from condimmune.attacks.deep_cost import ExtractionFlops

    model = replace(_released(problem, _blocks()), extraction=ExtractionFlops(100.0, 50.0))
    options = replace(OPTIONS, trials=1, finetune_trials=1, weight_free_steps=60)
    names = ["linear-adam", "raw-lstsq", "raw-adam", "scratch-adam"]
    seen: dict[str, int | None] = {}
    measured = deep_objective.attacker_curves

    def curves(name, *args, target_steps=None, **kwargs):
        seen[name] = target_steps
        return measured(name, *args, target_steps=target_steps, **kwargs)

    monkeypatch.setattr(deep_objective, "attacker_curves", curves)
    suite = run_deep_suite(names, model, model, replace(options, raw_probe_steps=300))
    last = {name: suite.attackers[name].eval_steps[-1] for name in names}
    assert last == {"linear-adam": 40, "raw-lstsq": 60, "raw-adam": 300, "scratch-adam": 60}
    assert suite.settings.raw_probe_steps == 300
    # only the common budget's evaluations may set τ (Eq. Y1): probe_steps for raw-adam
    assert seen == {"linear-adam": None, "raw-lstsq": 40, "raw-adam": 40, "scratch-adam": 40}
    with pytest.raises(ValueError, match="raw_probe_steps must be a positive int"):
        DeepAttackOptions(raw_probe_steps=0)


def test_the_suite_measures_the_yardstick_when_the_extraction_flops_are_known(problem):
    """The same model twice: S = 1 exactly; the weight-free attackers cost the same on both
    models and bound S; without extraction FLOPs the yardstick is left out, not guessed."""
    from dataclasses import replace

    from condimmune.attacks.deep_cost import ExtractionFlops

    model = replace(_released(problem, _blocks()), extraction=ExtractionFlops(100.0, 50.0))
    names = ["linear-adam", "raw-adam", "scratch-adam", "blocks-adam"]
    suite = run_deep_suite(names, model, model, OPTIONS)
    y = suite.yardstick
    assert y is not None and y.s == 1.0
    assert y.cheapest_weight_free is not None and y.s_max is not None and y.s <= y.s_max
    assert {c.attacker for c in y.original} == set(names)
    free = {c.attacker: c for c in y.original if c.attacker in ("raw-adam", "scratch-adam")}
    assert free == {c.attacker: c for c in y.immunized if c.attacker in free}
    probe = next(c for c in y.original if c.attacker == "linear-adam")
    n = problem[Task.HARMFUL].train_x.shape[0]
    assert probe.flops >= n * 150.0  # the features are extracted once: n × (prefix + blocks)
    assert DeepAttackSuite.from_json(json.loads(json.dumps(suite.to_json()))) == suite
    assert suite.worst_case.attacker.value not in free  # never slowed: not a competitor
    unknown = run_deep_suite(["linear-adam"], _released(problem, _blocks()), model, OPTIONS)
    assert unknown.yardstick is None


def _scaled_blocks(scale: float) -> nn.Module:
    """Blocks whose last layer scales the features: another θ_I of the same problem."""
    module = _blocks()
    with torch.no_grad():
        module[2].weight.mul_(scale)
    return module


def test_theta0_searches_are_made_once_and_reused_with_the_same_numbers(problem, tmp_path):
    """Two runs that release the same θ0 with different θ_I share θ0's studies: the second
    run adds no θ0 trial, and its θ0 numbers equal those of a run that recomputes them; a
    weight-free attacker is searched once for both models of a run."""
    import optuna

    original = _released(problem, _blocks())
    shared = f"sqlite:///{tmp_path / 'theta0.db'}"
    names = ["linear-adam", "raw-adam"]

    def options(run: str, theta0: str | None) -> DeepAttackOptions:
        return replace(
            OPTIONS,
            storage=f"sqlite:///{tmp_path / run}.db",
            study_name=run,
            original_storage=theta0,
            original_study_name=None if theta0 is None else "theta0",
        )

    other = _released(problem, _scaled_blocks(3.0))
    first = run_deep_suite(names, original, other, options("a", shared))
    immunized = _released(problem, _scaled_blocks(0.1))
    second = run_deep_suite(names, original, immunized, options("b", shared))
    alone = run_deep_suite(names, original, immunized, options("c", None))

    def studies(url: str) -> dict[str, int]:
        return {s.study_name: s.n_trials for s in optuna.get_all_study_summaries(url)}

    # one θ0 study per attacker and task (the weight-free raw-adam: the harmful task only),
    # each with the trials of one search, not two
    theta0 = studies(shared)
    assert all(name.startswith("theta0/") for name in theta0)
    assert sorted(theta0.values()) == [OPTIONS.trials] * 3
    # the run's own storage holds θ_I's studies only, none for the weight-free attacker
    own = studies(f"sqlite:///{tmp_path / 'b'}.db")
    assert len(own) == 2
    assert all(n.startswith("b/linear-adam-") and n.endswith("/immunized") for n in own)

    def untimed(attack: TaskAttack) -> TaskAttack:  # wall-clock seconds always differ
        return replace(
            attack,
            original=replace(attack.original, seconds=0.0),
            immunized=replace(attack.immunized, seconds=0.0),
        )

    assert second.attackers["raw-adam"].benign is None
    for name, task in [
        ("linear-adam", "harmful"),
        ("linear-adam", "benign"),
        ("raw-adam", "harmful"),
    ]:
        got = untimed(getattr(second.attackers[name], task))
        assert got.original == untimed(getattr(first.attackers[name], task)).original
        assert got == untimed(getattr(alone.attackers[name], task))
    assert second.yardstick == alone.yardstick
    assert second.worst_case == alone.worst_case


@pytest.mark.parametrize("per_class", [1, 4, 1000], ids=lambda k: f"{k}-per-class")
def test_few_labels_keeps_that_many_rows_of_each_class_the_same_in_every_representation(
    problem, per_class
):
    d = problem[Task.HARMFUL]
    other = TaskTensors(d.train_x * 3.0 + 1.0, d.train_y, d.test_x, d.test_y, d.classes)
    few, again = d.few_labels(per_class, seed=5), other.few_labels(per_class, seed=5)
    counts = torch.bincount(d.train_y, minlength=CLASSES)
    assert torch.equal(torch.bincount(few.train_y, minlength=CLASSES), counts.clamp(max=per_class))
    assert torch.equal(again.train_x, few.train_x * 3.0 + 1.0)  # the same rows
    assert torch.equal(few.test_x, d.test_x) and torch.equal(few.test_y, d.test_y)
    assert torch.equal(d.few_labels(per_class, seed=5).train_x, few.train_x)  # seeded


def test_an_attacker_with_few_labels_trains_on_them_only(problem):
    from condimmune.attacks.deep_cost import ExtractionFlops

    model = replace(_released(problem, _blocks()), extraction=ExtractionFlops(100.0, 50.0))
    options = replace(OPTIONS, labels_per_class=4)
    suite = run_deep_suite(["linear-adam", "raw-adam"], model, model, options)
    assert suite.settings.labels_per_class == 4
    assert suite.yardstick is not None
    probe = next(c for c in suite.yardstick.original if c.attacker == "linear-adam")
    # features of 3 × 4 rows extracted, not of the 150 training rows
    assert 12 * 150.0 <= probe.flops < 150 * 150.0
    with pytest.raises(ValueError, match="labels_per_class"):
        DeepAttackOptions(labels_per_class=0)


def test_recalibration_re_estimates_batch_norm_on_the_attackers_data():
    """After ``_recalibrate`` a batch-norm layer's running mean and (unbiased) variance are
    those of its inputs over the whole training set: a cumulative average of the batches,
    the same whatever statistics the released model carried."""
    from condimmune.attacks.deep_train import _recalibrate

    gen = torch.Generator().manual_seed(4)
    x = 3.0 + 2.0 * torch.randn(96, 5, generator=gen)
    for carried in (0.0, 50.0):
        net = nn.Sequential(nn.BatchNorm1d(5))
        with torch.no_grad():
            net[0].running_mean.fill_(carried)
        _recalibrate(net, x, batch=32)
        torch.testing.assert_close(net[0].running_mean, x.mean(0))
        # each batch's unbiased variance, averaged (what a cumulative BatchNorm keeps)
        expected = torch.stack([x[i : i + 32].var(0) for i in range(0, 96, 32)]).mean(0)
        torch.testing.assert_close(net[0].running_var, expected)
        assert net[0].momentum == 0.1  # restored


@pytest.mark.parametrize(
    ("attacker", "fixed_per_row"),
    [("tap-adam", 3.0 + 4.0), ("full-recal-adam", 3.0 + 4.0), ("full-adam", 0.0)],
    ids=["tap-probe", "recalibrated", "plain-full"],
)
def test_tap_probes_and_recalibration_pay_one_pass_over_the_network(attacker, fixed_per_row):
    from condimmune.attacks.deep_cost import ExtractionFlops, attacker_curves

    spec = DEEP_ATTACKERS[DeepAttacker(attacker)]
    gen = torch.Generator().manual_seed(0)
    data = _task(gen)
    data = TaskTensors(data.train_x.float(), data.train_y, data.test_x.float(), data.test_y, 3)
    network = None if not spec.trains_network else (_blocks, K, 16)
    curves = attacker_curves(
        attacker,
        spec,
        [({"lr": 1e-3, "weight_decay": 0.0}, [0.1, 0.5])],
        [0, 1],
        data,
        ExtractionFlops(3.0, 4.0),
        network=network,
    )
    assert curves.fixed_flops == pytest.approx(fixed_per_row * data.train_x.shape[0])


def test_healing_fine_tunes_a_copy_on_the_benign_task_and_is_charged_for_it(problem):
    from condimmune.attacks.deep_cost import ExtractionFlops, attacker_curves
    from condimmune.attacks.deep_inputs import attacker_inputs, healed_network

    model = _released(problem, _blocks())
    benign = model.images[Task.BENIGN]
    before = copy.deepcopy(model.network.state_dict())
    healed = [healed_network(model.network, benign, K, 10, 32, seed) for seed in (0, 0, 1)]
    assert model.network.state_dict().keys() == before.keys()
    for name, value in model.network.state_dict().items():
        assert torch.equal(value, before[name]), name  # the released network is untouched
    weights = [h.state_dict()["0.weight"] for h in healed]
    assert torch.equal(weights[0], weights[1]) and not torch.equal(weights[0], weights[2])
    assert not torch.equal(weights[0], before["0.weight"]) and not healed[0].training
    spec = DEEP_ATTACKERS[DeepAttacker.HEAL_ADAM]
    data, make, width = attacker_inputs(
        DeepAttacker.HEAL_ADAM, spec, model, Task.HARMFUL, heal=(10, 32, 0)
    )
    torch.testing.assert_close(make().state_dict()["0.weight"], weights[0])
    plain = DEEP_ATTACKERS[DeepAttacker.FULL_ADAM]
    trial = [({"lr": 1e-3, "weight_decay": 0.0}, [0.1, 0.5])]
    costs = [
        attacker_curves(a.value, sp, trial, [0, 10], data, ExtractionFlops(3.0, 4.0),
                        network=(make, width, 32))
        for a, sp in ((DeepAttacker.HEAL_ADAM, spec), (DeepAttacker.FULL_ADAM, plain))
    ]  # fmt: skip
    assert costs[0].fixed_flops == pytest.approx(10 * costs[1].step_flops[0])
    assert costs[1].fixed_flops == 0.0


def test_attackers_that_stopped_short_on_theta_i_are_run_again_with_a_longer_budget(problem):
    """θ_I squashes two feature directions: within 40 steps the GD probe and the blocks stop
    short of τ on θ_I at less than the scratch network costs. With ``weight_free_steps`` set
    they are run again (Eq. R1): the blocks reach τ at 80 steps, so S falls; θ0's side and τ
    do not move."""
    from dataclasses import replace

    from condimmune.attacks.deep_cost import ExtractionFlops

    squash = _blocks()
    with torch.no_grad():
        squash[2].weight[0, 0] = squash[2].weight[1, 1] = 0.01
    flops = ExtractionFlops(100.0, 50.0)
    theta0 = replace(_released(problem, _blocks()), extraction=flops)
    theta_i = replace(_released(problem, squash), extraction=flops)
    names = ["linear-gd", "blocks-adam", "scratch-adam"]
    options = replace(OPTIONS, trials=1, finetune_trials=1)
    short = run_deep_suite(names, theta0, theta_i, options).yardstick
    settled = run_deep_suite(
        names, theta0, theta_i, replace(options, weight_free_steps=800)
    ).yardstick
    assert short is not None and settled is not None
    assert short.extended == [] and settled.extended == ["blocks-adam", "linear-gd"]
    assert short.cheapest_immunized.attacker == "scratch-adam"
    assert settled.cheapest_immunized.attacker == "blocks-adam" and settled.s < short.s
    reading = [[c for c in y.original if c.attacker != "scratch-adam"] for y in (short, settled)]
    assert settled.target == short.target and reading[0] == reading[1]  # θ0 untouched
    assert settled.cap_steps == 800 and short.cap_steps is None
    assert Yardstick.from_json(json.loads(json.dumps(settled.to_json()))) == settled


def test_attackers_that_stopped_short_on_theta0_are_settled_there_once_per_theta0(
    problem, tmp_path, monkeypatch
):
    """The same squash on θ0 instead: its GD probe and blocks stop short of τ at less than
    T*(θ0). With ``weight_free_steps`` set they are run again on θ0 (Eq. R1): T*(θ0) falls,
    so S and S_max rise by the same factor, τ stays; the runs are stored with θ0's searches,
    so a second method's attack of this θ0 reads them back."""
    from dataclasses import replace

    from condimmune.attacks.deep_cost import ExtractionFlops

    squash = _blocks()
    with torch.no_grad():
        squash[2].weight[0, 0] = squash[2].weight[1, 1] = 0.01
    flops = ExtractionFlops(100.0, 50.0)
    theta0 = replace(_released(problem, squash), extraction=flops)
    theta_i = replace(_released(problem, _blocks()), extraction=flops)
    names = ["linear-gd", "blocks-adam", "scratch-adam"]
    theta0_storage = f"sqlite:///{tmp_path / 'theta0.db'}"
    options = replace(
        OPTIONS, trials=1, finetune_trials=1, original_storage=theta0_storage,
        original_study_name="theta0",
    )  # fmt: skip
    short = run_deep_suite(names, theta0, theta_i, options).yardstick
    # other attack settings, another θ0 study name (as the pipeline's θ0 tag does)
    longer = replace(options, weight_free_steps=800, original_study_name="theta0-longer")
    events = []
    settled = run_deep_suite(names, theta0, theta_i, longer, on_progress=events.append).yardstick
    assert short is not None and settled is not None
    assert not short.theta0_settled and settled.theta0_settled  # no cap: no settling
    assert settled.extended_original
    assert settled.extended == []  # θ_I (unsquashed) reached τ: nothing to settle there
    assert set(settled.extended_original) <= {"linear-gd", "blocks-adam"}
    assert settled.target == short.target
    assert settled.cheapest_original.flops < short.cheapest_original.flops
    rise = short.cheapest_original.flops / settled.cheapest_original.flops
    assert settled.s_max == pytest.approx(short.s_max * rise)
    assert any(e.task == "settling T*" for e in events)
    from condimmune.attacks import deep_settle

    runs, real = [], deep_settle.attacker_objective

    def counted(*args, **kwargs):
        objective = real(*args, **kwargs)
        return lambda params, number: runs.append(number) or objective(params, number)

    monkeypatch.setattr(deep_settle, "attacker_objective", counted)
    again = run_deep_suite(names, theta0, theta_i, replace(longer, study_name="method-b"))
    assert runs == []  # θ0's runs were read back; θ_I's needed none
    assert again.yardstick is not None
    assert again.yardstick.original == settled.original  # read back from θ0's storage
    assert Yardstick.from_json(json.loads(json.dumps(settled.to_json()))) == settled


@pytest.mark.parametrize(
    "attacker",
    [a for a in DeepAttacker if a.value.split("-")[-1] not in ("lstsq",)],
    ids=lambda a: a.value,
)
def test_a_longer_budget_replays_the_common_budget_first(attacker, problem):
    """Eq. R1 runs a search trial again with a longer budget (the same trial number, so the
    same seed): up to the common budget its curve is the search's, so the longer run
    measures where τ is reached without changing what the search saw."""
    from condimmune.attacks.deep_objective import attacker_objective, step_budget
    from condimmune.attacks.search import IntChoice, LogFloat

    spec = DEEP_ATTACKERS[attacker]
    model = _released(problem, _blocks())
    params = {
        p.name: (
            float(p.choices[0])
            if isinstance(p, IntChoice)
            else math.sqrt(p.low * p.high)
            if isinstance(p, LogFloat)
            else (p.low + p.high) / 2
        )
        for p in spec.space
    }
    common = step_budget(spec, OPTIONS)
    longer = replace(common, steps=common.steps + 2 * common.eval_every)
    curves = [
        attacker_objective(attacker, spec, model, Task.HARMFUL, b, OPTIONS)(params, 5).curve
        for b in (common, longer)
    ]
    assert list(curves[1][: len(curves[0])]) == list(curves[0])
