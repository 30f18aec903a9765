"""The fast LRP backend equals the zennit backend / an explicit layer-by-layer LRP (issue 3)."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torchvision

from reldrop.attribution import Attributor, attribute
from reldrop.attribution.backends.fast import FastLRP, supports

from helpers.lrp_reference import lrp_resnet  # explicit float64 layer-by-layer LRP (tests/attribution)
from helpers.model_state import assert_unchanged, snapshot

timm = pytest.importorskip("timm")


def reference_lrp(net: nn.Module, x: torch.Tensor, t: torch.Tensor, **kw) -> torch.Tensor:
    return lrp_resnet(net, x, t, rule="epsilon", seed="one", **kw)


def calibrate(model: nn.Module, seed: int = 0, res: int = 32) -> nn.Module:
    """Random weights, BN running stats measured on random data (as in a trained net), eval mode."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
            m.reset_running_stats()
            with torch.no_grad():  # non-trivial affine part so the BN merge matters
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0, 0.1, generator=g)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(8, 3, res, res, generator=g))
    return model.eval()


def cifar_resnet18() -> nn.Module:
    m = torchvision.models.resnet18(num_classes=10)
    m.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    m.maxpool = nn.Identity()
    return m


BUILDERS = {
    "tv18": lambda: torchvision.models.resnet18(num_classes=10),
    "tv50": lambda: torchvision.models.resnet50(num_classes=10),
    "timm18": lambda: timm.create_model("resnet18", num_classes=10),
    "timm50": lambda: timm.create_model("resnet50", num_classes=10),
    "tv18_cifar": cifar_resnet18,
}
_CACHE: dict[str, nn.Module] = {}


def model(name: str) -> nn.Module:
    """A calibrated float32 model (built once per session; tests deep-copy before mutating)."""
    if name not in _CACHE:
        _CACHE[name] = calibrate(BUILDERS[name](), seed=list(BUILDERS).index(name))  # order-independent
    return _CACHE[name]


def inputs(n: int = 2, res: int = 32, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, res, res, generator=g), torch.randint(0, 10, (n,), generator=g)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample max |a - b| / max |b|."""
    a, b = a.double(), b.double()
    return (a - b).abs().flatten(1).amax(1) / b.abs().flatten(1).amax(1)


# ----------------------------------------------------------------------------------- supports
@pytest.mark.parametrize("name", ["tv18", "tv50", "timm18", "timm50", "tv18_cifar"])
def test_supports_resnets(name: str) -> None:
    assert supports(model(name), "epsilon_flat")
    assert Attributor(model(name), "epsilon_flat").backend == "fast"  # auto picks it


def test_supports_registry_cifar_resnets() -> None:
    from reldrop import models

    for name in ("resnet20_cifar", "resnet18_cifar"):
        if name in models.names():
            assert supports(models.build(name, num_classes=10), "epsilon_flat"), name


def test_supports_rejects_what_it_does_not_reproduce() -> None:
    net = model("tv18")
    for method in ("zplus_flat", "epsilon_gamma_box", "gradient", "gradient_x_input", "nope"):
        assert not supports(net, method)
    assert not supports("not a model", "epsilon_flat")  # type: ignore[arg-type]
    gelu = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GELU(), nn.Flatten(), nn.LazyLinear(2))
    assert not supports(gelu, "epsilon_flat")
    se = timm.create_model("seresnet18", num_classes=10)  # squeeze-excitation: not handled
    assert not supports(se, "epsilon_flat")
    # a residual add outside a known ResNet block: zennit would not apply the Norm rule there
    class FreeAdd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 3, 3, padding=1)
            self.conv2 = nn.Conv2d(3, 3, 3, padding=1)
            self.fc = nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.conv1(x))
            h = self.conv2(h) + h
            return self.fc(h.mean((2, 3)))

    assert not supports(FreeAdd(), "epsilon_flat")
    with pytest.raises(ValueError, match="zennit"):
        FastLRP(FreeAdd())


# -------------------------------------------------------------------------------- equality
@pytest.mark.parametrize("name", ["tv18", "tv50", "timm18", "timm50", "tv18_cifar"])
def test_float64_equals_explicit_reference_and_zennit(name: str) -> None:
    net = copy.deepcopy(model(name)).double()
    x, t = inputs(res=16 if name == "tv18_cifar" else 32)
    x = x.double()
    r_fast = FastLRP(net)(x, t)
    r_ref = reference_lrp(net, x, t)
    assert r_fast.dtype == torch.float64 and r_fast.shape == x.shape
    assert rel_err(r_fast, r_ref).max() < 1e-10
    r_zen = attribute(net, x, t, backend="zennit")
    assert rel_err(r_fast, r_zen).max() < 1e-10
    # sanity: the maps are not trivially equal (non-zero, sample-dependent)
    assert r_ref.abs().amax() > 0 and not torch.allclose(r_ref[0], r_ref[1])


@pytest.mark.parametrize("name", ["tv18", "tv50", "timm18", "timm50"])
def test_float32_same_kernels_equal_zennit(name: str) -> None:
    """Same convolution kernels as zennit (NCHW): identical maths -> agreement far below 1e-4."""
    net = model(name)
    x, t = inputs()
    lrp = FastLRP(net)
    lrp.channels_last = False
    r_fast = lrp(x, t)
    r_zen = attribute(net, x, t, backend="zennit")
    assert rel_err(r_fast, r_zen).max() <= 1e-4


@pytest.mark.parametrize("name", ["tv18", "timm50"])
def test_float32_default_is_as_accurate_as_zennit(name: str) -> None:
    """The default (NHWC kernels on CPU) rounds differently; LRP-ε in float32 is only determined
    to ~1e-5..1e-2 of max|R| on deep random nets (which kernel rounds better varies per sample),
    so compare both backends against float64 truth: same order of error, within the 1e-4 bar."""
    net = model(name)
    x, t = inputs()
    truth = reference_lrp(copy.deepcopy(net).double(), x.double(), t)
    err_fast = rel_err(FastLRP(net)(x, t), truth)
    err_zen = rel_err(attribute(net, x, t, backend="zennit"), truth)
    assert err_fast.max() <= 3 * err_zen.max() + 1e-4, (err_fast, err_zen)


def test_epsilon_and_stabilizer_are_used() -> None:
    net = copy.deepcopy(model("tv18_cifar")).double()
    x, t = inputs(res=16)
    x = x.double()
    for kw in ({"epsilon": 0.1}, {"epsilon": 1e-6, "stabilizer": 1e-3}):
        r_fast = FastLRP(net, **kw)(x, t)
        assert rel_err(r_fast, attribute(net, x, t, backend="zennit", **kw)).max() < 1e-10
        assert rel_err(r_fast, reference_lrp(net, x, t, **kw)).max() < 1e-10
    assert rel_err(FastLRP(net, epsilon=0.1)(x, t), FastLRP(net)(x, t)).max() > 1e-3


def test_batch_independent_and_predicted_target() -> None:
    net = copy.deepcopy(model("tv18_cifar")).double()
    x, t = inputs(3, res=16)
    x = x.double()
    lrp = FastLRP(net)
    r = lrp(x, t)
    for i in range(3):
        assert rel_err(lrp(x[i:i + 1], t[i:i + 1]), r[i:i + 1]).item() < 1e-12
    pred = net(x).argmax(1)
    assert torch.equal(lrp(x, "predicted"), lrp(x, pred))


def test_output_contract() -> None:
    net = model("tv18_cifar")
    x, t = inputs()
    x_cl = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    r = FastLRP(net)(x_cl, t)
    assert r.shape == x.shape and r.dtype == x.dtype and not r.requires_grad
    assert torch.equal(r, FastLRP(net)(x, t))  # input layout does not matter
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast is switched off inside
        r_ac = FastLRP(net)(x, t)
    assert r_ac.dtype == torch.float32 and torch.equal(r_ac, r)


# ------------------------------------------------------------------------------- model state
def test_model_untouched_in_train_mode_and_on_error() -> None:
    net = copy.deepcopy(model("tv18_cifar"))
    net.train()
    net.layer1.requires_grad_(False)
    net.fc.weight.grad = torch.ones_like(net.fc.weight)
    x, t = inputs()
    before = snapshot(net)
    lrp = FastLRP(net)
    r_train = lrp(x, t)
    assert_unchanged(before, net)
    net.eval()
    r_eval = lrp(x, t)  # train mode attributes with running stats, like eval mode
    net.train()
    assert torch.equal(r_train, r_eval)
    with pytest.raises(ValueError):
        lrp(x, torch.tensor([0, 10]))  # out of range
    with pytest.raises(RuntimeError):  # an input the convs cannot take fails mid-way
        lrp(torch.randn(2, 4, 32, 32), t)
    assert_unchanged(before, net)
    # the snapshot can detect a change (the test is not vacuous)
    net.bn1.running_mean.add_(1.0)
    with pytest.raises(AssertionError, match="buffer"):
        assert_unchanged(before, net)


# ---------------------------------------------------------------------------------- bad input
def test_bad_input() -> None:
    net = model("tv18_cifar")
    lrp = FastLRP(net)
    x, t = inputs()
    with pytest.raises(TypeError, match="x"):
        lrp(x.long(), t)
    with pytest.raises(TypeError, match="x"):
        lrp(x.numpy(), t)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="x"):
        lrp(x[0], t)
    with pytest.raises(ValueError, match="x"):
        lrp(x[:0], t[:0])
    with pytest.raises(TypeError, match="target"):
        lrp(x, t.float())
    with pytest.raises(ValueError, match="target"):
        lrp(x, t[:1])
    with pytest.raises(ValueError, match="target"):
        lrp(x, "label")
    with pytest.raises(ValueError, match="method"):
        FastLRP(net, "zplus_flat")
    with pytest.raises(ValueError, match="epsilon"):
        FastLRP(net, epsilon=-1.0)
    with pytest.raises(TypeError, match="model"):
        FastLRP("net")  # type: ignore[arg-type]


def test_wrapped_model_is_unwrapped() -> None:
    net = model("tv18_cifar")
    x, t = inputs()
    assert torch.equal(FastLRP(nn.DataParallel(net))(x, t), FastLRP(net)(x, t))


def test_stabilized_factors_bitwise_equal_zennit_stabilize() -> None:
    """The per-layer factors z/stab(z) use zennit's sign convention (sign(0) = +1) exactly."""
    from zennit.core import stabilize

    from reldrop.attribution.backends.fast.ops import relu_stab_div
    from reldrop.attribution.rules import stab_div

    g = torch.Generator().manual_seed(0)
    z = torch.randn(4096, generator=g) * torch.logspace(-5, 1, 4096)
    z[:8] = torch.tensor([0.0, -0.0, 1e-3, -1e-3, 5e-4, -5e-4, 1e-30, -1e-30])
    for eps in (1e-3, 1e-6):
        expected = z / stabilize(z, eps)
        assert torch.equal(stab_div(z, eps), expected)
        assert torch.equal(relu_stab_div(torch.relu(z), eps), torch.relu(z) / stabilize(z, eps))
    assert not torch.equal(stab_div(z, 1e-3), stab_div(z, 1e-6))


def test_logit_seed_matches_zennit_and_scales_the_one_hot_map() -> None:
    """seed="logit" on both backends: equal maps, and = logit_t x the default one_hot map."""
    net = copy.deepcopy(model("tv18_cifar")).double()
    x, t = inputs(res=16)
    x = x.double()
    r_fast = FastLRP(net, seed="logit")(x, t)
    r_zen = attribute(net, x, t, backend="zennit", seed="logit")
    assert rel_err(r_fast, r_zen).max() < 1e-10
    logit = net.eval()(x).detach().gather(1, t[:, None]).reshape(-1, 1, 1, 1)
    assert rel_err(r_fast, FastLRP(net)(x, t) * logit).max() < 1e-10
    with pytest.raises(ValueError, match="seed"):
        FastLRP(net, seed="ones")
