import math

import pytest
import torch
from torch.autograd.functional import hessian

import condimmune as ci


def _phi(gen, n=12, k=4):
    return torch.randn(n, k, generator=gen, dtype=torch.float64)


def test_squared_hessian_matches_autograd(gen):
    Phi = _phi(gen)
    y = torch.randn(12, generator=gen, dtype=torch.float64)
    expected = hessian(lambda w: ((Phi @ w - y) ** 2).mean(), torch.zeros(4, dtype=torch.float64))
    torch.testing.assert_close(ci.probing_hessian(Phi, loss="squared"), expected)


def test_logistic_hessian_matches_autograd(gen):
    Phi = _phi(gen)
    y = (torch.rand(12, generator=gen) > 0.5).to(torch.float64)
    w0 = torch.randn(4, generator=gen, dtype=torch.float64)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    expected = hessian(lambda w: bce(Phi @ w, y), w0)
    torch.testing.assert_close(ci.probing_hessian(Phi, loss="logistic", head=w0), expected)


def test_cross_entropy_hessian_matches_autograd(gen):
    Phi = _phi(gen)
    y = torch.randint(0, 3, (12,), generator=gen)
    W0 = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    ce = torch.nn.functional.cross_entropy
    expected = hessian(lambda w: ce(Phi @ w.reshape(3, 4).mT, y), W0.reshape(-1))
    torch.testing.assert_close(ci.probing_hessian(Phi, loss="cross-entropy", head=W0), expected)


@pytest.mark.parametrize("loss", ["logistic", "cross-entropy"])
def test_classification_hessian_at_zero_head_has_kappa_of_covariance(loss, gen):
    Phi = _phi(gen)
    head = None if loss == "logistic" else torch.zeros(3, 4, dtype=torch.float64)
    got = float(ci.log_probing_hessian_condition_number(Phi, loss=loss, head=head))
    assert got == pytest.approx(float(ci.log_condition_number(Phi.mT @ Phi)), rel=1e-8)


def test_relative_immunization_ratio_definition():
    rir = ci.relative_immunization_ratio(
        harmful_original=10.0, harmful_immunized=1000.0, benign_original=50.0, benign_immunized=5.0
    )
    assert rir == pytest.approx((1000 / 10) / (5 / 50))
    with pytest.raises(ValueError, match="benign_original"):
        ci.relative_immunization_ratio(
            harmful_original=1.0, harmful_immunized=1.0, benign_original=0.0, benign_immunized=1.0
        )


def test_condition_numbers_of_identity_extractor_give_rir_one(gen):
    xp = torch.randn(30, 5, generator=gen, dtype=torch.float64)
    xh = torch.randn(20, 5, generator=gen, dtype=torch.float64)
    c = ci.immunization_condition_numbers(xp, xh, torch.eye(5, dtype=torch.float64))
    assert c.rir == pytest.approx(1.0)
    assert c.benign_original == pytest.approx(float(ci.condition_number(xp.mT @ xp)))
    W = torch.diag(torch.tensor([1.0, 1.0, 1.0, 1.0, 100.0], dtype=torch.float64))
    scaled = ci.immunization_condition_numbers(xp, xh, W)
    assert scaled.harmful_ratio > 1
    assert scaled.rir == pytest.approx(scaled.harmful_ratio / scaled.benign_ratio)
    compat = ci.immunization_condition_numbers(xp, xh, W, rule="paper-compatible")
    # full-rank, well-scaled data: both rules agree
    assert compat.rir == pytest.approx(scaled.rir, rel=1e-4)


def test_condition_numbers_refuse_mismatched_shapes(gen):
    xp = torch.randn(30, 5, generator=gen, dtype=torch.float64)
    with pytest.raises(ValueError, match="input dimension"):
        ci.immunization_condition_numbers(
            xp, torch.randn(9, 4, dtype=torch.float64), torch.eye(5, dtype=torch.float64)
        )
    with pytest.raises(TypeError, match="dtype"):
        ci.immunization_condition_numbers(xp, xp.float(), torch.eye(5, dtype=torch.float64))
    with pytest.raises(ValueError, match="unknown rule"):
        ci.immunization_condition_numbers(xp, xp, torch.eye(5, dtype=torch.float64), rule="ridge")


CHECKS = {
    "immunized": (ci.ConditionNumbers(10.0, 5.0, 10.0, 1000.0), None, True, True, True),
    "harmful-too-small": (ci.ConditionNumbers(10.0, 5.0, 10.0, 50.0), None, False, True, False),
    "benign-worse": (ci.ConditionNumbers(10.0, 11.0, 10.0, 1000.0), None, True, False, False),
    "utility-lost": (ci.ConditionNumbers(10.0, 5.0, 10.0, 1000.0), (1.0, 2.0), True, True, False),
    "utility-kept": (ci.ConditionNumbers(10.0, 5.0, 10.0, 1000.0), (1.0, 1.01), True, True, True),
}


@pytest.mark.parametrize(
    "kappas, losses, harmful, benign, immunized", CHECKS.values(), ids=CHECKS.keys()
)
def test_check_immunization(kappas, losses, harmful, benign, immunized):
    kw = (
        {}
        if losses is None
        else dict(benign_loss_original=losses[0], benign_loss_immunized=losses[1])
    )
    check = ci.check_immunization(kappas, **kw)
    assert (check.harmful_ok, check.benign_ok, check.immunized) == (harmful, benign, immunized)
    assert check.harmful_margin == pytest.approx(kappas.harmful_ratio / 10.0)
    assert check.benign_margin == pytest.approx(1 / kappas.benign_ratio)
    if losses is not None:
        assert check.utility_gap == pytest.approx(losses[1] / losses[0] - 1)


def test_check_immunization_needs_both_losses():
    with pytest.raises(ValueError, match="both"):
        ci.check_immunization(ci.ConditionNumbers(1.0, 1.0, 1.0, 1.0), benign_loss_original=1.0)


HESSIAN_ERRORS = {
    "squared-with-head": (
        dict(loss="squared", head=torch.zeros(4, dtype=torch.float64)),
        "head=None",
    ),
    "logistic-bad-head": (
        dict(loss="logistic", head=torch.zeros(3, dtype=torch.float64)),
        r"\(4,\)",
    ),
    "ce-without-head": (dict(loss="cross-entropy"), "needs the head"),
    "ce-bad-head": (
        dict(loss="cross-entropy", head=torch.zeros(3, 5, dtype=torch.float64)),
        r"\(C, 4\)",
    ),
    "unknown-loss": (dict(loss="hinge"), "unknown loss 'hinge'"),
}


@pytest.mark.parametrize("kwargs, match", HESSIAN_ERRORS.values(), ids=HESSIAN_ERRORS.keys())
def test_probing_hessian_errors(kwargs, match, gen):
    with pytest.raises(ValueError, match=match):
        ci.probing_hessian(_phi(gen), **kwargs)


def test_rir_overflows_to_inf_not_an_exception():
    rir = ci.relative_immunization_ratio(
        harmful_original=1e-300, harmful_immunized=1e300, benign_original=1.0, benign_immunized=1.0
    )
    assert math.isinf(rir)


def test_device_mismatch_is_refused(gen):
    """Tensors on two devices are refused before any computation (meta stands in for a GPU)."""
    xp = torch.randn(30, 5, generator=gen, dtype=torch.float64)
    on_other_device = torch.empty(30, 5, dtype=torch.float64, device="meta")
    with pytest.raises(ValueError, match="same device"):
        ci.immunization_condition_numbers(xp, on_other_device, torch.eye(5, dtype=torch.float64))
    with pytest.raises(ValueError, match="same device"):
        ci.probe_attack(xp, torch.empty(30, dtype=torch.float64, device="meta"))
