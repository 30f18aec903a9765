"""torchvision vs timm ResNet-18 (3x3 stem) with identical weights; canonizer selection and behaviour;
the official-code composite (no Sum/avg-pool rule) inflating relevance."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import zennit.torchvision as zt
from torchvision.models.resnet import BasicBlock, Bottleneck
from zennit.composites import SpecialFirstLayerMapComposite
from zennit.layer import Sum
from zennit.rules import Epsilon, Flat, Pass
from zennit.types import Activation, Convolution

from helpers.lrp_reference import lrp_resnet
from helpers.resnet_zoo import resnet18_3x3, timm_resnet18_3x3, tiny_resnet, tv_to_timm_state_dict
from reldrop.attribution import Attributor, canonizers_for, register_canonizer
from reldrop.attribution import canonizers as C
from helpers.tolerance import assert_close_scaled

timm = pytest.importorskip("timm")

X = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
Y = torch.tensor([1, 7])


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture(scope="module")
def pair():
    tv = resnet18_3x3(seed=3, dtype=torch.float64)
    tm = timm_resnet18_3x3(dtype=torch.float64)
    mapped = tv_to_timm_state_dict(tv.state_dict())
    assert set(mapped) == set(tm.state_dict())  # the key mapping is complete both ways
    tm.load_state_dict(mapped)
    return tv, tm


@pytest.fixture(scope="module")
def r_tv(pair):
    return Attributor(pair[0], "epsilon_flat", backend="zennit")(X, Y)


def test_same_function(pair):
    tv, tm = pair
    assert_close_scaled(tm(X), tv(X), rel=1e-12)


def test_timm_and_torchvision_attributions_match(pair, r_tv):
    tv, tm = pair
    r_tm = Attributor(tm, "epsilon_flat", backend="zennit")(X, Y)
    assert _rel(r_tm, r_tv) <= 1e-10
    assert _rel(r_tv, lrp_resnet(tv, X, Y, epsilon=1e-3)) <= 1e-10


def test_timm_with_zennit_resnet_canonizer_leaves_sums_unhandled(pair, r_tv):
    """What the official code did: zennit's ResNetCanonizer matches only torchvision blocks, so timm's
    ``x += shortcut`` gets no Norm rule and relevance explodes (measured ~4e10x here). The coverage
    check sees the add in the traced forward and refuses, naming the block."""
    from reldrop.attribution.backends.zennit import ZennitAttribution

    tv, tm = pair
    with pytest.raises(ValueError, match=r"layer1\.0: functional add of two signals"):
        Attributor(tm, "epsilon_flat", backend="zennit", canonizers=[zt.ResNetCanonizer()])
    r_bad = ZennitAttribution(tm, "epsilon_flat", canonizers=[zt.ResNetCanonizer()])(X, Y)  # past the check
    assert _rel(r_bad, r_tv) > 1e3


def test_official_composite_without_sum_rule_inflates(pair, r_tv):
    """The official RelDrop composite has no Sum/AvgPool rules: on a canonized ResNet-18 the
    residual gradient hands the full relevance to both branches in every block."""
    tv = pair[0]
    x = X.clone().requires_grad_(True)
    official = SpecialFirstLayerMapComposite(
        layer_map=[(Activation, Pass()), (Convolution, Epsilon(1e-3)), (nn.Linear, Epsilon(1e-3))],
        first_map=[(Convolution, Flat())],
        canonizers=[C.TorchvisionResNetCanonizer()],
    )
    with official.context(tv):
        out = tv(x)
        seed = torch.zeros_like(out).scatter_(1, Y[:, None], out.detach().gather(1, Y[:, None]))
        (r_official,) = torch.autograd.grad(out, x, seed)
    ours = r_tv
    logit = tv(X).detach().gather(1, Y[:, None]).squeeze(1)
    ratio_official = (r_official.sum((1, 2, 3)) / logit).abs()
    ratio_ours = ours.sum((1, 2, 3)).abs()  # default seed one_hot: input relevance sums to ~1
    assert (ratio_official > 1e4).all(), ratio_official
    assert (ratio_ours < 10).all(), ratio_ours


@pytest.mark.parametrize("family", ["torchvision", "timm"])
def test_canonization_keeps_function_and_reverts_exactly(pair, family):
    """After apply: same logits (1e-12 of max|logit|, float64), every block's add goes through a Sum, every BN
    is the exact identity (eps = 0); after remove: bit-identical state."""
    model = pair[0] if family == "torchvision" else pair[1]
    expected = model(X)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    eps = [m.eps for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    canonizers = canonizers_for(model)
    assert type(canonizers[0]) is (C.TorchvisionResNetCanonizer if family == "torchvision" else C.TimmResNetCanonizer)
    handles = [h for c in canonizers for h in c.apply(model)]
    try:
        assert_close_scaled(model(X), expected, rel=1e-12)
        bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        assert all(bn.eps == 0 and bool((bn.running_var == 1).all()) and bool((bn.weight == 1).all()) for bn in bns)
        assert sum(isinstance(m, Sum) for m in model.modules()) == 8  # one per BasicBlock
    finally:
        for h in handles:
            h.remove()
    assert [m.eps for m in model.modules() if isinstance(m, nn.BatchNorm2d)] == eps
    assert not any(isinstance(m, Sum) for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_zennit_merge_changes_the_function_ours_does_not():
    """The 0.5.1 bug in isolation: zennit's merge alters the logits by ~eps/2 per BN."""
    model = tiny_resnet(BasicBlock, seed=12)
    x = X[:, :, :8, :8]
    expected = model(x)
    for canonizer, tol in ((zt.ResNetCanonizer(), None), (C.TorchvisionResNetCanonizer(), 1e-12)):
        handles = canonizer.apply(model)
        try:
            err = float((model(x).detach() - expected.detach()).abs().max() / expected.detach().abs().max())
        finally:
            for h in handles:
                h.remove()
        if tol is None:
            assert err > 1e-7
        else:
            assert err <= tol


def test_bottleneck_and_downsample_avg_timm():
    """timm Bottleneck with avg-pool downsample (resnet50d-style) and the 7x7/maxpool stem: the
    canonizer merges all BNs and matches the explicit LRP (Norm rule on the downsample AvgPool)."""
    from timm.models.resnet import ResNet, Bottleneck as TimmBottleneck

    from helpers.resnet_zoo import randomize_bn

    torch.manual_seed(0)
    m = ResNet(TimmBottleneck, [1, 1, 1, 1], num_classes=4, avg_down=True, stem_width=8, channels=(4, 8, 8, 8))
    m = randomize_bn(m, seed=13).double().eval()
    y = torch.tensor([0, 3])
    got = Attributor(m, "epsilon_flat", backend="zennit")(X, y)
    assert _rel(got, lrp_resnet(m, X, y, epsilon=1e-3)) <= 1e-10


def test_generic_sequential_merge_for_conv_bn_chains():
    """PointNet-style shared MLP (Conv1d+BN1d, Linear+BN1d, BN without affine): merged, same function, reverted."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv1d(3, 8, 1), nn.BatchNorm1d(8), nn.ReLU(),
        nn.Conv1d(8, 16, 1, bias=False), nn.BatchNorm1d(16, affine=False), nn.ReLU(),
        nn.AdaptiveMaxPool1d(1), nn.Flatten(), nn.Linear(16, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 4),
    ).double()
    from helpers.resnet_zoo import randomize_bn

    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d) and not m.affine:
            m.running_var.uniform_(0.5, 1.5)
    model.eval()
    randomize_bn(nn.Sequential(model[1], model[9]), seed=1)
    x = torch.randn(5, 3, 32, dtype=torch.float64)
    expected = model(x)
    canonizers = canonizers_for(model)
    assert isinstance(canonizers[0], C.SequentialMergeBatchNorm)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    handles = canonizers[0].apply(model)
    assert len(handles) == 3
    assert_close_scaled(model(x), expected, rel=1e-12)
    for h in handles:
        h.remove()
    assert model[3].bias is None
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    R = Attributor(model, "zplus_flat", backend="zennit")(x.float().double(), "predicted")
    assert R.shape == x.shape and torch.isfinite(R).all()


def test_register_canonizer_takes_precedence():
    model = tiny_resnet(BasicBlock, seed=14)
    marker = C.SequentialMergeBatchNorm()
    register_canonizer(lambda m: m is model, lambda m: [marker], name="test")
    try:
        assert canonizers_for(model) == [marker]
        assert type(canonizers_for(tiny_resnet(Bottleneck, seed=1))[0]) is C.TorchvisionResNetCanonizer
    finally:
        C._PROVIDERS[:] = [p for p in C._PROVIDERS if p[2] != "test"]
