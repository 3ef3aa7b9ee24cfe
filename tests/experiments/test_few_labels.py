"""The few-label operating point (``mnist-cnn-few-labels``, docs/attacks.md): mnist-cnn's
digits on the defence split, attacked by an attacker who holds 10 labels per harmful digit
and whose weight-free attackers get the budgets that make ``S_max`` a number."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from condimmune.experiments.config import apply_overrides, default_config, load_config
from condimmune.experiments.pipeline import resolve_plan
from condimmune.experiments.pipelines.deep.data import DeepTaskData, load_deep_data
from condimmune.experiments.registry import experiment_spec

SMALL = ["data.train_per_class=20", "data.test_per_class=5", "data.defence_per_class=5"]


def _load(experiment: str, *sets: str) -> DeepTaskData:
    plan = resolve_plan(apply_overrides(default_config(experiment), [*SMALL, *sets]))
    return load_deep_data(plan.options.data, plan.options.model, seed=0)


def test_its_attack_and_split_are_the_measured_operating_point() -> None:
    config = default_config("mnist-cnn-few-labels")
    plain = default_config("mnist-cnn")
    assert (config.attack.labels_per_class, config.attack.raw_probe_steps) == (10, 20000)
    assert config.attack.weight_free_steps == 200
    assert (config.data.train_per_class, config.data.defence_per_class) == (300, 100)
    # everything else is mnist-cnn's: the same network, pre-training and CPU search budgets
    assert config.model == plain.model and config.train == plain.train
    assert config.attack.trials == plain.attack.trials
    assert config.attack.seconds == plain.attack.seconds


def test_it_reads_the_same_digits_as_mnist_cnn_on_the_same_split() -> None:
    few = _load("mnist-cnn-few-labels")
    plain = _load("mnist-cnn")
    for task in ("benign", "harmful"):
        for split in ("train", "test"):
            a, b = getattr(getattr(few, task), split), getattr(getattr(plain, task), split)
            assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert few.harmful_defence is not None and len(few.harmful_defence) == 25
    assert few.harmful.train.images.shape == (100, 1, 28, 28)


@pytest.mark.parametrize(
    ("experiment", "digit_groups"),
    [
        ("mnist-cnn", True),
        ("mnist-cnn-cluttered", True),
        ("mnist-cnn-few-labels", True),
        ("mobilenet-fashion-mnist", False),
        ("imagenet-cars-resnet18", False),
        ("mnist-pair", False),
    ],
)
def test_digit_groups_name_the_experiments_that_read_mnist_cnns_digits(
    experiment: str, digit_groups: bool
) -> None:
    assert experiment_spec(experiment).digit_groups is digit_groups


def test_a_garment_folder_without_garments_is_refused_here_too() -> None:
    with pytest.raises(ValueError, match=r"data\.harmful_root=.*data\.harmful_images"):
        apply_overrides(default_config("mnist-cnn-few-labels"), ["data.harmful_root=/tmp/f"])


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param({}, "", id="common-budgets-only"),
        pytest.param(
            {"labels_per_class": 10},
            ", the attacker holds 10 labelled images per harmful class",
            id="few-labels",
        ),
        pytest.param(
            {"labels_per_class": 10, "weight_free_steps": 200, "raw_probe_steps": 20000},
            ", the attacker holds 10 labelled images per harmful class, 200 steps for the "
            "weight-free attackers (searched once per θ0), 20000 for `raw-adam`",
            id="this-operating-point",
        ),
    ],
)
def test_reports_name_the_budgets_beyond_the_common_ones(
    changes: dict[str, int], expected: str
) -> None:
    from condimmune.attacks.deep_records import DeepAttackOptions
    from condimmune.experiments.pipelines.deep.attack_report import attacker_budgets

    assert attacker_budgets(DeepAttackOptions(**changes)) == expected


GRID_UNION = "src/condimmune/configs/mnist-cnn-few-labels-grid-union.yaml"
KEPT_GRID_UNION = (
    "docs/data/attack-matrix/mnist-cnn-few-labels-grid-union-ablations/taps-only/"
    "mnist-cnn-few-labels-full-depth-s{seed}/metrics.json"
)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_grid_union_config_is_the_defence_the_docs_measured(seed) -> None:
    """The packaged config trains what the kept runs of docs/attacks.md trained: the same
    experiment, method, epochs and method options (those the runs recorded)."""
    c = load_config(GRID_UNION)
    kept = json.loads(Path(KEPT_GRID_UNION.format(seed=seed)).read_text())
    assert (c.experiment, c.train.method) == (kept["experiment"], kept["method"])
    # 1,500 benign training images in batches of 256, the partial batch dropped: 5 per epoch
    assert kept["training"]["steps"] == 5 * c.train.epochs
    options = c.method.model_dump()
    assert {k: options[k] for k in kept["method_options"]} == kept["method_options"]
    resolve_plan(c)
