"""The mobilenet-fashion-mnist defaults and the config keys it added."""

from __future__ import annotations

import pytest

from condimmune.experiments.config import apply_overrides, default_config, load_config
from condimmune.experiments.pipeline import resolve_plan

FULL = "src/condimmune/configs/mobilenet-fashion-mnist-full.yaml"


def test_defaults_are_the_documented_cpu_experiment() -> None:
    c = default_config("mobilenet-fashion-mnist")
    assert (c.model.backbone, c.model.weights, c.model.image_size) == (
        "mobilenet-v2",
        "imagenet",
        64,
    )
    assert c.model.cache_prefix and c.model.trainable_blocks == 2
    assert c.data.root is None and c.data.max_test_images == 0  # Debian's files, full test set
    assert (c.eval.groups, c.eval.group_size) == (20, 100)  # the paper's protocol
    assert c.train.logger == "csv"


def test_the_full_scale_config_loads() -> None:
    c = load_config(FULL)
    assert c.experiment == "mobilenet-fashion-mnist"
    assert (c.data.max_train_images, c.model.image_size) == (0, 224)
    assert (c.train.accelerator, c.train.precision) == ("gpu", "16-mixed")


@pytest.mark.parametrize(
    ("experiment", "assignment", "match"),
    [
        ("mnist-cnn", "model.trainable_blocks=3", "read by backbone mobilenet-v2 only"),
        ("mnist-cnn", "model.weights=imagenet", "installed mobilenet-v2 checkpoint"),
        ("mobilenet-fashion-mnist", "train.logger=wandb", "train.logger"),
        ("mobilenet-fashion-mnist", "model.trainable_blocks=-1", "model.trainable_blocks"),
        ("mobilenet-fashion-mnist", "data.benign_digits=01", "not read by experiment"),
    ],
)
def test_bad_values_are_refused(experiment, assignment, match) -> None:
    with pytest.raises(ValueError, match=match):
        apply_overrides(default_config(experiment), [assignment])


def test_cache_dir_comes_from_the_config_then_the_environment(tmp_path, monkeypatch) -> None:
    c = default_config("mobilenet-fashion-mnist")

    def cache_dir(config: object) -> object:
        return resolve_plan(config).options.model.cache_dir  # type: ignore[arg-type]

    monkeypatch.setenv("CONDIMMUNE_CACHE_DIR", str(tmp_path / "env"))
    assert cache_dir(c) == tmp_path / "env"
    monkeypatch.delenv("CONDIMMUNE_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir(c) == tmp_path / "xdg" / "condimmune"
    c = apply_overrides(c, [f"model.cache_dir={tmp_path / 'own'}"])
    assert cache_dir(c) == tmp_path / "own"


@pytest.mark.parametrize(
    ("path", "size", "gpu"),
    [
        ("src/condimmune/configs/mobilenet-full-depth-cpu.yaml", 32, False),
        ("src/condimmune/configs/mobilenet-full-depth-gpu.yaml", 224, True),
    ],
    ids=["cpu", "gpu"],
)
def test_the_whole_network_configs_load(path, size, gpu) -> None:
    c = load_config(path)
    assert (c.train.method, c.model.image_size, c.model.cache_prefix) == ("full-depth", size, False)
    assert c.data.defence_per_class > 0
    assert (c.train.accelerator == "gpu") is gpu
    resolve_plan(c)  # the method's options and the family's typed options resolve
