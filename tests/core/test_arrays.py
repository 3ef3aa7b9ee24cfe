"""Both backends of core's maths (issue #30): numpy arrays give torch's numbers, in numpy.

Each function of :mod:`condimmune.core.spectral`, :mod:`~condimmune.core.regularizers`,
:mod:`~condimmune.core.eigenpairs` and :mod:`~condimmune.core.factor` is called on the same
float64 data as a torch tensor and as a numpy array: the numpy result is a numpy array
(never a tensor) and equals the torch result up to the order of floating-point sums; the
boundary checks refuse the same bad inputs in both forms. A numpy call imports no torch
(checked in a fresh interpreter: this test process has torch loaded already).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _helpers import matrix_with_spectrum, torch_modules_after

from condimmune.core import bound, metrics, regularizers, spectral
from condimmune.core._validation import (
    check_matrix,
    check_same_device_dtype,
    check_symmetric_psd,
)
from condimmune.core.arrays import detached, machine_epsilon, namespace
from condimmune.core.eigenpairs import (
    EigenvectorMethod,
    log_condition_number_features_gradient,
    psd_eigenpair,
)
from condimmune.core.errors import DegenerateSpectrumError
from condimmune.core.factor import cholesky_solver, lu_solver, symmetric_indefinite_solver
from condimmune.core.preconditioner import InputPreconditioner
from condimmune.core.step import PreconditionedRegularizerStep
from condimmune.core.tracking import ExtremeEigenTracker, takes_fast_path

MATRIX_FUNCTIONS = {
    "log_condition_number": spectral.log_condition_number,
    "condition_number": spectral.condition_number,
    "nonzero_eigenvalues": spectral.nonzero_eigenvalues,
    "paper_compatible_condition_number": spectral.paper_compatible_condition_number,
    "r_well": regularizers.r_well,
    "r_ill": lambda S: regularizers.r_ill(S, rank_deficiency="allow"),
    "r_well_gradient": regularizers.r_well_gradient,
    "r_ill_gradient": lambda S: regularizers.r_ill_gradient(S, rank_deficiency="allow"),
}
FEATURE_FUNCTIONS = {
    "log_condition_number_features": spectral.log_condition_number_features,
    "condition_number_features": spectral.condition_number_features,
    "covariance_eigenvalues": spectral.covariance_eigenvalues,
    "r_well_features": regularizers.r_well_features,
    "r_ill_features": lambda P: regularizers.r_ill_features(P, rank_deficiency="allow"),
    "log_kappa_gradient": lambda P: log_condition_number_features_gradient(P).gradient,
    "log_kappa_gradient-inverse-iteration": lambda P: (
        log_condition_number_features_gradient(
            P, eigenvectors=EigenvectorMethod.INVERSE_ITERATION
        ).gradient
    ),
}
SPECTRA = {
    "full-rank": [1e-3, 0.1, 1.0, 10.0, 100.0],
    "low-rank-3-of-7": [0.0, 0.0, 0.0, 0.0, 1.0, 2.0, 5.0],
}
FEATURE_SHAPES = {"wide-n4-k9": (4, 9), "tall-n12-k5": (12, 5)}


def _same(numpy_value: object, torch_value: torch.Tensor) -> None:
    """Equal up to the two LAPACKs' rounding (numpy's OpenBLAS, torch's MKL): an eigenvalue
    moves by ~p·eps·σ_max, which the paper rule's κ ≈ σ_max/1e-6 turns into 5e-10 relative
    on the low-rank case."""
    assert isinstance(numpy_value, np.ndarray | np.floating)
    np.testing.assert_allclose(np.asarray(numpy_value), torch_value.numpy(), rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("spectrum", SPECTRA.values(), ids=SPECTRA.keys())
@pytest.mark.parametrize("function", MATRIX_FUNCTIONS.values(), ids=MATRIX_FUNCTIONS.keys())
def test_matrix_functions_give_torchs_numbers_in_numpy(function, spectrum, gen):
    S = matrix_with_spectrum(spectrum, gen)
    _same(function(S.numpy()), function(S))


@pytest.mark.parametrize("shape", FEATURE_SHAPES.values(), ids=FEATURE_SHAPES.keys())
@pytest.mark.parametrize("function", FEATURE_FUNCTIONS.values(), ids=FEATURE_FUNCTIONS.keys())
def test_feature_functions_give_torchs_numbers_in_numpy(function, shape, gen):
    phi = torch.randn(*shape, generator=gen, dtype=torch.float64)
    _same(function(phi.numpy()), function(phi))


PAIRS = {"top": -1, "second": -2, "lowest-non-zero": 0}


@pytest.mark.parametrize("index", PAIRS.values(), ids=PAIRS.keys())
def test_inverse_iteration_eigenvector_in_numpy(index, gen):
    S = matrix_with_spectrum([0.5, 1.0, 2.0, 4.0, 8.0, 16.0], gen)
    values, vector, fallback = psd_eigenpair(
        S.numpy(), EigenvectorMethod.INVERSE_ITERATION, lambda v: index % len(v)
    )
    assert isinstance(vector, np.ndarray) and not fallback
    _, expected, _ = psd_eigenpair(S, EigenvectorMethod.INVERSE_ITERATION, lambda v: index % 6)
    # a unit eigenvector is determined up to its sign
    sign = float(np.sign((vector.T @ expected.numpy()).item()))
    np.testing.assert_allclose(sign * vector, expected.numpy(), atol=1e-12)
    np.testing.assert_allclose(S.numpy() @ vector, values[index] * vector, atol=1e-12)


FACTORS = {
    "positive-definite": ([1.0, 2.0, 5.0, 9.0], 0),
    "two-negative": ([-3.0, -1.0, 2.0, 5.0], 2),
    "one-negative": ([-1e-3, 1.0, 4.0], 1),
}


@pytest.mark.parametrize(("spectrum", "below"), FACTORS.values(), ids=FACTORS.keys())
def test_factorisations_solve_and_count_alike(spectrum, below, gen):
    A = matrix_with_spectrum(spectrum, gen)
    b = torch.randn(A.shape[0], 2, generator=gen, dtype=torch.float64)
    expected = torch.linalg.solve(A, b).numpy()
    for matrix, rhs in ((A, b), (A.numpy(), b.numpy())):
        ldl = symmetric_indefinite_solver(matrix)
        assert ldl is not None and ldl[1] == below
        np.testing.assert_allclose(np.asarray(ldl[0](rhs)), expected, rtol=1e-10)
        np.testing.assert_allclose(np.asarray(lu_solver(matrix)(rhs)), expected, rtol=1e-10)
        cholesky = cholesky_solver(matrix)
        assert (cholesky is None) == (below > 0)
        if cholesky is not None:
            np.testing.assert_allclose(np.asarray(cholesky(rhs)), expected, rtol=1e-10)


TRACKED = {
    "full-rank-40": [float(v) for v in np.geomspace(1e-4, 1.0, 40)],
    "rank-30-of-40": [0.0] * 10 + [float(v) for v in np.geomspace(1e-3, 1.0, 30)],
}


@pytest.mark.parametrize("spectrum", TRACKED.values(), ids=TRACKED.keys())
def test_tracked_extremes_agree_across_backends(spectrum, gen):
    G = matrix_with_spectrum(spectrum, gen)
    rtol = 1e-8
    ours = ExtremeEigenTracker().track(G.numpy(), rtol=rtol, top_vector=True, low_vector=True)
    theirs = ExtremeEigenTracker().track(G, rtol=rtol, top_vector=True, low_vector=True)
    assert ours is not None and theirs is not None
    assert ours.rank == theirs.rank == sum(v > rtol for v in spectrum)
    for a, b in ((ours.top, theirs.top), (ours.low, theirs.low), (ours.second, theirs.second)):
        assert a == pytest.approx(b, rel=1e-9)
    for x, v in ((ours.top_vector, theirs.top_vector), (ours.low_vector, theirs.low_vector)):
        assert isinstance(x, np.ndarray)
        sign = float(np.sign((x.T @ v.numpy()).item()))
        np.testing.assert_allclose(sign * x, v.numpy(), atol=1e-7)


def test_fast_path_rule_reads_numpy_rows():
    rows = np.zeros((600, 700))
    rows[:, :600] = np.eye(600)
    assert takes_fast_path(rows) and takes_fast_path(torch.from_numpy(rows))
    assert not takes_fast_path(rows[:, :500]) and not takes_fast_path(rows.astype(np.float32))


PRECONDITIONERS = {"dense-n40-d12": (40, 12, "dense"), "woodbury-n10-d30": (10, 30, "woodbury")}


@pytest.mark.parametrize(("n", "d", "method"), PRECONDITIONERS.values(), ids=PRECONDITIONERS.keys())
def test_preconditioner_in_numpy(n, d, method, gen):
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    grad = torch.randn(5, d, generator=gen, dtype=torch.float64)
    ours = InputPreconditioner(x.numpy(), 0.5, method).apply(grad.numpy())
    assert isinstance(ours, np.ndarray)
    _same(ours, InputPreconditioner(x, 0.5, method).apply(grad))
    with pytest.raises(TypeError, match="backend"):
        InputPreconditioner(x.numpy(), 0.5, method).apply(grad)


def _rows(n: int, d: int, rank: int, zero_columns: int, gen: torch.Generator) -> torch.Tensor:
    """n × d rows of exact rank ``rank`` whose last ``zero_columns`` columns are zero."""
    left = torch.randn(n, rank, generator=gen, dtype=torch.float64)
    x = left @ torch.randn(rank, d, generator=gen, dtype=torch.float64)
    x[:, d - zero_columns :] = 0
    return x


# (n, d, rank, zero columns of the benign task, eigenvectors, tolerance)
STEPS = {
    "dense-n48-d20": (48, 20, 20, 0, "auto", 1e-9),
    "zero-columns-n30-d40": (30, 40, 30, 6, "auto", 1e-9),
    "tracked-exact-rank-n80-d60": (80, 60, 50, 4, "tracking", 1e-7),
}


@pytest.mark.parametrize(
    ("n", "d", "rank", "zeros", "eigenvectors", "tol"), STEPS.values(), ids=STEPS.keys()
)
def test_regularizer_step_in_numpy(n, d, rank, zeros, eigenvectors, tol, gen):
    """Alg. 1's preconditioned direction from numpy rows equals torch's (the tracked path to
    the rounding of its Lanczos vectors in two LAPACKs)."""
    xp, xh = _rows(n, d, rank, zeros, gen), _rows(n, d, rank, 0, gen)
    w = torch.eye(d, dtype=torch.float64) + 0.1 * torch.randn(d, d, generator=gen).double()
    # ρ well above rounding: with a small ρ the Woodbury form of M cancels X/ρ against a
    # correction of its size, and the two LAPACKs' rounding then shows at ~1e-10 × 1/ρ
    options = {
        "benign_ridge": 1.0,
        "harmful_ridge": 0.1,
        "benign_weight": 0.3,
        "harmful_weight": 0.2,
        "weighting": "monotone",
        "rank_deficiency": "allow",
        "eigenvectors": eigenvectors,
    }
    ours = PreconditionedRegularizerStep(xp.numpy(), xh.numpy(), **options)
    theirs = PreconditionedRegularizerStep(xp, xh, **options)
    for _ in range(3):  # the tracked path keeps its vectors from step to step
        a, b = ours.gradient(w.numpy()), theirs.gradient(w)
        assert isinstance(a.gradient, np.ndarray)
        scale = float(b.gradient.abs().max())
        np.testing.assert_allclose(a.gradient, b.gradient.numpy(), atol=tol * scale)
        assert a.benign_log_kappa == pytest.approx(b.benign_log_kappa, rel=tol)
        assert a.harmful_log_kappa == pytest.approx(b.harmful_log_kappa, rel=tol)
        w = w - b.gradient


HESSIANS = {
    "squared": ("squared", None),
    "logistic": ("logistic", (6,)),
    "cross-entropy": ("cross-entropy", (3, 6)),
}


@pytest.mark.parametrize(("loss", "head_shape"), HESSIANS.values(), ids=HESSIANS.keys())
def test_probing_hessians_in_numpy(loss, head_shape, gen):
    phi = torch.randn(20, 6, generator=gen, dtype=torch.float64)
    head = None if head_shape is None else torch.randn(*head_shape, generator=gen).double()
    ours = metrics.probing_hessian(
        phi.numpy(), loss=loss, head=None if head is None else head.numpy()
    )
    _same(ours, metrics.probing_hessian(phi, loss=loss, head=head))
    _same(
        metrics.log_probing_hessian_condition_number(
            phi.numpy(), loss=loss, head=None if head is None else head.numpy()
        ),
        metrics.log_probing_hessian_condition_number(phi, loss=loss, head=head),
    )


@pytest.mark.parametrize("rule", ["numerical-range", "paper-compatible"])
def test_condition_numbers_in_numpy(rule, gen):
    xp, xh = (torch.randn(30, 8, generator=gen, dtype=torch.float64) for _ in range(2))
    w = torch.randn(5, 8, generator=gen, dtype=torch.float64)
    ours = metrics.immunization_condition_numbers(xp.numpy(), xh.numpy(), w.numpy(), rule=rule)
    theirs = metrics.immunization_condition_numbers(xp, xh, w, rule=rule)
    for name in ("benign_original", "benign_immunized", "harmful_original", "harmful_immunized"):
        assert getattr(ours, name) == pytest.approx(getattr(theirs, name), rel=1e-8)


# (n_P, n_H, d): range(K_H) ⊆ range(K_P) (bounded) and not (unbounded)
BOUNDS = {"bounded-n20-d8": (20, 12, 8), "unbounded-n5-d8": (5, 12, 8)}


@pytest.mark.parametrize(("n_p", "n_h", "d"), BOUNDS.values(), ids=BOUNDS.keys())
def test_bound_and_closed_form_in_numpy(n_p, n_h, d, gen):
    xp = torch.randn(n_p, d, generator=gen, dtype=torch.float64)
    xh = torch.randn(n_h, d, generator=gen, dtype=torch.float64)
    ours = bound.immunization_bound_features(xp.numpy(), xh.numpy())
    theirs = bound.immunization_bound_features(xp, xh)
    assert ours.unbounded == theirs.unbounded and ours.offending_dim == theirs.offending_dim
    assert ours.kappa_lambda == pytest.approx(theirs.kappa_lambda, rel=1e-8)
    from_covariances = bound.immunization_bound(
        xp.numpy().T @ xp.numpy(), xh.numpy().T @ xh.numpy()
    )
    assert from_covariances.unbounded == theirs.unbounded
    weight = bound.closed_form_immunizer(xp.numpy(), xh.numpy())
    assert isinstance(weight, np.ndarray) and weight.flags.c_contiguous
    expected = bound.closed_form_immunizer(xp, xh)
    # columns of θ are eigenvectors, each determined up to its sign
    signs = np.sign(np.sum(weight * expected.numpy(), axis=1, keepdims=True))
    np.testing.assert_allclose(signs * weight, expected.numpy(), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("transform", ["none", "standardize", "whiten"])
def test_probe_attacks_in_numpy(transform, gen):
    """The paper's attacker (attacks/probes.py, built on core) gives torch's step counts and
    curves on numpy features, whatever the attacker's transform."""
    from condimmune.attacks.probes import compare_probe_attacks, squared_loss_lipschitz

    x = torch.randn(40, 6, generator=gen, dtype=torch.float64) * torch.linspace(0.1, 3, 6)
    y = x @ torch.randn(6, generator=gen, dtype=torch.float64)
    w = torch.randn(6, 6, generator=gen, dtype=torch.float64)
    ours = compare_probe_attacks(x.numpy(), y.numpy(), w.numpy(), budget=50, transform=transform)
    theirs = compare_probe_attacks(x, y, w, budget=50, transform=transform)
    for a, b in ((ours.original, theirs.original), (ours.immunized, theirs.immunized)):
        assert a.steps_to_target == b.steps_to_target
        assert isinstance(a.relative_suboptimality, np.ndarray)
        _same(a.relative_suboptimality, b.relative_suboptimality)
        assert a.condition_number == pytest.approx(b.condition_number, rel=1e-8)
    assert squared_loss_lipschitz(x.numpy()) == pytest.approx(squared_loss_lipschitz(x), rel=1e-12)


def test_exactly_singular_indefinite_factor_is_refused():
    assert symmetric_indefinite_solver(np.zeros((3, 3))) is None
    assert symmetric_indefinite_solver(torch.zeros(3, 3, dtype=torch.float64)) is None


@pytest.mark.parametrize("spectrum", SPECTRA.values(), ids=SPECTRA.keys())
def test_rank_and_mask_agree_across_backends(spectrum, gen):
    S = matrix_with_spectrum(spectrum, gen)
    assert spectral.numerical_rank(S.numpy()) == spectral.numerical_rank(S)
    lam = torch.linalg.eigvalsh(S)
    mask = spectral.nonzero_mask(lam.numpy(), size=9)
    assert isinstance(mask, np.ndarray) and mask.dtype == np.bool_
    assert mask.tolist() == spectral.nonzero_mask(lam, size=9).tolist()
    # measured against another matrix's σ_max = 2·max, at rtol 1/2 nothing is kept
    top = 2 * lam.max()
    assert not spectral.nonzero_mask(lam.numpy(), rtol=0.5, sigma_max=top.numpy()).any()
    assert not spectral.nonzero_mask(lam, rtol=0.5, sigma_max=top).any()
    assert spectral.nonzero_mask(lam.numpy(), rtol=0.5).any()


@pytest.mark.parametrize(
    "dtype", [torch.float32, torch.float64, np.float32, np.float64, np.dtype("float64")]
)
def test_machine_epsilon_reads_either_backends_dtype(dtype):
    expected = np.finfo(np.float32 if "32" in str(dtype) else np.float64).eps
    assert machine_epsilon(dtype) == expected
    assert spectral.default_rtol(7, dtype) == 7 * expected


@pytest.mark.parametrize("dtype", [torch.int64, np.int32, "bfloat16"], ids=str)
def test_machine_epsilon_refuses_non_float_dtypes(dtype):
    with pytest.raises(TypeError, match="not a floating-point dtype"):
        machine_epsilon(dtype)


def test_detached_and_namespace_keep_the_backend():
    t = torch.ones(2, requires_grad=True)
    assert not detached(t).requires_grad
    a = np.ones(2)
    assert detached(a) is a
    assert namespace(a).__name__ == "array_api_compat.numpy"
    with pytest.raises(TypeError):
        namespace(a, t)


BAD_NUMPY = {
    "list": ([[1.0]], TypeError, "torch.Tensor or a numpy array"),
    "int-dtype": (np.ones((2, 2), dtype=np.int64), TypeError, "float32 or float64"),
    "empty": (np.ones((0, 2)), ValueError, "empty"),
    "nan": (np.array([[1.0, np.nan]]), ValueError, "NaN or Inf"),
    "1-d": (np.ones(3), ValueError, "2-D"),
}


@pytest.mark.parametrize(("x", "error", "message"), BAD_NUMPY.values(), ids=BAD_NUMPY.keys())
def test_check_matrix_refuses_bad_numpy_input(x, error, message):
    with pytest.raises(error, match=message):
        check_matrix(x, "x")


def test_check_symmetric_psd_refuses_asymmetric_numpy():
    with pytest.raises(ValueError, match="not symmetric"):
        check_symmetric_psd(np.array([[1.0, 2.0], [0.0, 1.0]]), "S")


def test_zero_matrix_is_degenerate_in_numpy():
    with pytest.raises(DegenerateSpectrumError):
        spectral.log_condition_number(np.zeros((3, 3)))


SAME_DEVICE_DTYPE = {
    "mixed-backends": ((np.ones(2), torch.ones(2, dtype=torch.float64)), TypeError, "both"),
    "mixed-dtypes": ((np.ones(2), np.ones(2, dtype=np.float32)), TypeError, "dtype"),
}


@pytest.mark.parametrize(
    ("pair", "error", "message"), SAME_DEVICE_DTYPE.values(), ids=SAME_DEVICE_DTYPE.keys()
)
def test_check_same_device_dtype_refuses_mixtures(pair, error, message):
    with pytest.raises(error, match=message):
        check_same_device_dtype(a=pair[0], b=pair[1])
    check_same_device_dtype(a=pair[0], b=pair[0])


def test_numpy_calls_do_not_import_torch():
    code = (
        "import numpy as np\n"
        "from condimmune.core import spectral\n"
        "x = np.random.default_rng(0).standard_normal((6, 4))\n"
        "spectral.log_condition_number_features(x)\n"
        "spectral.paper_compatible_condition_number(x.T @ x)\n"
        "from condimmune.core import eigenpairs, regularizers\n"
        "regularizers.r_ill_features(x, rank_deficiency='allow')\n"
        "eigenpairs.log_condition_number_features_gradient(\n"
        "    x, eigenvectors=eigenpairs.EigenvectorMethod.INVERSE_ITERATION)\n"
        "from condimmune.attacks.probes import compare_probe_attacks\n"
        "compare_probe_attacks(x, x @ np.ones(4), np.eye(4), transform='whiten')\n"
        "from condimmune.core.tracking import ExtremeEigenTracker\n"
        "assert ExtremeEigenTracker().track(\n"
        "    x.T @ x, rtol=1e-12, top_vector=True, low_vector=True) is not None\n"
    )
    assert torch_modules_after(code) == []
