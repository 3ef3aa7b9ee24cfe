"""Same numbers for the same seed: small fixed runs reproduce their stored metrics.json.

The stored files (tests/experiments/golden/*.json) were written by the code before the
package was restructured (re-written once, unchanged up to rounding, when regenerate.py
pinned the CPU kernels); a refactor must leave every number, key and type as it was.
Wall-clock timings are the only fields not compared. Numbers are compared to rounding level,
except where another CPU's rounding is amplified (the float32 CNN of the mnist-cnn cases):
:data:`TOLERANCES` says per group of keys how far and why.
"""

from __future__ import annotations

import importlib.util
import json
import math
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

import pytest
import yaml

GOLDEN = Path(__file__).resolve().parent / "golden"
CASES = yaml.safe_load((GOLDEN / "cases.yaml").read_text())

_spec = importlib.util.spec_from_file_location("golden_regenerate", GOLDEN / "regenerate.py")
assert _spec is not None and _spec.loader is not None
regenerate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(regenerate)


@dataclass(frozen=True)
class Tolerance:
    """How far the values of ``keys`` (dotted paths, fnmatch patterns) in the cases ``cases``
    may move between CPUs: ``|new − stored| ≤ max(rel·|stored|, abs)``; with ``of_mean``, a
    ``…_std`` key's bound is ``rel·|stored …_mean|`` instead (the spread on its mean's scale)."""

    cases: str
    keys: tuple[str, ...]
    why: str
    rel: float = 0.0
    abs: float = 0.0
    of_mean: bool = False


EXACT_FLOAT = Tolerance(
    "*",
    ("*",),
    "every other float: regenerate.py's pinned kernels (one thread, OpenBLAS's Haswell "
    "kernels for the linear runs' numpy and scipy, MKL_CBWR=COMPATIBLE, baseline ATen "
    "kernels, no oneDNN) make the linear runs bitwise reproducible on x86-64; the slack "
    "covers libm",
    rel=1e-9,
    abs=1e-15,
)
"""Floats no rule names. Strings, booleans, None and integers (shapes, counts, the linear
runs' exact GD step counts) no rule names must be equal."""

_ONE_IMAGE = 1 / 50  # mnist-cnn cases: data.test_per_class=10 × 5 digits per task
TOLERANCES = (
    Tolerance(
        "*",
        ("attacks.linear-lbfgs.*_best", "attacks.linear-lbfgs.*_best_original"),
        "L-BFGS drives the probe's loss to ~1e-7 … 1e-9, where its last digits are rounding "
        "(3e-6 relative seen between two CPUs)",
        abs=1e-9,
    ),
    # The mnist-cnn cases train a float32 CNN; its weights come out a few ulps apart on
    # another CPU despite the pinned kernels (this machine vs the one that wrote the files).
    Tolerance(
        "mnist-cnn-*",
        ("attack.gd.condition_number_*",),
        "κ of the 128 features, 1e9 … 1e11: a perturbation δ of the features moves λ_min by "
        "~κ·δ relative (0.2 … 0.7 % seen)",
        rel=0.05,
    ),
    Tolerance(
        "mnist-cnn-*",
        ("attack.gd.steps_*", "attack.gd.slowdown"),
        "exact GD 1/L step counts, t ≈ (L/λ)·ln(w/target)/2 over the smallest eigenvalues λ "
        "that carry residual weight w: both amplified like κ, w through the rotation of "
        "near-degenerate eigenvectors (0.06 … 4 % seen)",
        rel=0.2,
    ),
    Tolerance(
        "mnist-cnn-*",
        ("rir_theta0*.log_rir_mean",),
        "the same on a log scale, where 0.1 is 10 % of the RIR (near log RIR = 0 a relative "
        "bound would be 0)",
        abs=0.1,
    ),
    Tolerance(
        "mnist-cnn-*",
        ("rir_theta0*.*_mean",),
        "means over 4 or 20 random groups of κ ratios of 32- or 100-image Gram matrices "
        "(κ 1e2 … 1e7): less amplified than the full κ (≤ 2 % seen)",
        rel=0.1,
    ),
    Tolerance(
        "mnist-cnn-*",
        ("rir_theta0*.*_std",),
        "spreads of those ratios over the groups: each ratio moves by up to ~2 % of the mean, "
        "so the std moves on the mean's scale, not its own (up to 40 % of a small std seen)",
        rel=0.1,
        of_mean=True,
    ),
    Tolerance(
        "mnist-cnn-*",
        (
            "benign_accuracy.*",
            "attack.linear_probe.final_accuracy_*",
            "attack.linear_probe.level",
        ),
        "accuracies on 50 held-out images move in steps of 1/50 (level = 0.95 × an accuracy): "
        "one image near the decision boundary may flip",
        abs=_ONE_IMAGE + 1e-9,
    ),
    Tolerance(
        "mnist-cnn-*",
        ("attack.linear_probe.steps_*",),
        "the first Adam-probe step whose accuracy reaches the level: one image flipping there "
        "moves it by a step",
        abs=1,
    ),
    Tolerance(
        "mnist-cnn-*",
        ("attack.linear_probe.slowdown",),
        "the ratio of those step counts (≥ 14 for θ0 here): one step is ≤ 7 %",
        rel=0.1,
    ),
)
"""Where the stored numbers may differ from a new run's, grouped by how rounding enters; the
first rule naming a key wins. Everything else is :data:`EXACT_FLOAT` or equal."""


def tolerance(case: str, key: str) -> Tolerance | None:
    return next(
        (
            t
            for t in TOLERANCES
            if fnmatchcase(case, t.cases) and any(fnmatchcase(key, k) for k in t.keys)
        ),
        None,
    )


def _same_number(
    expected: float, actual: float, rule: Tolerance | None, siblings: dict, name: str
) -> bool:
    if rule is None:
        if isinstance(expected, int):
            return expected == actual
        rule = EXACT_FLOAT
    if isinstance(expected, float) and math.isnan(expected):
        return math.isnan(actual)
    bound = max(rule.rel * abs(expected), rule.abs)
    if rule.of_mean:
        bound = rule.rel * abs(siblings[name.removesuffix("_std") + "_mean"])
    return abs(actual - expected) <= bound


def differences(
    expected: object, actual: object, key: str = "", case: str = "", siblings: dict | None = None
) -> list[str]:
    """Dotted keys whose value, type or presence differs, numbers to the :data:`TOLERANCES`
    of ``case`` (else :data:`EXACT_FLOAT`); keys holding wall-clock seconds are skipped."""
    name = key.rsplit(".", 1)[-1]
    if "seconds" in name:
        return []
    if isinstance(expected, dict) and isinstance(actual, dict):
        out = []
        for k in sorted(expected.keys() | actual.keys()):
            sub = f"{key}.{k}" if key else k
            if k not in expected or k not in actual:
                out.append(f"{sub} (only in {'stored' if k in expected else 'new'} file)")
            else:
                out += differences(expected[k], actual[k], sub, case, expected)
        return out
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [f"{key} (length {len(expected)} → {len(actual)})"]
        return [
            d
            for i, (e, a) in enumerate(zip(expected, actual, strict=True))
            for d in differences(e, a, f"{key}[{i}]", case)
        ]
    if type(expected) is not type(actual):
        return [f"{key} ({expected!r} → {actual!r})"]
    if isinstance(expected, int | float) and not isinstance(expected, bool):
        rule = tolerance(case, key)
        same = _same_number(expected, actual, rule, siblings or {}, name)
        return [] if same else [f"{key} ({expected!r} → {actual!r})"]
    return [] if expected == actual else [f"{key} ({expected!r} → {actual!r})"]


@pytest.mark.parametrize(
    ("stored", "new", "diff"),
    [
        pytest.param({"a": 1.0}, {"a": 1.0 + 1e-12}, [], id="float-within-tolerance"),
        pytest.param(
            {"attacks": {"linear-lbfgs": {"harmful_best": 2.7758e-07}}},
            {"attacks": {"linear-lbfgs": {"harmful_best": 2.7757e-07}}},
            [],
            id="lbfgs-loss-at-rounding-level",
        ),
        pytest.param(
            {"attacks": {"linear-lbfgs": {"harmful_best": 2.0e-07}}},
            {"attacks": {"linear-lbfgs": {"harmful_best": 5.0e-07}}},
            ["attacks.linear-lbfgs.harmful_best (2e-07 → 5e-07)"],
            id="lbfgs-loss-changed",
        ),
        pytest.param({"a": 1.0}, {"a": 1.1}, ["a (1.0 → 1.1)"], id="float-changed"),
        pytest.param({"a": 1}, {"a": 1.0}, ["a (1 → 1.0)"], id="int-became-float"),
        pytest.param({"a": {"b": 2}}, {"a": {}}, ["a.b (only in stored file)"], id="key-lost"),
        pytest.param({}, {"c": None}, ["c (only in new file)"], id="key-added"),
        pytest.param({"wall_seconds": 1.0}, {"wall_seconds": 9.0}, [], id="timings-skipped"),
        pytest.param({"n": [1, 2]}, {"n": [1]}, ["n (length 2 → 1)"], id="list-length"),
    ],
)
def test_the_comparison_itself(stored: object, new: object, diff: list[str]) -> None:
    assert differences(stored, new) == diff


DEEP = "mnist-cnn-condnum"


def _nested(key: str, value: object) -> dict:
    head, _, rest = key.partition(".")
    return {head: _nested(rest, value) if rest else value}


@pytest.mark.parametrize(
    ("case", "key", "stored", "new", "caught"),
    [
        # exact keys stay exact in every case, the deep ones included
        (DEEP, "training.steps", 3, 4, True),
        (DEEP, "rir_theta0.honest.groups", 4, 5, True),
        (DEEP, "feature_dim", 128, 128.0, True),
        (DEEP, "attack.gd_whitened.condition_number_original", 1.0, 1.01, True),
        (DEEP, "attack.linear_probe.steps_immunized", 14, None, True),
        (DEEP, "attack.linear_probe.setting_original", "adam lr=0.01", "adam lr=0.1", True),
        # the linear runs: 1 % of a κ, one GD step, anything past rounding
        ("digits-condnum", "kappa.harmful.original", 113550.0, 114685.5, True),
        ("digits-condnum", "attack.steps_immunized", 3903, 3904, True),
        ("mnist-pair-raw-pixels", "attack.steps_immunized", 1474, 1473, True),
        ("mnist-pair-raw-pixels", "rir", 4.162813029758227, 4.162813029758227 * (1 + 1e-8), True),
        ("digits-closed-form", "kappa.harmful.immunized", 1.2158e11, 1.2158e11 * 1.002, True),
        # the deep runs: what this machine gives against the stored files passes, more fails
        (DEEP, "attack.gd.condition_number_immunized", 4536428319.9, 4547326213.3, False),
        (DEEP, "attack.gd.condition_number_immunized", 4536428319.9, 4.99e9, True),
        (DEEP, "attack.gd.steps_immunized", 4224396652, 4227790941, False),
        (DEEP, "attack.gd.steps_immunized", 4224396652, 6336594978, True),
        (DEEP, "rir_theta0_paper_protocol.honest.rir_mean", 130.688, 133.377, False),
        (DEEP, "rir_theta0_paper_protocol.honest.rir_mean", 130.688, 150.0, True),
        (DEEP, "rir_theta0.honest.log_rir_mean", 0.0016, 0.0020, False),
        (DEEP, "rir_theta0.honest.log_rir_mean", 0.0016, 0.2, True),
        (DEEP, "benign_accuracy.immunized", 0.2, 0.22, False),  # one image of 50
        (DEEP, "benign_accuracy.immunized", 0.2, 0.24, True),  # two
        (DEEP, "attack.linear_probe.steps_original", 14, 15, False),
        (DEEP, "attack.linear_probe.steps_original", 14, 16, True),
        (DEEP, "attack.linear_probe.slowdown", 1.5, 1.4, False),
        (DEEP, "attack.linear_probe.slowdown", 1.5, 1.3, True),
    ],
)
def test_tolerances_are_per_key(case, key, stored, new, caught) -> None:
    assert bool(differences(_nested(key, stored), _nested(key, new), case=case)) is caught


@pytest.mark.parametrize(("new_std", "caught"), [(0.0005, False), (0.09, False), (0.2, True)])
def test_a_spread_is_compared_on_its_means_scale(new_std: float, caught: bool) -> None:
    stored = {"rir_theta0": {"honest": {"harmful_ratio_mean": 0.99, "harmful_ratio_std": 9e-4}}}
    new = {"rir_theta0": {"honest": {"harmful_ratio_mean": 0.99, "harmful_ratio_std": new_std}}}
    assert bool(differences(stored, new, case=DEEP)) is caught


def _leaf_keys(value: object, key: str = "") -> list[str]:
    if isinstance(value, dict):
        return [k for name, v in value.items() for k in _leaf_keys(v, f"{key}.{name}".strip("."))]
    if isinstance(value, list):
        return [k for i, v in enumerate(value) for k in _leaf_keys(v, f"{key}[{i}]")]
    return [key]


def test_every_tolerance_applies_to_stored_keys_and_only_deep_ones_are_loose() -> None:
    stored = {
        c["id"]: _leaf_keys(json.loads((GOLDEN / f"{c['id']}.json").read_text())) for c in CASES
    }
    for rule in TOLERANCES:
        assert any(tolerance(case, k) is rule for case, keys in stored.items() for k in keys), rule
        if rule.cases == "*":  # the linear runs are bitwise reproducible: rounding level only
            assert rule.rel <= EXACT_FLOAT.rel and rule.abs <= 1e-9 and not rule.of_mean
        assert rule.why


def _param(case: dict) -> object:
    """A case reading the Ames data (``{ames}`` in its arguments) needs it (tests/_data.py)."""
    ames = any("{ames}" in arg for arg in case["args"])
    return pytest.param(case, id=case["id"], marks=[pytest.mark.needs("ames")] if ames else [])


@pytest.mark.slow
@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_run_reproduces_its_stored_metrics(case: dict, tmp_path: Path) -> None:
    stored = json.loads((GOLDEN / f"{case['id']}.json").read_text())
    assert differences(stored, regenerate.run_case(case, tmp_path), case=case["id"]) == []
