"""LRP of the modern-CNN families (timm EfficientNet-Lite, torchvision MobileNetV2, VGG-BN) against the
explicit float64 layer-by-layer reference (lrp_reference.lrp_family), and conservation."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from helpers.family_zoo import FAMILIES, family_input
from helpers.lrp_reference import family_forward, lrp_family
from helpers.model_state import assert_unchanged, snapshot
from helpers.resnet_zoo import bias_free
from reldrop.attribution import Attributor, canonizers_for
from helpers.tolerance import assert_close_scaled

pytest.importorskip("timm")
TOL = 1e-10  # relative to max|R|, float64


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def case(request):
    build, _ = FAMILIES[request.param]
    return request.param, build(seed=1), family_input(request.param), torch.tensor([0, 2, 4])


def test_tiny_models_have_what_the_rules_are_about(case):
    name, model, _, _ = case
    kinds = {type(m).__name__ for m in model.modules()}
    if name == "effnet":
        assert {"Conv2dSame", "BatchNormAct2d", "InvertedResidual", "DepthwiseSeparableConv", "ReLU6"} <= kinds
        assert sum(getattr(m, "has_skip", False) for m in model.modules()) >= 2
        assert any(isinstance(m, nn.Conv2d) and m.groups > 1 for m in model.modules())
    elif name == "mobilenet":
        assert sum(getattr(m, "use_res_connect", False) for m in model.modules()) >= 2
    else:
        assert "MaxPool2d" in kinds and "BatchNorm2d" in kinds


def test_reference_forward_is_the_model(case):
    _, model, x, _ = case
    assert_close_scaled(family_forward(model, x), model(x).detach(), 1e-12)


def test_canonized_forward_is_the_model(case):
    """BN merged (BatchNormAct2d still applies its ReLU6), residual Sums, module pool: same logits."""
    _, model, x, _ = case
    before = snapshot(model)
    want = model(x).detach()
    instances = [inst for c in canonizers_for(model) for inst in c.apply(model)]
    try:
        got = model(x).detach()
    finally:
        for inst in reversed(instances):
            inst.remove()
    assert_close_scaled(got, want, 1e-12)
    assert_unchanged(before, model)


@pytest.mark.parametrize("epsilon", [1e-3, 0.25])
def test_epsilon_flat_matches_explicit_lrp(case, epsilon):
    _, model, x, y = case
    before = snapshot(model)
    ref = lrp_family(model, x, y, rule="epsilon", epsilon=epsilon)
    got = Attributor(model, "epsilon_flat", backend="zennit", epsilon=epsilon)(x, y)
    assert got.dtype == torch.float64 and got.shape == x.shape
    assert _rel(got, ref) <= TOL
    assert_unchanged(before, model)


def test_zplus_flat_matches_explicit_lrp(case):
    _, model, x, y = case
    ref = lrp_family(model, x, y, rule="zplus")
    got = Attributor(model, "zplus_flat", backend="zennit")(x, y)
    assert _rel(got, ref) <= TOL


def test_reference_is_not_gradient_x_input(case):
    _, model, x, y = case
    ref = lrp_family(model, x, y, rule="epsilon", epsilon=1e-3)
    assert _rel(Attributor(model, "gradient_x_input")(x, y), ref) > 1e-2


def test_conservation_without_biases(case):
    """Σ input relevance = target logit (seed 'logit') once biases and BN shifts are zero; what is
    left is ε absorption, which shrinks in proportion to ε (checked at 1e-12 and 1e-15)."""
    name, _, x, y = case
    model = bias_free(FAMILIES[name][0](seed=1))
    logit = model(x).detach().gather(1, y[:, None]).squeeze(1)
    gaps = []
    for eps in (1e-12, 1e-15):
        R = Attributor(model, "epsilon_flat", backend="zennit", seed="logit", epsilon=eps, stabilizer=eps)(x, y)
        gaps.append(((R.sum(dim=(1, 2, 3)) - logit) / logit).abs().max().item())
    assert gaps[1] < 1e-6, gaps
    assert gaps[1] <= gaps[0] * 1e-2 + 1e-12, gaps  # the rest is ε absorption


# ----------------------------------------------------------------------------------- fast backend
@pytest.mark.parametrize("seed", ["one_hot", "logit"])
def test_fast_backend_equals_zennit_and_reference(case, seed):
    """One hand-written backward pass (depthwise convs, Conv2dSame padding, ReLU6 inside
    BatchNormAct2d and standalone, inverted-residual adds, VGG's 7x7 adaptive pool) = zennit."""
    _, model, x, y = case
    before = snapshot(model)
    fast = Attributor(model, "epsilon_flat", seed=seed)
    assert fast.backend == "fast"  # auto picks it for every family
    got = fast(x, y)
    zen = Attributor(model, "epsilon_flat", backend="zennit", seed=seed)(x, y)
    assert _rel(got, zen) <= 1e-12
    if seed == "one_hot":
        assert _rel(got, lrp_family(model, x, y, rule="epsilon", epsilon=1e-3)) <= 1e-12
    assert_unchanged(before, model)


def test_fast_backend_supports_the_real_efficientnet_lite0():
    from reldrop.attribution.backends.fast import supports
    from reldrop.models import build

    model = build("efficientnet_lite0", num_classes=10).eval()
    assert supports(model, "epsilon_flat")
    model.blocks[1][0].bn1.act = nn.GELU()  # an activation the plan has no factor for
    assert not supports(model, "epsilon_flat")
