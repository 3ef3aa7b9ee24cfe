"""RIR_θ0 over random groups (Eq. 17–18): ``group_immunization_ratios`` on hand-computed cases.

Two kinds of construction make every group's κ ratio known without knowing which rows a
seeded group drew:

* ``group_size`` equal to the number of rows: every group is all rows (in some order), so
  every group has the same, prescribed κ and the std over groups is 0.
* axis-aligned rows (each row is ``c · e_j``): a group's covariance ``ΦᵀΦ`` is exactly the
  diagonal of the summed ``c²`` per axis, so its κ (both rules) is a ratio of hand-summed
  numbers, and the harmful ratio takes one of two known values depending on which row the
  group left out. The statistics must then be those of ``m`` groups of one value and
  ``G − m`` of the other, for one integer ``m``: a check that holds for every seed.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from _helpers import features_with_singular_values

from condimmune.core.errors import DegenerateSpectrumError
from condimmune.deep.evaluate import group_immunization_ratios
from condimmune.deep.records import GroupRatios

RIDGE = 1e-6  # the reference code's ridge, condimmune.core.spectral.PAPER_RIDGE


def _honest_kappa(diag: list[float]) -> float:
    """κ of diag(d) over its non-zero entries (Eq. 1)."""
    nz = [d for d in diag if d > 0]
    return max(nz) / min(nz)


def _paper_kappa(diag: list[float]) -> float:
    """The reference rule on diag(d): eigenvalues of diag(d) + ridge·I above the ridge."""
    above = [d + RIDGE for d in diag if d + RIDGE > RIDGE]
    return max(above) / min(above)


def _axis_rows(coefficients: list[tuple[int, float]], k: int) -> torch.Tensor:
    """Rows ``c · e_j`` for ``(j, c)`` in ``coefficients`` (n × k, float64)."""
    phi = torch.zeros(len(coefficients), k, dtype=torch.float64)
    for row, (axis, c) in enumerate(coefficients):
        phi[row, axis] = c
    return phi


# --------------------------------------------------------------- every group is all rows

FULL_GROUPS = [
    pytest.param(
        9, [3.0, 2.0, 1.0], [1.0, 0.5, 0.25], [2.0, 2.0, 1.0], [4.0, 1.0, 0.5], id="n9-k3"
    ),
    pytest.param(
        5,
        [2.0, 1.0, 1.0, 0.5],
        [1.0, 1.0, 1.0, 1.0],
        [3.0, 1.0, 0.5, 0.5],
        [1.0, 1.0, 0.5, 0.2],
        id="n5-k4-benign-immunized-at-kappa-1",
    ),
]


@pytest.mark.parametrize(("n", "benign_0", "benign_i", "harmful_0", "harmful_i"), FULL_GROUPS)
def test_groups_of_all_rows_give_the_prescribed_ratios_with_zero_spread(
    n, benign_0, benign_i, harmful_0, harmful_i, gen
) -> None:
    """κ(ΦᵀΦ) = (s_max/s_min)² for prescribed singular values s, whatever the row order."""

    def kappa(s):
        return (max(s) / min(s)) ** 2

    def feats(s):
        return features_with_singular_values(n, s, gen)

    benign = (feats(benign_0), feats(benign_i))
    harmful = (feats(harmful_0), feats(harmful_i))
    r = group_immunization_ratios(benign, harmful, groups=6, group_size=n, seed=0)
    ratio_h = kappa(harmful_i) / kappa(harmful_0)
    ratio_b = kappa(benign_i) / kappa(benign_0)
    # every group holds the same rows in another order: the values differ only by the
    # rounding of the re-ordered sums in ΦᵀΦ and its eigensolver (≈ 100 eps on these
    # κ ≤ 64), hence 1e-12 relative and an absolute 1e-12 for the spreads.
    assert r.harmful_ratio_mean == pytest.approx(ratio_h, rel=1e-12)
    assert r.benign_ratio_mean == pytest.approx(ratio_b, rel=1e-12)
    assert r.rir_mean == pytest.approx(ratio_h / ratio_b, rel=1e-12)
    assert r.log_rir_mean == pytest.approx(math.log(ratio_h / ratio_b), rel=1e-12)
    for spread in (r.harmful_ratio_std, r.benign_ratio_std, r.rir_std):
        assert spread == pytest.approx(0.0, abs=1e-12)
    assert (r.groups, r.group_size) == (6, n)


def test_groups_of_all_rows_paper_compatible_rule(gen) -> None:
    """Full-rank groups: the paper's κ is (λ_max + ρ)/(λ_min + ρ), ρ = 1e-6."""
    n = 8
    s = {"b0": [2.0, 1.0, 0.5], "bi": [1.0, 1.0, 0.5], "h0": [2.0, 1.0, 1.0], "hi": [4.0, 1.0, 0.1]}
    phi = {key: features_with_singular_values(n, v, gen) for key, v in s.items()}

    def kappa(v):
        return (max(v) ** 2 + RIDGE) / (min(v) ** 2 + RIDGE)

    r = group_immunization_ratios(
        (phi["b0"], phi["bi"]),
        (phi["h0"], phi["hi"]),
        groups=4,
        group_size=n,
        seed=3,
        paper_compatible=True,
    )
    ratio_h, ratio_b = kappa(s["hi"]) / kappa(s["h0"]), kappa(s["bi"]) / kappa(s["b0"])
    # same rounding argument as above (κ ≤ 1600 here)
    assert r.harmful_ratio_mean == pytest.approx(ratio_h, rel=1e-11)
    assert r.benign_ratio_mean == pytest.approx(ratio_b, rel=1e-11)
    assert r.rir_mean == pytest.approx(ratio_h / ratio_b, rel=1e-11)
    assert r.rir_std == pytest.approx(0.0, abs=1e-9)


def test_wide_groups_use_the_nonzero_spectrum(gen) -> None:
    """n < k: the group covariance has rank n; the honest κ is over its n non-zero
    eigenvalues (the module docstring's rank-deficient case)."""
    n, k = 4, 10
    zeros = [0.0] * (k - n)
    b0 = features_with_singular_values(n, [2.0, 1.0, 1.0, 1.0, *zeros], gen)
    bi = features_with_singular_values(n, [2.0, 2.0, 1.0, 1.0, *zeros], gen)
    h0 = features_with_singular_values(n, [1.0, 1.0, 1.0, 0.5, *zeros], gen)
    hi = features_with_singular_values(n, [3.0, 1.0, 1.0, 0.25, *zeros], gen)
    r = group_immunization_ratios((b0, bi), (h0, hi), groups=3, group_size=n, seed=1)
    ratio_h = (3.0 / 0.25) ** 2 / (1.0 / 0.5) ** 2  # 144 / 4
    ratio_b = (2.0 / 1.0) ** 2 / (2.0 / 1.0) ** 2  # 4 / 4
    assert r.harmful_ratio_mean == pytest.approx(ratio_h, rel=1e-12)  # rounding, as above
    assert r.benign_ratio_mean == pytest.approx(ratio_b, rel=1e-12)
    assert r.rir_mean == pytest.approx(ratio_h / ratio_b, rel=1e-12)


# --------------------------------------------------------------- two known group values

# Harmful task: 4 axis-aligned rows in k = 2, groups of 3, i.e. each group leaves out one
# row. Original rows e1, e1, e2, e2; immunized rows 2e1, 2e1, e2, e2 (same rows).
#   leaving out an e2 row: Φ₀ᵀΦ₀ = diag(2, 1), Φ_Iᵀ Φ_I = diag(8, 1)  → group kind "A"
#   leaving out an e1 row: Φ₀ᵀΦ₀ = diag(1, 2), Φ_Iᵀ Φ_I = diag(4, 2)  → group kind "B"
HARMFUL_0 = [(0, 1.0), (0, 1.0), (1, 1.0), (1, 1.0)]
HARMFUL_I = [(0, 2.0), (0, 2.0), (1, 1.0), (1, 1.0)]
HARMFUL_DIAGS = {"A": ([2.0, 1.0], [8.0, 1.0]), "B": ([1.0, 2.0], [4.0, 2.0])}
# Benign task: exactly 3 rows, so every benign group is all of them: a constant ratio.
#   Φ₀ᵀΦ₀ = diag(4, 2), Φ_Iᵀ Φ_I = diag(4, 5)
BENIGN_0 = [(0, 2.0), (1, 1.0), (1, 1.0)]
BENIGN_I = [(0, 2.0), (1, 2.0), (1, 1.0)]
BENIGN_DIAGS = ([4.0, 2.0], [4.0, 5.0])

RULES = [
    pytest.param(False, _honest_kappa, id="honest"),
    pytest.param(True, _paper_kappa, id="paper-compatible"),
]


def _two_valued(seed: int, groups: int, paper: bool) -> GroupRatios:
    return group_immunization_ratios(
        (_axis_rows(BENIGN_0, 2), _axis_rows(BENIGN_I, 2)),
        (_axis_rows(HARMFUL_0, 2), _axis_rows(HARMFUL_I, 2)),
        groups=groups,
        group_size=3,
        seed=seed,
        paper_compatible=paper,
    )


def _count_of_a(r: GroupRatios, a: float, b: float) -> int:
    """The number m of kind-"A" groups implied by the harmful mean, checked to be an integer."""
    m = r.groups * (r.harmful_ratio_mean - b) / (a - b)
    # the mean of G exact values, so m is an integer up to rounding (1e-9 ≫ G·eps)
    assert m == pytest.approx(round(m), abs=1e-9), f"harmful mean {r.harmful_ratio_mean} is no mix"
    return round(m)


@pytest.mark.parametrize("seed", [0, 1, 7])
@pytest.mark.parametrize(("paper", "kappa"), RULES)
def test_mean_std_and_log_mean_of_a_two_valued_ratio(seed, paper, kappa) -> None:
    groups = 40
    r = _two_valued(seed, groups, paper)
    ratio = {g: kappa(imm) / kappa(orig) for g, (orig, imm) in HARMFUL_DIAGS.items()}
    benign = kappa(BENIGN_DIAGS[1]) / kappa(BENIGN_DIAGS[0])
    m = _count_of_a(r, ratio["A"], ratio["B"])
    # each group leaves out an e2 row with probability 1/2: with 40 groups all alike has
    # probability 2⁻³⁹, so both kinds occur and the std below is not the trivial 0
    assert 0 < m < groups
    values = torch.tensor([ratio["A"]] * m + [ratio["B"]] * (groups - m), dtype=torch.float64)
    # sample (n − 1) std, as "mean ± std over the groups"
    spread = math.sqrt(m * (groups - m) / (groups * (groups - 1))) * abs(ratio["A"] - ratio["B"])
    assert r.harmful_ratio_std == pytest.approx(spread, rel=1e-12)
    assert r.harmful_ratio_std == pytest.approx(float(values.std()), rel=1e-12)
    assert r.benign_ratio_mean == pytest.approx(benign, rel=1e-12)
    assert r.benign_ratio_std == pytest.approx(0.0, abs=1e-15)
    assert r.rir_mean == pytest.approx(float(values.mean()) / benign, rel=1e-12)
    assert r.rir_std == pytest.approx(spread / benign, rel=1e-12)
    log_mean = (m * math.log(ratio["A"]) + (groups - m) * math.log(ratio["B"])) / groups
    assert r.log_rir_mean == pytest.approx(log_mean - math.log(benign), rel=1e-12)
    # Jensen: the mean of exp(log RIR) is at least exp of the mean, strictly here (m ≠ 0, G)
    assert r.rir_mean > math.exp(r.log_rir_mean)


def test_both_rules_see_the_same_groups_and_the_draw_is_seeded() -> None:
    """The κ rule does not change which rows a seed draws; the same seed gives the same result."""
    honest = _two_valued(5, 30, paper=False)
    paper = _two_valued(5, 30, paper=True)
    m_honest = _count_of_a(honest, 4.0, 1.0)  # diag(8,1)/diag(2,1) = 4, diag(4,2)/diag(1,2) = 1
    a, b = (_paper_kappa(i) / _paper_kappa(o) for o, i in HARMFUL_DIAGS.values())
    assert _count_of_a(paper, a, b) == m_honest
    assert _two_valued(5, 30, paper=False) == honest
    assert _two_valued(5, 30, paper=True) == paper


def test_identical_models_give_ratio_one_and_swapping_them_inverts(gen) -> None:
    b0 = torch.randn(12, 5, generator=gen, dtype=torch.float64)
    bi = torch.randn(12, 5, generator=gen, dtype=torch.float64)
    h0 = torch.randn(10, 5, generator=gen, dtype=torch.float64)
    hi = torch.randn(10, 5, generator=gen, dtype=torch.float64)
    same = group_immunization_ratios((b0, b0), (h0, h0), groups=5, group_size=6, seed=2)
    assert dataclasses.asdict(same) == {
        "harmful_ratio_mean": 1.0,
        "harmful_ratio_std": 0.0,
        "benign_ratio_mean": 1.0,
        "benign_ratio_std": 0.0,
        "rir_mean": 1.0,
        "rir_std": 0.0,
        "log_rir_mean": 0.0,
        "groups": 5,
        "group_size": 6,
    }
    forward = group_immunization_ratios((b0, bi), (h0, hi), groups=5, group_size=6, seed=2)
    backward = group_immunization_ratios((bi, b0), (hi, h0), groups=5, group_size=6, seed=2)
    # same rows per group, every log ratio negated exactly: the log mean flips sign
    assert backward.log_rir_mean == -forward.log_rir_mean
    assert forward.log_rir_mean != 0.0


# --------------------------------------------------------------------------- error paths

_OK = torch.eye(4, dtype=torch.float64)

ERRORS = [
    pytest.param(
        (_OK, _OK[:, :3]),
        (_OK, _OK),
        2,
        ValueError,
        "benign: original and immunized features differ in shape",
        id="benign-shape",
    ),
    pytest.param(
        (_OK, _OK),
        (_OK[:3], _OK),
        2,
        ValueError,
        "harmful: original and immunized features differ in shape",
        id="harmful-shape",
    ),
    pytest.param(
        (_OK, _OK),
        (_OK, _OK),
        5,
        ValueError,
        "group_size = 5 exceeds the 4 benign samples available",
        id="group-too-large-benign",
    ),
    pytest.param(
        (torch.eye(6, 4, dtype=torch.float64),) * 2,
        (_OK, _OK),
        5,
        ValueError,
        "group_size = 5 exceeds the 4 harmful samples available",
        id="group-too-large-harmful",
    ),
    pytest.param(
        (_OK, _OK),
        (_OK, torch.zeros(4, 4, dtype=torch.float64)),
        2,
        DegenerateSpectrumError,
        "no positive eigenvalue",
        id="zero-immunized-features",
    ),
]


@pytest.mark.parametrize(("benign", "harmful", "group_size", "exc", "match"), ERRORS)
def test_errors(benign, harmful, group_size, exc, match) -> None:
    with pytest.raises(exc, match=match):
        group_immunization_ratios(benign, harmful, groups=2, group_size=group_size, seed=0)


def test_zero_features_are_refused_by_the_paper_rule_too() -> None:
    zero = torch.zeros(4, 4, dtype=torch.float64)
    with pytest.raises(DegenerateSpectrumError, match="numerically zero"):
        group_immunization_ratios(
            (_OK, _OK), (_OK, zero), groups=2, group_size=2, seed=0, paper_compatible=True
        )


@pytest.mark.parametrize(
    ("groups", "group_size", "match"),
    [
        pytest.param(1, 2, "groups = 1: at least 2 groups", id="one-group-has-no-std"),
        pytest.param(0, 2, "groups = 0", id="no-group"),
        pytest.param(2, 1, "group_size = 1: a κ needs at least 2", id="one-sample-group"),
    ],
)
def test_degenerate_group_counts_are_refused(groups: int, group_size: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        group_immunization_ratios(
            (_OK, _OK), (_OK, _OK), groups=groups, group_size=group_size, seed=0
        )
