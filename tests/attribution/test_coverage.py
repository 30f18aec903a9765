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


# ------------------------------------------------ issue 19 item 2: the fx graph, structure not values
class _AddNet(nn.Module):
    """A residual written as ``x + y`` in forward (no module): zennit would pass the plain gradient."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.block = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x).relu()
        x = torch.cat([x[:, :2], x[:, 2:]], dim=1)  # relevance follows the data: no problem
        return self.head(self.block(x) + x)


class _GateNet(_AddNet):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.head(self.block(x) * torch.sigmoid(x) * 0.5)


def test_functional_residual_add_is_refused_naming_node_op_and_path():
    model = _AddNet().eval()
    before = snapshot(model)
    problems = lrp_coverage_problems(model)
    assert problems == ["<model>: functional add of two signals (e.g. a residual 'x + y'; no Norm rule) [node add]"]
    with pytest.raises(ValueError, match=r"<model>: functional add of two signals .*\[node add\]"):
        Attributor(model, "epsilon_flat", backend="zennit")
    with pytest.raises(ValueError, match="functional add"):
        reldrop.RelDrop(model, p=1.0, backend="zennit")(X, Y)
    assert Attributor(model, "epsilon_flat").backend == "graph"  # auto: the graph engine has the Norm rule
    assert torch.isfinite(attribute(model, X, Y, "gradient_x_input")).all()
    assert_unchanged(before, model)


def test_functional_products_and_unknown_calls_are_refused():
    text = "; ".join(lrp_coverage_problems(_GateNet().eval()))
    assert "functional mul of two signals" in text
    assert "sigmoid (functional call in forward)" in text
    assert "functional mul by a constant/parameter" in text


def test_batchnorm_after_activation_is_refused_at_init_not_only_after_training():
    """ConvMixer's conv -> GELU -> BN: a fresh BN has identity statistics, which the old check took for
    'merged'; coverage must not change when the model trains."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.GELU(), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 3))
    fresh = lrp_coverage_problems(model)
    randomize_bn(model)
    assert fresh == lrp_coverage_problems(model) == ["2: BatchNorm2d not merged into a conv/linear layer before it"]
    with pytest.raises(ValueError, match="2: BatchNorm2d not merged"):
        reldrop.RelDrop(model, p=1.0, backend="zennit")(X, Y)  # refused at step 0, not a NaN error later


def test_densenet_batchnorm_before_conv_is_refused_not_crashing():
    """torchvision DenseNet's BN comes before its conv: the merger paired a conv with the next
    *registered* BN (another layer's norm1) and crashed on the channel count."""
    from torchvision.models import DenseNet

    torch.manual_seed(0)
    model = DenseNet(growth_rate=4, block_config=(1, 1), num_init_features=8, bn_size=2, num_classes=3).eval()
    randomize_bn(model)
    before = snapshot(model)
    problems = lrp_coverage_problems(model)
    assert "features.denseblock1.denselayer1.norm1: BatchNorm2d not merged into a conv/linear layer before it" in problems
    assert not any(p.startswith("features.denseblock1.denselayer1.norm2") for p in problems)  # conv1 -> norm2 merges
    with pytest.raises(ValueError, match="denselayer1.norm1: BatchNorm2d not merged"):
        Attributor(model, "epsilon_flat", backend="zennit")
    assert Attributor(model, "epsilon_flat").backend == "graph"  # auto: the graph engine takes BN before conv
    assert torch.isfinite(attribute(model, X, Y, "gradient_x_input")).all()
    assert_unchanged(before, model)


def test_untraceable_model_falls_back_to_module_checks_with_a_note():
    from reldrop.attribution.coverage import lrp_coverage

    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.norm = nn.LayerNorm(6)
            self.head = nn.Linear(4 * 36, 3)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: fx cannot trace it
                x = -x
            return self.head(self.norm(self.conv(x)).flatten(1))

    problems, note = lrp_coverage(Branchy())
    assert problems == ["norm: LayerNorm"]
    assert note is not None and "torch.fx cannot trace Branchy" in note


def test_advice_names_only_methods_that_work():
    vit_mod = pytest.importorskip("timm.models.vision_transformer")
    torch.manual_seed(0)
    vit = vit_mod.VisionTransformer(img_size=8, patch_size=4, embed_dim=8, depth=1, num_heads=2,
                                    num_classes=3).eval()
    with pytest.raises(ValueError, match=r"method='cp_lrp' \(backend 'vit'\)") as err:
        Attributor(vit, "epsilon_flat", backend="zennit")
    Attributor(vit, "cp_lrp")  # the advice works
    mixer = _Mixer().eval()  # attention the vit backend does not know: only the graph engine's cp_lrp is offered
    with pytest.raises(ValueError) as err:
        Attributor(mixer, "epsilon_flat", backend="zennit")
    assert "method='cp_lrp' (backend 'graph')" in str(err.value) and "(backend 'vit')" not in str(err.value)
    assert Attributor(mixer, "cp_lrp").backend == "graph"  # the advice works
    with pytest.raises(ValueError):
        Attributor(mixer, "cp_lrp", backend="vit")


def test_functional_average_pool_is_refused():
    """A functional average's gradient splits relevance uniformly, onto zero activations too; a
    following functional ReLU drops that share (bias-free Σ R / logit 0.57 on this net; torchvision
    Inception-v3's F.avg_pool2d branches gave -1e3 ... 1e3)."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            x = F.relu(self.c2(F.avg_pool2d(F.relu(self.c1(x)), 3, 1, 1)))
            return self.fc(x.mean((2, 3)))

    text = "; ".join(lrp_coverage_problems(Net()))
    assert "functional avg_pool2d" in text and "functional mean" in text
    with pytest.raises(ValueError, match="functional avg_pool2d"):
        Attributor(Net(), "epsilon_flat", backend="zennit")
