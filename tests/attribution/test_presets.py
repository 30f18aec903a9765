"""Every preset on a small model; argument checks; first-layer choice; autocast/channels_last; backends."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from torchvision.models.resnet import BasicBlock
from zennit.composites import SpecialFirstLayerMapComposite
from zennit.rules import Epsilon, Flat, Pass
from zennit.types import Activation
from zennit.types import Linear as LinearOrConv

from helpers.resnet_zoo import tiny_resnet
from reldrop import models
from reldrop.attribution import Attributor, attribute, method_names, registry
from reldrop.attribution.canonizers.points import input_layers

X = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
Y = torch.tensor([0, 4, 2])
KW = {"epsilon_gamma_box": {"low": -3.0, "high": 3.0}}


@pytest.fixture(scope="module")
def model():
    return tiny_resnet(BasicBlock, seed=21, dtype=torch.float32, widths=(4, 8, 8))


def test_method_names():
    assert method_names() == ["epsilon_flat", "zplus_flat", "epsilon_gamma_box", "gradient", "gradient_x_input",
                              "cp_lrp", "attnlrp"]


@pytest.mark.parametrize("method", ["epsilon_flat", "zplus_flat", "epsilon_gamma_box", "gradient", "gradient_x_input"])
def test_every_preset_runs(model, method):
    R = attribute(model, X, Y, method, backend="zennit", **KW.get(method, {}))
    assert R.shape == X.shape and R.dtype == X.dtype and not R.requires_grad
    assert torch.isfinite(R).all() and R.abs().sum() > 0


def test_presets_differ_and_gradient_x_input_is_x_times_gradient(model):
    g = attribute(model, X, Y, "gradient", backend="zennit")
    gxi = attribute(model, X, Y, "gradient_x_input", backend="zennit")
    torch.testing.assert_close(gxi, X * g)
    eps = attribute(model, X, Y, "epsilon_flat", backend="zennit")
    zp = attribute(model, X, Y, "zplus_flat", backend="zennit")
    assert not torch.allclose(eps, zp) and not torch.allclose(eps, gxi)


def test_gradient_is_autograd_gradient(model):
    x = X.clone().requires_grad_(True)
    model(x).gather(1, Y[:, None]).sum().backward()
    torch.testing.assert_close(attribute(model, X, Y, "gradient", backend="zennit"), x.grad)


def test_predicted_target(model):
    pred = model(X).argmax(1)
    torch.testing.assert_close(attribute(model, X, "predicted", backend="zennit"),
                               attribute(model, X, pred, backend="zennit"), rtol=0, atol=0)


def test_epsilon_gamma_box_from_normalization_constants(model):
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    low = torch.tensor([(0 - m) / s for m, s in zip(mean, std)]).reshape(1, 3, 1, 1)
    high = torch.tensor([(1 - m) / s for m, s in zip(mean, std)]).reshape(1, 3, 1, 1)
    a = attribute(model, X, Y, "epsilon_gamma_box", backend="zennit", mean=mean, std=std)
    b = attribute(model, X, Y, "epsilon_gamma_box", backend="zennit", low=low, high=high)
    torch.testing.assert_close(a, b)


def test_float64_and_half_inputs(model):
    R16 = attribute(model, X.half(), Y, backend="zennit")
    assert R16.dtype == torch.float16 and R16.shape == X.shape
    m64 = tiny_resnet(BasicBlock, seed=21, dtype=torch.float64, widths=(4, 8, 8))
    R64 = attribute(m64, X.double(), Y, backend="zennit")
    assert R64.dtype == torch.float64
    torch.testing.assert_close(attribute(model, X, Y, backend="zennit").double(), R64, rtol=1e-3, atol=1e-6)


def test_autocast_is_disabled_inside(model):
    ref = attribute(model, X, Y, backend="zennit")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = attribute(model, X, Y, backend="zennit")
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=0, atol=0)


def test_channels_last(model):
    ref = attribute(model, X, Y, backend="zennit")
    m_cl = tiny_resnet(BasicBlock, seed=21, dtype=torch.float32, widths=(4, 8, 8)).to(memory_format=torch.channels_last)
    got = attribute(m_cl, X.to(memory_format=torch.channels_last), Y, backend="zennit")
    assert got.shape == X.shape
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-6 * float(ref.abs().max()))


def test_no_grad_context_and_input_untouched(model):
    x = X.clone().requires_grad_(True)
    with torch.no_grad():
        R = attribute(model, x, Y, backend="zennit")
    assert x.grad is None and torch.equal(x.detach(), X) and R.abs().sum() > 0
    with torch.inference_mode():
        x_inf = X.clone()
        R_inf = attribute(model, x_inf, Y, backend="zennit")
    torch.testing.assert_close(R_inf, R, rtol=0, atol=0)


class _HeadFirst(nn.Module):
    """Registers the dense head before the conv body: registration order != forward order."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(4 * 2 * 2, 3)
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1), nn.ReLU(), nn.Conv2d(4, 4, 3, 2, 1), nn.ReLU())

    def forward(self, x):
        return self.head(self.body(x).flatten(1))


def test_first_layer_is_first_in_forward_order():
    torch.manual_seed(0)
    m = _HeadFirst().eval()
    a = Attributor(m, "epsilon_flat", backend="zennit")
    R = a(X, torch.tensor([0, 1, 2]))
    assert a.first_layer is m.body[0]
    # zennit's registration-order composite puts Flat on the head instead -> different relevance
    composite = SpecialFirstLayerMapComposite(
        layer_map=[(Activation, Pass()), (LinearOrConv, Epsilon(1e-3))], first_map=[(LinearOrConv, Flat())])
    x = X.clone().requires_grad_(True)
    with composite.context(m):
        out = m(x)
        seed = torch.zeros_like(out).scatter_(1, torch.tensor([[0], [1], [2]]), out.detach().gather(1, torch.tensor([[0], [1], [2]])))
        (r_reg,) = torch.autograd.grad(out, x, seed)
    assert not torch.allclose(R, r_reg)


@pytest.mark.parametrize(
    "x, target, exc, match",
    [
        (X.long(), Y, TypeError, "x must be a floating-point"),
        ([1.0], Y, TypeError, "x must be a torch.Tensor"),
        (X[0, 0, 0], Y, ValueError, "at least 2 dims"),
        (X[:0], Y[:0], ValueError, "empty batch"),
        (X, Y.float(), TypeError, "target must be an integer"),
        (X, Y.bool(), TypeError, "target must be an integer"),
        (X, Y[:2], ValueError, r"target must have shape \(B,\)"),
        (X, [0, 1, 2], TypeError, "target must be a LongTensor"),
        (X, "true", ValueError, "'predicted'"),
        (X, torch.tensor([0, 5, 1]), ValueError, r"outside \[0, 5\)"),
        (X, torch.tensor([0, -1, 1]), ValueError, "outside"),
    ],
)
def test_bad_inputs(model, x, target, exc, match):
    with pytest.raises(exc, match=match):
        attribute(model, x, target, backend="zennit")


def test_bad_options(model):
    with pytest.raises(ValueError, match="unknown method 'lrp'"):
        Attributor(model, "lrp")
    with pytest.raises(TypeError, match="gamma"):
        Attributor(model, "epsilon_flat", gamma=0.25)
    with pytest.raises(ValueError, match="backend must be one of"):
        Attributor(model, backend="cuda")
    with pytest.raises(ValueError, match="low=... and high="):
        Attributor(model, "epsilon_gamma_box", backend="zennit")
    with pytest.raises(ValueError, match="epsilon must be"):
        Attributor(model, "epsilon_flat", backend="zennit", epsilon=-1.0)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        Attributor(lambda x: x)
    with pytest.raises(ValueError, match="logits of shape"):
        attribute(nn.Conv2d(3, 2, 1), X, Y, "gradient")
    with pytest.raises(TypeError, match="float32 or float64"):
        attribute(tiny_resnet(BasicBlock, seed=1, dtype=torch.float16), X, Y, backend="zennit")


def test_tuple_output_uses_first_element():
    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5))

        def forward(self, x):
            logits = self.net(x)
            return logits, logits.detach() * 0

    m = Pair().eval()
    torch.testing.assert_close(attribute(m, X, Y, "gradient"), attribute(m.net, X, Y, "gradient"))


# ------------------------------------------------------------------------------------- backends
class _FakeFast:
    calls: list = []

    def __init__(self, model, method, **kw):
        self.model, self.method, self.kw = model, method, kw

    def __call__(self, x, target):
        _FakeFast.calls.append((x, target))
        return torch.full_like(x, 7.0)


class _FakeBackend:
    """A registry backend whose answer to supports() the test chooses."""

    def __init__(self, supports):
        self._supports = supports

    def supports(self, model, method, **opts):
        return self._supports(model, method)

    def build(self, model, method, **opts):
        return _FakeFast(model, method, **opts)


@pytest.fixture
def fake_first():
    """Register a fake backend ahead of every other one; yield a setter for its supports()."""
    state = {"fn": lambda m, meth: True}
    registry.register_backend("fake", _FakeBackend(lambda m, meth: state["fn"](m, meth)),
                              before=registry.backend_names()[0])
    try:
        yield state
    finally:
        registry.unregister_backend("fake")


def test_auto_uses_the_first_backend_that_supports(model, fake_first):
    _FakeFast.calls.clear()
    a = Attributor(model, "epsilon_flat", epsilon=1e-2)
    assert a.backend == "fake" and a.impl.kw == {"epsilon": 1e-2, "seed": "one_hot"} and a.impl.model is model
    R = a(X.half(), Y.int())
    assert R.dtype == torch.float16 and bool((R == 7).all())
    x_seen, t_seen = _FakeFast.calls[-1]
    assert x_seen.dtype == torch.float32 and t_seen.dtype == torch.long and torch.equal(t_seen, Y)
    a(X, "predicted")
    assert _FakeFast.calls[-1][1] == "predicted"
    assert Attributor(model, "epsilon_flat", backend="zennit").backend == "zennit"


def test_auto_falls_back_to_zennit(model, fake_first):
    fake_first["fn"] = lambda m, meth: "no reason"
    assert Attributor(model).backend in ("fast", "zennit")
    assert Attributor(model, "gradient").backend == "zennit"
    with pytest.raises(ValueError, match="does not support.*no reason"):
        Attributor(model, backend="fake")

    def broken(m, meth):
        raise RuntimeError("bug in fake")

    fake_first["fn"] = broken
    with pytest.warns(RuntimeWarning, match="fake.*zennit"):
        assert Attributor(model, "gradient").backend == "zennit"
    with pytest.raises(RuntimeError, match="bug in fake"):  # asked by name: the error is not hidden
        Attributor(model, backend="fake")


class _TwoBranch(nn.Module):
    """The input feeds two convs in parallel (like PointNet++ MSG radii)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 2, 3, padding=1)
        self.b = nn.Conv2d(3, 2, 5, padding=2)
        self.pool = nn.AdaptiveAvgPool2d(1)  # a module: the Norm rule (a functional mean is refused)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        h = torch.cat([torch.relu(self.a(x)), torch.relu(self.b(x))], 1)
        return self.head(self.pool(h).flatten(1))


def _flat_modules(attributor, model):
    from zennit.rules import Flat as FlatRule

    attributor.composite.register(model)
    try:
        return [m for m in model.modules()
                if any(isinstance(getattr(h, "__self__", None), FlatRule) for h in m._forward_hooks.values())]
    finally:
        attributor.composite.remove()


def test_several_input_layers_all_get_flat():
    torch.manual_seed(0)
    m = _TwoBranch().eval()
    y = torch.tensor([0, 1, 2])
    default = Attributor(m, "epsilon_flat", backend="zennit")
    r1 = default(X, y)
    assert default.first_layers == [m.a] and _flat_modules(default, m) == [m.a]
    both = Attributor(m, "epsilon_flat", backend="zennit", first_layers=[m.a, m.b])
    assert _flat_modules(both, m) == [m.a, m.b]
    assert not torch.allclose(both(X, y), r1)


def test_pointnet2_msg_declares_every_radius_as_input_layer():
    m = models.build("pointnet2_msg", num_classes=4).eval()
    a = Attributor(m, "zplus_flat", backend="zennit")
    declared = input_layers(m)
    assert len(declared) > 1 and a.first_layers == declared
    assert _flat_modules(a, m) == declared
