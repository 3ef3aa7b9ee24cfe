"""The one method registry: every place that lists or dispatches methods reads it.

Adding a method = one MethodSpec + one registration; the toy method below is registered
here, in the test, and runs through ``condimmune run`` end to end.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from _helpers import random_orthogonal
from safetensors.torch import load_file
from typer.testing import CliRunner

from condimmune.cli import app
from condimmune.methods.base import (
    DeepSolver,
    FeatureMap,
    FeatureMapInputs,
    LinearPlan,
    LinearProblem,
    MethodOptions,
    MethodSpec,
    PenaltyInputs,
)
from condimmune.methods.registry import (
    Method,
    method_spec,
    register_method,
    registered_methods,
    unregister_method,
)

runner = CliRunner()


def _rotation(d: int) -> torch.Tensor:
    return random_orthogonal(d, torch.Generator().manual_seed(42))


def _toy_linear(problem: LinearProblem, options: MethodOptions) -> LinearPlan:
    """A fixed random rotation: κ is invariant under it, so its RIR is exactly 1."""
    return LinearPlan(_rotation(problem.benign_x.shape[1]), train_extractor=False)


def _toy_penalty(inputs: PenaltyInputs, options: MethodOptions) -> torch.Tensor:
    return inputs.benign.new_zeros(())


def _toy_map(inputs: FeatureMapInputs, options: MethodOptions) -> FeatureMap:
    return FeatureMap(torch.eye(inputs.benign.shape[1]), invertible=True)


TOY = MethodSpec(
    name="toy-rotation",
    description="test only: a fixed random rotation",
    linear=_toy_linear,
    deep_solver=DeepSolver.PENALTY,
    deep_penalty=_toy_penalty,
)
LINEAR_ONLY = MethodSpec("toy-linear-only", "test only", linear=_toy_linear, deep_solver=None)


@pytest.fixture
def toy() -> Iterator[MethodSpec]:
    register_method(TOY)
    register_method(LINEAR_ONLY)
    try:
        yield TOY
    finally:
        unregister_method(TOY.name)
        unregister_method(LINEAR_ONLY.name)


def test_builtins_are_registered_once_in_their_enum_order() -> None:
    names = [spec.name for spec in registered_methods()]
    assert names[: len(Method)] == [m.value for m in Method]
    assert len(set(names)) == len(names)


def test_a_toy_method_runs_end_to_end_through_run(toy: MethodSpec, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "run",
            "digits",
            "--set",
            f"train.method={toy.name}",
            "--set",
            "train.epochs=2",
            "--out",
            str(out),
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == toy.name
    weight = load_file(out / "extractor.safetensors")["weight"]
    torch.testing.assert_close(weight, _rotation(weight.shape[1]), rtol=0, atol=0)
    # κ(Q XᵀX Qᵀ) = κ(XᵀX): both ratios and the RIR are 1 up to rounding
    for key in ("rir", "harmful_ratio", "benign_ratio"):
        assert metrics[key] == pytest.approx(1.0, rel=1e-8), key


def test_the_toy_method_is_listed(toy: MethodSpec) -> None:
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0
    assert toy.name in result.output and LINEAR_ONLY.name in result.output


def test_a_linear_only_method_is_refused_for_a_deep_experiment(toy: MethodSpec) -> None:
    result = runner.invoke(app, ["run", "mnist-cnn", "--set", f"train.method={LINEAR_ONLY.name}"])
    assert result.exit_code == 2
    assert "train.method" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    ("action", "error", "match"),
    [
        pytest.param(
            lambda: method_spec("nope"), ValueError, "choose one of 'condnum'", id="unknown"
        ),
        pytest.param(lambda: method_spec(3), TypeError, "must be a str", id="not-a-str"),  # type: ignore[arg-type]
        pytest.param(
            lambda: register_method(method_spec("condnum")),
            ValueError,
            "already registered",
            id="duplicate-name",
        ),
        pytest.param(lambda: register_method("x"), TypeError, "MethodSpec", id="not-a-spec"),  # type: ignore[arg-type]
        pytest.param(
            lambda: unregister_method("none"), ValueError, "built-in", id="remove-builtin"
        ),
        pytest.param(
            lambda: MethodSpec("x", "", linear=None, deep_solver=DeepSolver.PENALTY),
            ValueError,
            "deep penalty",
            id="penalty-solver-without-penalty",
        ),
        pytest.param(
            lambda: MethodSpec("x", "", None, DeepSolver.CLOSED_FORM, deep_penalty=_toy_penalty),
            ValueError,
            "deep penalty",
            id="penalty-on-a-closed-form",
        ),
        pytest.param(
            lambda: MethodSpec("x", "", None, DeepSolver.CLOSED_FORM),
            ValueError,
            "needs a feature map",
            id="closed-form-without-a-map",
        ),
        pytest.param(
            lambda: MethodSpec("x", "", _toy_linear, None, deep_feature_map=_toy_map),
            ValueError,
            "a feature map needs a deep solver",
            id="map-without-a-deep-solver",
        ),
    ],
)
def test_registry_errors(action, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        action()


@pytest.mark.parametrize("spec", [method_spec(m) for m in Method], ids=lambda s: s.name)
def test_every_builtin_has_a_deep_version_and_all_but_one_a_linear_one(spec: MethodSpec) -> None:
    assert spec.supports_deep
    assert spec.supports_linear == (spec.name != "condnum-leace")  # deep only, by design
    closed_forms = {"closed-form", "leace"}
    assert (spec.deep_solver is DeepSolver.CLOSED_FORM) == (spec.name in closed_forms)
    assert (spec.deep_feature_map is not None) == (spec.name in {*closed_forms, "condnum-leace"})
