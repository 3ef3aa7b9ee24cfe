r"""The prefix ceilings across the depth (issue #27): how much of θ0's head start on the
harmful task lives in its first layers.

For each tap ``k`` of the released network but the last (:mod:`condimmune.deep.taps`), the
attacker *keep-k* trains θ0's network with every layer up to tap ``k`` as released and
every later layer re-initialised (AdamW on the whole network and a new head: the
from-scratch attacker's search space and step budget). Its cost to the yardstick's target
τ (Eq. Y2), over the cheapest attack on θ0, is

.. math::  C(k) = T_{keep\text{-}k}(θ0) \,/\, T^*(θ0).                                (Y6)

Where *keep-k* reaches τ, a defence that releases the layers up to tap ``k`` unchanged
leaves this attack as it is, so its ``S`` cannot exceed ``C(k)``; where it does not, only a
lower bound on its cost is known and nothing bounds ``S``. *keep-k* is one attacker on that
prefix, not the cheapest one, so ``C(k)`` is an upper end of the prefix's true ceiling;
with no layer kept it is the re-initialised network, ``full-reinit`` (a part of
``S_max``), and with every layer kept, fine-tuning θ0. It is a property of θ0 alone: its
searches live with θ0's (``original_storage``), searched once per θ0 and shared by every
method's run.

Which layers come after tap ``k`` is read from one forward pass (:func:`layers_after`): every
submodule whose first call starts after the tap's module has returned. A tensor that a
module started before the tap applies after it (``DeepModel``'s feature map ``T``) is not
reset: the curve is measured on θ0, whose ``T`` is the identity.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from condimmune.attacks.deep_cost import ExtractionFlops, attacker_curves
from condimmune.attacks.deep_inputs import ReleasedModel, Task
from condimmune.attacks.deep_records import DeepAttackOptions
from condimmune.attacks.deep_train import (
    Budget,
    TaskTensors,
    best_so_far_area,
    network_curve,
    reset_own_parameters,
)
from condimmune.attacks.registry import DEEP_ATTACKERS, DeepAttacker
from condimmune.attacks.search import Objective, SearchOptions, Study, TrialResult, paired_search
from condimmune.attacks.yardstick import PrefixPoint, Yardstick, attack_cost
from condimmune.core.progress import Progress, ProgressCallback, report

__all__ = [
    "kept_through",
    "layers_after",
    "prefix_ceilings",
    "prefix_curve",
    "require_prefix_inputs",
]

_RULE = 1
"""The version of *keep-k*'s rule (which layers it resets, how its trials are seeded), part of
its searches' names: raise it when the rule changes, so stored trials are not reused."""

_SPEC = DEEP_ATTACKERS[DeepAttacker.FULL_REINIT]
"""The search space, optimizer and cost rule of *keep-k*: the from-scratch attacker's."""


def layers_after(network: nn.Module, tap: str, example: Tensor) -> list[str]:
    """The names of ``network``'s submodules whose first call, in one forward pass on
    ``example``, starts after the submodule ``tap`` has returned (a module called before and
    after it, e.g. a shared pooling layer, counts as before)."""
    modules = dict(network.named_modules())
    if tap not in modules:
        raise ValueError(f"the network has no submodule {tap!r}; its taps are misnamed")
    started: dict[str, int] = {}
    ended: list[int] = []
    handles = []
    for name, module in modules.items():

        def before(_m: nn.Module, _x: object, name: str = name) -> None:
            started.setdefault(name, len(started))

        handles.append(module.register_forward_pre_hook(before))
    handles.append(modules[tap].register_forward_hook(lambda *_: ended.append(len(started))))
    training = network.training
    try:
        with torch.no_grad():
            network.eval()(example)
    finally:
        network.train(training)
        for handle in handles:
            handle.remove()
    if not ended:
        raise ValueError(f"the submodule {tap!r} does not run in the network's forward pass")
    return [name for name, order in started.items() if order >= ended[0]]


def kept_through(network: nn.Module, later: Sequence[str]) -> Callable[[], nn.Module]:
    """A factory of copies of ``network`` with the submodules named in ``later`` (the layers
    after a tap: :func:`layers_after`) re-initialised from the global generator's current
    state (the caller seeds it; the state is restored afterwards) and every parameter
    trainable."""

    def make() -> nn.Module:
        copied = copy.deepcopy(network)
        modules = dict(copied.named_modules())
        # draws from the generator as seeded by the caller, and leaves it as it found it
        with torch.random.fork_rng(devices=[]):
            for name in later:
                reset_own_parameters(modules[name])
        for p in copied.parameters():
            p.requires_grad_(True)
        return copied

    return make


def _trial_seed(seed: int, tap: str, number: int) -> int:
    text = f"{seed}/keep-{tap}/{number}".encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:4], "little")


def _objective(
    make: Callable[[], nn.Module],
    tap: str,
    images: TaskTensors,
    feature_dim: int,
    budget: Budget,
    seed: int,
) -> Objective:
    def run(params: Mapping[str, float], number: int) -> TrialResult:
        curve = network_curve(
            make,
            feature_dim,
            images,
            _SPEC.optimizer,
            dict(params),
            budget,
            seed=_trial_seed(seed, tap, number),
        )
        return TrialResult(best_so_far_area(curve), curve)

    return run


def prefix_curve(
    network: nn.Module,
    taps: Sequence[tuple[str, str]],
    images: TaskTensors,
    feature_dim: int,
    target: float,
    cheapest_flops: float,
    budget: Budget,
    search: SearchOptions,
    study: Callable[[str], Study],
    *,
    on_progress: ProgressCallback | None = None,
) -> list[PrefixPoint]:
    """Eq. Y6 at every tap of ``taps`` (name, submodule path) but the last: θ0's
    ``network`` (images → its ``feature_dim`` features) kept through the tap, trained on
    the harmful ``images`` with ``budget``, searched with ``search`` in ``study(name)``;
    ``target`` τ and ``cheapest_flops`` ``T*(θ0)`` from the yardstick. ``on_progress``
    hears each tap (task ``"prefix ceilings"``)."""
    points: list[PrefixPoint] = []
    inner = list(taps[:-1])
    example = images.train_x[:1]
    for done, (tap, path) in enumerate(inner):
        report(on_progress, Progress("prefix ceilings", done, len(inner), tap, "tap"))
        later = layers_after(network, path, example)
        make = kept_through(network, later)
        # the search space, the rule and what it resets: another keep-k never reuses them
        tag = hashlib.sha256(repr((_SPEC, _RULE, later)).encode()).hexdigest()[:8]
        run = _objective(make, tap, images, feature_dim, budget, search.seed)
        where = study(f"keep-{tap}-{tag}/harmful/original")
        trials = paired_search(_SPEC.space, (run, run), search, studies=(where, where))[0]
        curves = attacker_curves(
            f"keep-{tap}",
            _SPEC,
            list(zip(trials.params, trials.curves, strict=True)),
            budget.eval_steps,
            images,
            ExtractionFlops(0.0, 0.0),
            network=(make, feature_dim, budget.batch_size),
        )
        cost = attack_cost(curves, target)
        points.append(PrefixPoint(tap, cost, cost.flops / cheapest_flops))
    report(on_progress, Progress("prefix ceilings", len(inner), len(inner), unit="tap"))
    return points


def prefix_ceilings(
    stick: Yardstick,
    original: ReleasedModel,
    options: DeepAttackOptions,
    budget: Budget,
    trials: int,
    on_progress: ProgressCallback | None = None,
) -> list[PrefixPoint]:
    """:func:`prefix_curve` of θ0 (``original``) for the suite: τ and ``T*(θ0)`` from
    ``stick``, ``trials`` searched with ``budget`` (the from-scratch attacker's), the
    searches beside θ0's (``options.original_storage``: made once per θ0)."""
    require_prefix_inputs(original, original)
    assert original.network is not None and original.images is not None  # required above
    storage = options.original_storage or options.storage
    name = options.original_study_name or options.study_name
    return prefix_curve(
        original.network,
        original.network_taps,
        original.images[Task.HARMFUL],
        original.feature_dim,
        stick.target,
        stick.cheapest_original.flops,
        budget,
        SearchOptions(trials, options.seconds, storage, name, options.seed),
        lambda study: Study(storage, f"{name}/{study}"),
        on_progress=on_progress,
    )


def require_prefix_inputs(original: ReleasedModel, immunized: ReleasedModel) -> None:
    """Refuse, before any search, models on which the prefix ceilings cannot be measured:
    θ0's network, images and taps, and both models' extraction FLOPs (without them there is
    no yardstick, so no τ and no ``T*(θ0)``)."""
    missing = [
        what
        for what, absent in (
            ("θ0's network", original.network is None),
            ("θ0's images", original.images is None),
            ("θ0's taps", not original.network_taps),
            ("the extraction FLOPs", original.extraction is None or immunized.extraction is None),
        )
        if absent
    ]
    if missing:
        raise ValueError(
            f"the prefix ceilings (prefix_curve) need {', '.join(missing)}; attack a model of "
            "a registered backbone with its images, or leave prefix_curve off"
        )
