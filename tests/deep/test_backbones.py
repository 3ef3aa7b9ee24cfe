"""Backbone registry, trainable parts, local weights, and the folded feature map."""

from __future__ import annotations

import pytest
import torch

from condimmune.deep.backbones import Backbone, build_model, load_weights

CASES = [
    ("small-cnn", 8, 128, {"body.block3.", "head."}),
    ("resnet18", 32, 512, {"body.layer4.", "head."}),
    ("vit-b16", 32, 768, {"body.blocks.11.", "body.norm.", "head."}),
]


@pytest.mark.parametrize(("name", "size", "k", "prefixes"), CASES, ids=[c[0] for c in CASES])
def test_features_and_the_papers_trainable_parts(name, size, k, prefixes) -> None:
    model = build_model(name, num_classes=5, image_size=size, seed=0).eval()
    channels = 1 if name == "small-cnn" else 3
    phi, logits = model(torch.randn(2, channels, size, size))
    assert phi.shape == (2, k) and logits.shape == (2, 5)
    model.freeze_for_immunization()
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained and all(n.startswith(tuple(prefixes)) for n in trained)
    for prefix in prefixes:  # every named part is trained, nothing else
        assert any(n.startswith(prefix) for n in trained), prefix
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen


def test_same_seed_same_weights_and_global_rng_untouched() -> None:
    state = torch.random.get_rng_state()
    a = build_model("small-cnn", num_classes=3, image_size=8, seed=4)
    b = build_model("small-cnn", num_classes=3, image_size=8, seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y)


def test_torchvision_state_dict_loads_into_the_adapter(tmp_path) -> None:
    from torchvision.models import resnet18

    net = resnet18(weights=None, num_classes=4)
    path = tmp_path / "rn18.pth"
    torch.save(net.state_dict(), path)
    model = build_model("resnet18", num_classes=4, image_size=32, weights=path)
    x = torch.randn(2, 3, 32, 32)
    net.eval()
    model.eval()
    torch.testing.assert_close(model(x)[1], net(x))


def test_safetensors_round_trip(tmp_path) -> None:
    from safetensors.torch import save_file

    a = build_model("small-cnn", num_classes=3, image_size=8, seed=1)
    save_file({k: v.contiguous() for k, v in a.state_dict().items()}, tmp_path / "w.safetensors")
    b = build_model("small-cnn", num_classes=3, image_size=8, weights=tmp_path / "w.safetensors")
    x = torch.randn(3, 1, 8, 8)
    torch.testing.assert_close(a.eval()(x)[1], b.eval()(x)[1])


ERRORS = [
    ("missing-file", lambda p: p / "nope.safetensors", FileNotFoundError, "nope.safetensors"),
    ("not-a-checkpoint", lambda p: _write(p / "x.pth", b"garbage"), ValueError, "neither"),
]


def _write(path, data):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(("case", "make", "exc", "match"), ERRORS, ids=[e[0] for e in ERRORS])
def test_weight_file_errors(tmp_path, case, make, exc, match) -> None:
    model = build_model("small-cnn", num_classes=3, image_size=8)
    with pytest.raises(exc, match=match):
        load_weights(model, make(tmp_path))


def test_head_of_another_size_is_an_error_not_a_silent_reinit(tmp_path) -> None:
    from safetensors.torch import save_file

    a = build_model("small-cnn", num_classes=10, image_size=8)
    save_file({k: v.contiguous() for k, v in a.state_dict().items()}, tmp_path / "w.safetensors")
    with pytest.raises(ValueError, match="shape"):
        build_model("small-cnn", num_classes=3, image_size=8, weights=tmp_path / "w.safetensors")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"backbone": "resnet50"}, "unknown backbone 'resnet50'"),
        ({"backbone": "vit-b16", "image_size": 30}, "divisible by 16"),
        ({"backbone": "small-cnn", "num_classes": 0}, "num_classes"),
    ],
    ids=["unknown-backbone", "vit-size", "no-classes"],
)
def test_bad_arguments(kwargs, match) -> None:
    args = {"num_classes": 3, "image_size": 16, **kwargs}
    with pytest.raises(ValueError, match=match):
        build_model(args.pop("backbone"), **args)


def test_feature_map_is_folded_into_the_head_so_logits_are_unchanged() -> None:
    model = build_model("small-cnn", num_classes=3, image_size=8, seed=2).double().eval()
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    before = model(x)
    gen = torch.Generator().manual_seed(0)
    T = torch.randn(128, 128, generator=gen, dtype=torch.float64) + 5 * torch.eye(
        128, dtype=torch.float64
    )
    model.set_feature_map(T)
    after = model(x)
    torch.testing.assert_close(after[0], before[0] @ T.mT)
    torch.testing.assert_close(after[1], before[1])


def test_registry_is_complete() -> None:
    from condimmune.deep.backbones import SPECS

    assert set(SPECS) == set(Backbone)


def test_a_timm_vit_state_dict_loads_whole_into_the_adapter(tmp_path) -> None:
    """Its class token and position embedding included (they are the timm wrapper's own
    parameters: once left unregistered, a real checkpoint could not load, and no attacker
    trained or re-initialised them)."""
    import timm

    net = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=4, img_size=32)
    with torch.no_grad():
        net.pos_embed.normal_()
        net.cls_token.normal_()
    path = tmp_path / "vit.pth"
    torch.save(net.state_dict(), path)
    model = build_model("vit-b16", num_classes=4, image_size=32, weights=path)
    assert torch.equal(model.body.pos_embed, net.pos_embed)
    x = torch.randn(2, 3, 32, 32)
    net.eval()
    model.eval()
    torch.testing.assert_close(model(x)[1], net(x))
