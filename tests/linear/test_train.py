import pytest
import torch

from condimmune.experiments.config import (
    apply_overrides,
    config_from_dict,
    default_config,
    load_config,
)
from condimmune.linear.data import load_task_data
from condimmune.linear.train import train_linear


@pytest.fixture(scope="module")
def digits():
    cfg = apply_overrides(default_config("digits"), ["train.epochs=3"])
    return cfg, load_task_data("digits", cfg.data, seed=0)


def test_training_is_deterministic_in_the_seed(digits):
    cfg, data = digits
    a, _ = train_linear(data, cfg.train, seed=3, progress=False)
    b, _ = train_linear(data, cfg.train, seed=3, progress=False)
    c, _ = train_linear(data, cfg.train, seed=4, progress=False)
    torch.testing.assert_close(a.weight, b.weight, rtol=0, atol=0)
    assert not torch.equal(a.weight, c.weight)


def test_none_keeps_the_identity_extractor(digits):
    cfg, data = digits
    cfg = apply_overrides(cfg, ["train.method=none"])
    model, history = train_linear(data, cfg.train, seed=0, progress=False)
    torch.testing.assert_close(model.weight, torch.eye(data.dim, dtype=torch.float64))
    assert len(history.task_loss) == 3


def test_condnum_records_a_rank_deficient_harmful_covariance():
    cfg = apply_overrides(default_config("digits"), ["train.epochs=1", "data.drop_collinear=false"])
    data = load_task_data("digits", cfg.data, seed=0)
    _, history = train_linear(data, cfg.train, seed=0, progress=False)
    assert any("non-zero spectrum" in note for note in history.notes)


def test_data_is_deterministic_and_tasks_disjoint():
    cfg = default_config("mnist-pair").data
    a = load_task_data("mnist-pair", cfg, seed=1)
    b = load_task_data("mnist-pair", cfg, seed=1)
    torch.testing.assert_close(a.benign.x_train, b.benign.x_train)
    assert a.benign.y_train.sum() == cfg.per_class  # balanced one-vs-rest
    assert a.benign.x_train.shape == (2 * cfg.per_class, cfg.pca_components)


def test_config_overrides_coerce_types_and_reject_bad_values(tmp_path):
    cfg = apply_overrides(default_config("digits"), ["train.lr=1e-2", "data.drop_collinear=no"])
    assert cfg.train.lr == 0.01 and cfg.data.drop_collinear is False
    with pytest.raises(ValueError, match=r"train\.lr"):
        apply_overrides(cfg, ["train.lr=-1"])
    with pytest.raises(ValueError, match=r"train\.harmful_weight"):
        apply_overrides(cfg, ["train.harmful_weight=1.5"])
    with pytest.raises(ValueError, match=r"train\.step_rule"):
        apply_overrides(cfg, ["train.step_rule=newton"])
    with pytest.raises(ValueError, match="unknown config key: data"):
        apply_overrides(cfg, ["data=3"])
    with pytest.raises(ValueError, match="experiment"):
        apply_overrides(cfg, ["experiment=house-price"])
    with pytest.raises(ValueError, match="must be a mapping"):
        config_from_dict({"train": 3})
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ValueError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
