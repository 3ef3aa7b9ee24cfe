"""Every linear method plans on numpy rows as on tensors (issue #30): the plan's initial
extractor and what its hooks return come in the rows' backend, equal to the tensor plan's
to rounding; and the methods package imports no torch, nor does planning on numpy rows."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from _helpers import torch_modules_after

from condimmune.methods.base import LinearPlan, LinearProblem
from condimmune.methods.registry import configure_method

D = 6


def _rows(zero_columns: list[int]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    rows = {
        "benign_x": rng.standard_normal((40, D)) @ rng.standard_normal((D, D)),
        "benign_y": (rng.random(40) > 0.5).astype(np.float64),
        "harmful_x": rng.standard_normal((30, D)) @ rng.standard_normal((D, D)),
        "harmful_y": (rng.random(30) > 0.5).astype(np.float64),
    }
    for name in ("benign_x", "harmful_x"):
        rows[name][:, zero_columns] = 0.0  # all-zero pixel columns (raw-MNIST borders)
    return rows


CASES = {
    "none": ("none", []),
    "condnum": ("condnum", []),
    "r-ill-only": ("r-ill-only", []),
    "opt-kappa": ("opt-kappa", []),
    "opt-kappa-zero-columns": ("opt-kappa", [0, 3]),
    "imma": ("imma", []),
    "closed-form": ("closed-form", []),
    "leace": ("leace", []),
}


def _plans(method: str, zero_columns: list[int]) -> tuple[LinearPlan, LinearPlan]:
    rows = _rows(zero_columns)
    configured = configure_method(method, "linear")
    numpy_plan = configured.plan(LinearProblem(**rows))
    tensor_plan = configured.plan(
        LinearProblem(**{name: torch.from_numpy(value.copy()) for name, value in rows.items()})
    )
    return numpy_plan, tensor_plan


def _assert_same(from_numpy: Any, from_tensor: Any, *, row_signs: bool = False) -> None:
    """Equal to rounding; with ``row_signs``, up to the sign of each row."""
    assert isinstance(from_numpy, np.ndarray) and isinstance(from_tensor, torch.Tensor)
    assert from_numpy.dtype == np.float64 and from_tensor.dtype == torch.float64
    expected = from_tensor.numpy()
    if row_signs:
        expected = expected * np.sign(np.sum(from_numpy * expected, axis=1, keepdims=True))
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(from_numpy, expected, rtol=1e-10, atol=1e-10 * scale)


@pytest.mark.parametrize("method, zero_columns", CASES.values(), ids=CASES.keys())
def test_the_plan_on_numpy_rows_is_the_plan_on_tensors(method: str, zero_columns: list[int]):
    numpy_plan, tensor_plan = _plans(method, zero_columns)
    # the closed form's rows are generalized eigenvectors, each up to its sign, and numpy's
    # and torch's eigh pick signs their own way: the features, and so κ and RIR, are the same
    # up to those signs
    _assert_same(
        numpy_plan.initial_weight, tensor_plan.initial_weight, row_signs=method == "closed-form"
    )
    assert numpy_plan.train_extractor == tensor_plan.train_extractor
    assert numpy_plan.notes == tensor_plan.notes
    weight = np.eye(D) + 0.3 * np.random.default_rng(3).standard_normal((D, D))
    for hook in ("gradient_direction", "regularizer_step"):
        numpy_hook, tensor_hook = getattr(numpy_plan, hook), getattr(tensor_plan, hook)
        assert (numpy_hook is None) == (tensor_hook is None)
        if numpy_hook is not None:
            _assert_same(numpy_hook(weight.copy()), tensor_hook(torch.from_numpy(weight.copy())))


def test_every_linear_method_is_covered():
    from condimmune.methods.registry import registered_methods

    linear = {spec.name for spec in registered_methods() if spec.supports_linear}
    assert linear == {method for method, _ in CASES.values()}


def test_the_methods_and_their_numpy_plans_do_not_import_torch():
    code = (
        "import sys, numpy as np\n"
        "from condimmune.methods.base import LinearProblem\n"
        "from condimmune.methods.registry import configure_method, registered_methods\n"
        "assert 'torch' not in sys.modules, 'importing the registry imports torch'\n"
        "rng = np.random.default_rng(0)\n"
        "x, y = rng.standard_normal((30, 5)), (rng.random(30) > 0.5).astype(float)\n"
        "w = np.eye(5) + 0.1 * rng.standard_normal((5, 5))\n"
        "for spec in registered_methods():\n"
        "    if spec.supports_linear:\n"
        "        plan = configure_method(spec, 'linear').plan(LinearProblem(x, y, x[::-1], y))\n"
        "        for hook in (plan.gradient_direction, plan.regularizer_step):\n"
        "            if hook is not None:\n"
        "                assert isinstance(hook(w.copy()), np.ndarray)\n"
    )
    assert torch_modules_after(code) == []
