"""The one method registry: every place that lists or dispatches methods reads it.

Adding a method = one MethodSpec (with its own options model) + one registration; the toy
method below is registered here, in the test, with an option of its own, and runs through
``condimmune run`` end to end with that option set on the command line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from _helpers import random_orthogonal
from pydantic import Field
from safetensors.torch import load_file
from typer.testing import CliRunner

from condimmune.cli import app
from condimmune.methods.base import (
    DeepSolver,
    DeepVersion,
    FeatureMap,
    FeatureMapInputs,
    LinearPlan,
    LinearProblem,
    LinearVersion,
    MethodOptions,
    MethodSpec,
    ModelFamily,
    NoOptions,
    PenaltyInputs,
)
from condimmune.methods.registry import (
    Method,
    configure_method,
    method_spec,
    register_method,
    registered_methods,
    unregister_method,
)

runner = CliRunner()


class ToyOptions(MethodOptions):
    """The toy method's one option: which random rotation it releases."""

    rotation_seed: int = Field(default=42, ge=0, description="seed of the random rotation")


def _rotation(d: int, seed: int = 42) -> torch.Tensor:
    return random_orthogonal(d, torch.Generator().manual_seed(seed))


def _toy_linear(problem: LinearProblem, options: ToyOptions) -> LinearPlan:
    """A fixed random rotation: κ is invariant under it, so its RIR is exactly 1."""
    return LinearPlan(
        _rotation(problem.benign_x.shape[1], options.rotation_seed), train_extractor=False
    )


def _toy_penalty(inputs: PenaltyInputs, options: NoOptions) -> torch.Tensor:
    return inputs.benign.new_zeros(())


def _toy_map(inputs: FeatureMapInputs, options: NoOptions) -> FeatureMap:
    return FeatureMap(torch.eye(inputs.benign.shape[1]), invertible=True)


TOY = MethodSpec(
    name="toy-rotation",
    description="test only: a fixed random rotation",
    linear=LinearVersion(ToyOptions, _toy_linear),
    deep=DeepVersion(NoOptions, DeepSolver.PENALTY, penalty=_toy_penalty),
)
LINEAR_ONLY = MethodSpec(
    "toy-linear-only", "test only", linear=LinearVersion(ToyOptions, _toy_linear)
)


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


@pytest.mark.parametrize("seed", [None, 7], ids=["option-default", "option-set"])
def test_a_toy_method_with_an_option_runs_end_to_end_through_run(
    toy: MethodSpec, tmp_path: Path, seed: int | None
) -> None:
    out = tmp_path / "run"
    option = [] if seed is None else ["--set", f"method.rotation_seed={seed}"]
    result = runner.invoke(
        app,
        [
            "run",
            "digits",
            "--set",
            f"train.method={toy.name}",
            *option,
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
    assert f"rotation_seed: {seed or 42}" in (out / "config.yaml").read_text()
    weight = load_file(out / "extractor.safetensors")["weight"]
    torch.testing.assert_close(weight, _rotation(weight.shape[1], seed or 42), rtol=0, atol=0)
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
    ("sets", "named"),
    [
        pytest.param(["method.rotation_seed=-1"], "method.rotation_seed", id="out-of-range"),
        pytest.param(["method.rotation_seed=x"], "method.rotation_seed", id="wrong-type"),
        pytest.param(["method.angle=3"], "method.angle", id="unknown-option"),
    ],
)
def test_a_toy_option_is_validated_against_the_toy_schema(
    toy: MethodSpec, sets: list[str], named: str
) -> None:
    args = ["run", "digits", "--set", f"train.method={toy.name}"]
    for item in sets:
        args += ["--set", item]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert named in result.output and "Traceback" not in result.output


def test_configure_method_validates_options_against_the_method() -> None:
    method = configure_method("opt-kappa", "deep", weight=0.25)
    assert method.options == method.spec.deep.options(weight=0.25)  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="weight"):
        configure_method("opt-kappa", "deep", weight=-1.0)
    with pytest.raises(ValueError, match="inner_steps"):
        configure_method("opt-kappa", ModelFamily.LINEAR, inner_steps=3)
    with pytest.raises(ValueError, match="no linear version"):
        configure_method("condnum-leace", "linear")
    with pytest.raises(TypeError, match="takes OptKappaOptions"):
        configure_method("opt-kappa", "deep", NoOptions())


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
            lambda: DeepVersion(NoOptions, DeepSolver.PENALTY),
            ValueError,
            "deep penalty",
            id="penalty-solver-without-penalty",
        ),
        pytest.param(
            lambda: DeepVersion(
                NoOptions, DeepSolver.CLOSED_FORM, penalty=_toy_penalty, feature_map=_toy_map
            ),
            ValueError,
            "deep penalty",
            id="penalty-on-a-closed-form",
        ),
        pytest.param(
            lambda: DeepVersion(NoOptions, DeepSolver.CLOSED_FORM),
            ValueError,
            "needs a feature map",
            id="closed-form-without-a-map",
        ),
        pytest.param(
            lambda: MethodSpec("x", ""), ValueError, "neither a linear nor a deep", id="no-version"
        ),
        pytest.param(
            lambda: MethodSpec("x", "", LinearVersion(dict, _toy_linear)),  # type: ignore[arg-type]
            TypeError,
            "MethodOptions subclass",
            id="options-not-a-model",
        ),
    ],
)
def test_registry_errors(action, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        action()


@pytest.mark.parametrize("spec", [method_spec(m) for m in Method], ids=lambda s: s.name)
def test_every_builtin_has_a_deep_version_and_all_but_two_a_linear_one(spec: MethodSpec) -> None:
    assert spec.supports_deep
    # deep only, by design: LEACE after condnum, and the whole-network defence
    assert spec.supports_linear == (spec.name not in ("condnum-leace", "full-depth"))
    closed_forms = {"closed-form", "leace"}
    assert spec.deep is not None
    assert (spec.deep.solver is DeepSolver.CLOSED_FORM) == (spec.name in closed_forms)
    assert (spec.deep.feature_map is not None) == (spec.name in {*closed_forms, "condnum-leace"})


_PIPELINE_LAYERS = ("linear", "deep", "experiments", "cli", "__init__.py")
"""Where options are passed through, never read: only a method's own module reads them."""
_OPERATING_POINTS = Path("experiments") / "experiment_settings.py"
"""The experiments' operating points: data naming the options each experiment overrides."""


def _option_names() -> set[str]:
    names = set()
    for spec in registered_methods():
        for family in ModelFamily:
            model = spec.options_model(family)
            if model is not None:
                names |= set(model.model_fields)
    return names


def test_a_method_option_is_named_only_by_its_method_and_the_operating_points() -> None:
    import re

    package = Path(__file__).resolve().parents[2] / "src" / "condimmune"
    files = [
        p
        for layer in _PIPELINE_LAYERS
        for p in ([package / layer] if layer.endswith(".py") else (package / layer).rglob("*.py"))
    ]
    names = _option_names()
    assert {"benign_step", "harmful_weight", "inner_steps", "ridge"} <= names  # a real check
    found = {
        (str(path.relative_to(package)), name)
        for path in files
        if path.relative_to(package) != _OPERATING_POINTS
        for name in names
        # the methods' generic names ("weight", "ridge") are words of the maths elsewhere
        if "_" in name and re.search(rf"\b{name}\b", path.read_text())
    }
    assert found == set(), found
