"""The backend registry (reldrop.attribution.registry): order, registration, default methods,
methods without a zennit composite, and RelDrop's up-front validation."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from torchvision.models.resnet import BasicBlock

import reldrop
from reldrop import models
from reldrop.attribution import Attributor, presets, registry
from helpers.resnet_zoo import tiny_resnet

X = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
Y = torch.tensor([0, 3])


class _Const:
    """A backend that answers a fixed relevance and, optionally, a default method for a model type."""

    def __init__(self, value=3.0, methods=None, default_for=None, default="gradient_x_input"):
        self.value, self.methods, self.default_for, self.default = value, methods, default_for, default

    def supports(self, model, method, **opts):
        return True if self.methods is None or method in self.methods else f"only {self.methods}"

    def build(self, model, method, **opts):
        return lambda x, target: torch.full_like(x, self.value)

    def default_method(self, model):
        return self.default if self.default_for is not None and isinstance(model, self.default_for) else None


@pytest.fixture
def registered():
    """Register test backends through this fixture; they are removed afterwards."""
    names: list[str] = []

    def add(name, backend, **kw):
        registry.register_backend(name, backend, **kw)
        names.append(name)

    yield add
    for name in names:
        if name in registry.backend_names():
            registry.unregister_backend(name)


@pytest.fixture(scope="module")
def resnet():
    return tiny_resnet(BasicBlock, seed=1, dtype=torch.float32, widths=(4, 8, 8))


def test_builtin_order_and_names():
    assert registry.backend_names() == ["fast", "points", "vit", "graph", "zennit"]
    assert registry.FALLBACK == "zennit"
    with pytest.raises(ValueError, match="backend must be one of auto, fast, points, vit, graph, zennit"):
        registry.check_backend_name("cuda")


def test_registration_positions(registered):
    registered("a", _Const())
    assert registry.backend_names() == ["fast", "points", "vit", "graph", "a", "zennit"]  # default: ahead of the fallback
    registered("b", _Const(), before="fast")
    assert registry.backend_names() == ["b", "fast", "points", "vit", "graph", "a", "zennit"]
    with pytest.raises(ValueError, match="already registered"):
        registry.register_backend("a", _Const())
    registry.register_backend("a", _Const(5.0), replace=True)  # keeps its place
    assert registry.backend_names() == ["b", "fast", "points", "vit", "graph", "a", "zennit"]
    with pytest.raises(ValueError, match="before="):
        registry.register_backend("c", _Const(), before="nope")
    with pytest.raises(ValueError, match="auto"):
        registry.register_backend("auto", _Const())
    with pytest.raises(TypeError, match="supports"):
        registry.register_backend("c", object())
    with pytest.raises(KeyError):
        registry.unregister_backend("c")


def test_auto_asks_in_order_and_named_backend_is_used(resnet, registered):
    registered("first", _Const(1.0, methods=("gradient",)), before="fast")
    assert Attributor(resnet, "gradient").backend == "first"
    assert bool((Attributor(resnet, "gradient")(X, Y) == 1).all())
    assert Attributor(resnet, "epsilon_flat").backend == "fast"  # "first" declines, with a reason
    with pytest.raises(ValueError, match=r"backend='first' does not support.*only \('gradient',\)"):
        Attributor(resnet, "epsilon_flat", backend="first")
    assert Attributor(resnet, "gradient", backend="zennit").backend == "zennit"


def test_default_method_hook(resnet, registered):
    assert Attributor(resnet, None).method == "epsilon_flat"
    assert Attributor(resnet, "auto").method == "epsilon_flat"
    net = models.build("pointnet", num_classes=4)
    assert registry.default_method(net) == "zplus_flat"  # the fast backend's answer
    assert reldrop.RelDrop(net, modality="points").method == "zplus_flat"
    registered("vitlike", _Const(default_for=type(resnet)), before="fast")
    assert Attributor(resnet, None).method == "gradient_x_input"
    assert reldrop.RelDrop(resnet).method == "gradient_x_input"
    assert reldrop.RelDrop(resnet, method="epsilon_flat").method == "epsilon_flat"  # explicit wins


def test_method_without_zennit_composite(resnet, registered):
    preset = presets.Preset("test_only_method", None, lrp=True, kwargs=("alpha",))
    presets.register_preset(preset)
    try:
        with pytest.raises(ValueError, match="already exists"):
            presets.register_preset(preset)
        with pytest.raises(ValueError, match="(?s)no attribution backend.*fast: computes only.*zennit: method 'test_only_method' has no zennit"):
            Attributor(resnet, "test_only_method")
        registered("special", _Const(2.0, methods=("test_only_method",)))
        a = Attributor(resnet, "test_only_method", alpha=0.5)
        assert a.backend == "special" and bool((a(X, Y) == 2).all())
        with pytest.raises(TypeError, match="beta"):
            Attributor(resnet, "test_only_method", beta=0.5)
    finally:
        del presets.PRESETS["test_only_method"]


def test_reldrop_validates_method_and_backend_up_front(resnet):
    with pytest.raises(ValueError, match="unknown method 'lrp'"):
        reldrop.RelDrop(resnet, method="lrp")
    with pytest.raises(ValueError, match="backend must be one of"):
        reldrop.RelDrop(resnet, backend="cuda")
    with pytest.raises(TypeError, match="gamma"):
        reldrop.RelDrop(resnet, method="epsilon_flat", gamma=0.25)
    aug = reldrop.RelDrop(resnet, backend="zennit")
    assert aug.method == "epsilon_flat" and aug.attributor.backend == "zennit"


def test_no_backend_fits_lists_every_reason(resnet, registered):
    class Refuses:
        def supports(self, model, method, **opts):
            return "never"

        def build(self, model, method, **opts):  # pragma: no cover - never asked
            raise AssertionError

    registered("refuses", Refuses(), before="fast")
    attributor = Attributor(nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4)), "epsilon_flat")
    assert attributor.backend == "graph"  # refuses and fast decline, the graph engine computes it
