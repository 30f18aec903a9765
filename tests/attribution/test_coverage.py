"""No silent garbage: LRP presets refuse layers they have no rule for, naming them; gradients work."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.resnet import BasicBlock

import reldrop
from helpers.model_state import assert_unchanged, snapshot
from reldrop.attribution import Attributor, attribute
from reldrop.attribution.coverage import lrp_coverage_problems
from helpers.resnet_zoo import randomize_bn, tiny_resnet

X = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
Y = torch.tensor([0, 1])


def _gn_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1),
                         nn.GroupNorm(2, 4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 3)).eval()


def test_groupnorm_cnn_lrp_raises_naming_it_gradient_works():
    model = _gn_cnn()
    before = snapshot(model)
    for method in ("epsilon_flat", "zplus_flat"):
        assert Attributor(model, method).backend == "graph"  # GroupNorm: 1/σ held (the graph engine)
        with pytest.raises(ValueError, match=r"3: GroupNorm.*gradient_x_input"):
            Attributor(model, method, backend="zennit")
    R = attribute(model, X, Y, "gradient_x_input")
    assert R.shape == X.shape and torch.isfinite(R).all() and R.abs().sum() > 0
    assert attribute(model, X, Y, "gradient").abs().sum() > 0
    assert_unchanged(before, model)


def test_reldrop_on_groupnorm_model_raises_with_lrp_and_runs_with_gradients():
    model = _gn_cnn()
    with pytest.raises(ValueError, match="GroupNorm"):
        reldrop.RelDrop(model, p=1.0, backend="zennit")(X, Y)
    assert reldrop.RelDrop(model, p=1.0)(X, Y).shape == X.shape  # the graph engine covers GroupNorm
    out = reldrop.RelDrop(model, p=1.0, method="gradient_x_input")(X, Y)
    assert out.shape == X.shape


class _Mixer(nn.Module):
    """LayerNorm + attention + a functional softmax: three kinds of layers without an LRP rule."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(3, 8)
        self.norm = nn.LayerNorm(8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.norm(self.embed(x.flatten(2).transpose(1, 2)))
        t = self.attn(t, t, t, need_weights=False)[0]
        w = F.softmax(t.mean(-1), dim=1)
        return self.head((t * w[..., None]).sum(1))


def test_norms_attention_and_functional_softmax_are_named():
    problems = lrp_coverage_problems(_Mixer().eval())
    text = "; ".join(problems)
    assert "norm: LayerNorm" in text and "attn: MultiheadAttention" in text
    assert "softmax (functional call in forward)" in text
    with pytest.raises(ValueError, match="MultiheadAttention"):
        Attributor(_Mixer().eval(), "epsilon_flat", backend="zennit")
    assert Attributor(_Mixer().eval(), "epsilon_flat").backend == "graph"  # softmax used as a gate: held
    assert Attributor(_Mixer().eval(), "gradient_x_input").backend == "zennit"


def test_timm_vit_is_refused_for_lrp():
    vit_mod = pytest.importorskip("timm.models.vision_transformer")
    vit = vit_mod.VisionTransformer(img_size=8, patch_size=4, embed_dim=8, depth=1, num_heads=2,
                                    num_classes=3).eval()
    problems = "; ".join(lrp_coverage_problems(vit))
    assert "blocks.0.norm1: LayerNorm" in problems and "blocks.0.attn: Attention" in problems
    with pytest.raises(ValueError, match="LayerNorm"):
        Attributor(vit, "epsilon_flat", backend="zennit")
    assert torch.isfinite(attribute(vit, X, Y, "gradient_x_input")).all()


def test_unmerged_batchnorm_and_unknown_parametrized_layers():
    class Scale(nn.Module):  # a layer with parameters and no rule
        def __init__(self) -> None:
            super().__init__()
            self.gamma = nn.Parameter(torch.ones(4, 1, 1))

        def forward(self, x):
            return x * self.gamma

    pre_act = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 3), Scale(),
                            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    randomize_bn(pre_act)  # a fresh BN is the identity (up to eps): give it statistics
    problems = lrp_coverage_problems(pre_act)
    assert any(p.startswith("2: BatchNorm2d not merged") for p in problems), problems
    assert any(p.startswith("4: Scale (parameters") for p in problems), problems
    no_stats = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False), nn.Flatten(),
                             nn.LazyLinear(3))
    assert any("without running statistics" in p for p in lrp_coverage_problems(no_stats))


def test_supported_models_have_no_problems():
    model = tiny_resnet(BasicBlock, seed=1, dtype=torch.float32)
    before = snapshot(model)
    assert lrp_coverage_problems(model) == []
    assert_unchanged(before, model)
    prelu = nn.Sequential(nn.Conv2d(3, 4, 3), nn.PReLU(), nn.Flatten(), nn.Linear(4 * 36, 3))
    assert lrp_coverage_problems(prelu) == []


@pytest.mark.parametrize("backend", ["zennit", "fast"])
def test_non_finite_input_raises_on_every_backend(backend):
    model = tiny_resnet(BasicBlock, seed=1, dtype=torch.float32)
    for bad in (float("nan"), float("inf")):
        x = X.clone()
        x[0, 0, 0, 0] = bad
        with pytest.raises(ValueError, match="NaN or infinite"):
            Attributor(model, "epsilon_flat", backend=backend)(x, Y)
    from reldrop.attribution.backends.fast import FastLRP

    with pytest.raises(ValueError, match="NaN or infinite"):
        FastLRP(model)(torch.full_like(X, float("nan")), Y)
