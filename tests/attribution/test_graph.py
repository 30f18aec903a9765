"""The graph LRP backend (reldrop.attribution.backends.graph): equal to the hand-written fast and
ViT backends and to zennit where they apply (float64), bias-free conservation, refusals that name
the node, the model-state contract (also when a call raises), registry order and default method."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from helpers.model_state import assert_unchanged, snapshot
from helpers.resnet_zoo import randomize_bn, tiny_resnet
from helpers.tolerance import assert_close_scaled

from reldrop.attribution import Attributor, attribute, backend_names
from reldrop.attribution.backends.graph import GraphLRP
from reldrop.attribution.check import bias_free_copy, conservation_ratios

timm = pytest.importorskip("timm")

G = torch.Generator().manual_seed(3)
X16 = torch.randn(3, 3, 16, 16, generator=G, dtype=torch.float64)
X32 = torch.randn(2, 3, 32, 32, generator=G, dtype=torch.float64)


def _rand_params(model: nn.Module, seed: int, std: float = 0.3) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)
    return model


def _both(model: nn.Module, x: torch.Tensor, y: torch.Tensor, method: str, backend: str, **kw):
    a = Attributor(model, method, backend=backend, seed="logit", **kw)
    assert a.backend == backend
    r_ref = a(x, y)
    r = Attributor(model, method, backend="graph", seed="logit", **kw)(x, y)
    return r, r_ref


# --------------------------------------------------------------------------------- vs fast backend
def _fast_models():
    from reldrop.models import build

    yield "tiny_resnet", tiny_resnet(seed=1), X16
    yield "tv_resnet18", randomize_bn(torchvision.models.resnet18(num_classes=5)).double().eval(), X32
    yield "mobilenet_v2", randomize_bn(build("mobilenet_v2", num_classes=5)).double().eval(), X32
    yield "efficientnet_lite0", randomize_bn(build("efficientnet_lite0", num_classes=5)).double().eval(), X32
    yield "vgg11_bn", randomize_bn(build("vgg11_bn", num_classes=5)).double().eval(), X32


@pytest.mark.parametrize("case", list(_fast_models()), ids=lambda c: c[0])
def test_equal_to_the_fast_backend(case):
    _, model, x = case
    y = torch.tensor([0, 4, 2])[: x.shape[0]]
    r, r_ref = _both(model, x, y, "epsilon_flat", "fast")
    assert_close_scaled(r, r_ref, 1e-9)


# --------------------------------------------------------------------------------- vs ViT backend
def _tiny_timm_vit(**kw):
    from timm.models.vision_transformer import VisionTransformer

    m = VisionTransformer(img_size=16, patch_size=4, embed_dim=16, depth=2, num_heads=2, mlp_ratio=2.0, num_classes=5,
                          **kw)
    return _rand_params(m.double(), 0).eval()


def _tiny_tv_vit():
    from torchvision.models.vision_transformer import VisionTransformer

    m = VisionTransformer(image_size=16, patch_size=4, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
                          num_classes=5)
    return _rand_params(m.double(), 1).eval()


@pytest.mark.parametrize("method", ["cp_lrp", "attnlrp"])
@pytest.mark.parametrize("name", ["timm", "timm_avg_layerscale_qknorm", "torchvision"])
def test_equal_to_the_vit_backend(name, method):
    model = {"timm": lambda: _tiny_timm_vit(),
             "timm_avg_layerscale_qknorm": lambda: _tiny_timm_vit(global_pool="avg", init_values=0.5, qk_norm=True),
             "torchvision": _tiny_tv_vit}[name]()
    y = torch.tensor([0, 3, 4])
    r, r_ref = _both(model, X16, y, method, "vit")
    assert_close_scaled(r, r_ref, 1e-9)


# --------------------------------------------------------------------------------- vs zennit
class _PlainCNN(nn.Sequential):
    def __init__(self):
        super().__init__(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 8, 3, stride=2),
                         nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))


@pytest.mark.parametrize("method,kw", [("epsilon_flat", {}), ("zplus_flat", {}),
                                       ("epsilon_gamma_box", {"low": -3.0, "high": 3.0})])
def test_equal_to_zennit_on_a_model_without_functional_ops(method, kw):
    model = randomize_bn(_rand_params(_PlainCNN().double(), 2)).eval()
    y = torch.tensor([0, 3, 4])
    r, r_ref = _both(model, X16, y, method, "zennit", **kw)
    assert_close_scaled(r, r_ref, 1e-9)


# --------------------------------------------------------------------------------- functional ops
class _Functional(nn.Module):
    """Residual adds written as ``x + y`` / ``+=``, a functional SE gate, LayerScale, F.linear."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.c1 = nn.Conv2d(8, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.se = nn.Conv2d(8, 8, 1)
        self.gamma = nn.Parameter(torch.full((8, 1, 1), 0.7))
        self.w = nn.Parameter(torch.randn(5, 8) * 0.3)

    def forward(self, x):
        x = F.gelu(self.stem(x))
        y = F.silu(self.c1(x))
        y = self.c2(y)
        y = y * torch.sigmoid(self.se(y.mean((2, 3), keepdim=True)))
        x = x + self.gamma * y
        x += F.relu(self.c1(x))
        return F.linear(x.mean((2, 3)), self.w)


def test_functional_residual_adds_conserve_and_double_nothing():
    model = _Functional().double()
    ratios = conservation_ratios(model, (3, 16, 16))
    assert torch.all((ratios > 0.99) & (ratios < 1.01)), ratios


# --------------------------------------------------------------------------------- refusals
class _LSTMHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.rnn = nn.LSTM(4, 5, batch_first=True)

    def forward(self, x):
        h = self.conv(x).flatten(2).transpose(1, 2)
        return self.rnn(h)[0][:, -1]


class _Sorted(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        h = self.conv(x).flatten(2)
        return self.fc(torch.sort(h, dim=-1).values.mean(-1))


@pytest.mark.parametrize("model,match", [(_LSTMHead(), r"LSTM.*'rnn'"), (_Sorted(), r"sort")])
def test_refuses_ops_without_a_rule_naming_the_node(model, match):
    from reldrop.attribution.registry import get_backend

    answer = get_backend("graph").supports(model, "epsilon_flat")
    assert isinstance(answer, str)
    with pytest.raises(ValueError, match=match):
        attribute(model, X16.float(), torch.tensor([0, 1, 1]), backend="graph")


def test_ops_off_the_relevance_path_need_no_rule():
    class GateWithSort(nn.Module):  # sort inside the gate branch: never receives relevance
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            h = self.conv(x)
            g = torch.sigmoid(torch.sort(h.flatten(2), dim=-1).values[..., -1:].unsqueeze(-1))
            return self.fc((h * g).mean((2, 3)))

    ratios = conservation_ratios(GateWithSort(), (3, 8, 8))
    assert torch.all((ratios > 0.99) & (ratios < 1.01)), ratios


# --------------------------------------------------------------------------------- registry
def test_asked_after_the_hand_written_backends_and_before_zennit():
    names = backend_names()
    assert names.index("graph") > max(names.index("fast"), names.index("vit"))
    assert names.index("graph") < names.index("zennit")
    assert Attributor(tiny_resnet(seed=0), backend="auto").backend == "fast"


def test_convnext_atto_default_method_and_bias_free_conservation():
    model = timm.create_model("convnext_atto", num_classes=10)
    x = torch.randn(2, 3, 32, 32)
    a = Attributor(model)
    assert (a.backend, a.method) == ("graph", "epsilon_flat")
    r = a(x, torch.tensor([1, 2]))
    assert r.shape == x.shape and torch.isfinite(r).all()
    ratios = conservation_ratios(model, (3, 32, 32), batch=2)
    assert torch.all((ratios > 0.9) & (ratios < 1.1)), ratios


# --------------------------------------------------------------------------------- model state
def test_model_unchanged_bit_for_bit_also_when_a_call_raises():
    model = timm.create_model("test_efficientnet", num_classes=4).train()
    model.blocks[0].register_forward_hook(lambda *a: None)
    before = snapshot(model)
    a = Attributor(model, backend="graph")
    a(torch.randn(2, 3, 32, 32), torch.tensor([0, 3]))
    assert_unchanged(before, model)
    with pytest.raises(ValueError, match="outside"):
        a(torch.randn(2, 3, 32, 32), torch.tensor([0, 9]))
    assert_unchanged(before, model)
    with pytest.raises(RuntimeError):
        a(torch.randn(2, 5, 32, 32), torch.tensor([0, 1]))  # wrong channels: raises inside the forward
    assert_unchanged(before, model)


def test_train_mode_uses_running_statistics_like_the_other_backends():
    model = randomize_bn(tiny_resnet(seed=2)).train()
    r_train = attribute(model, X16, torch.tensor([0, 1, 2]), backend="graph")
    r_eval = attribute(model.eval(), X16, torch.tensor([0, 1, 2]), backend="graph")
    assert torch.equal(r_train, r_eval)


def test_sees_training_between_calls_and_replans_when_a_module_is_replaced():
    model = tiny_resnet(seed=3)
    g = GraphLRP(model, seed="logit")
    r1 = g(X16, torch.tensor([0, 1, 2]))
    with torch.no_grad():
        model.layer1[0].conv1.weight.mul_(-1.5)  # an optimizer step, in place: the next call must see it
    r2 = g(X16, torch.tensor([0, 1, 2]))
    assert not torch.allclose(r2, r1)
    assert torch.equal(r2, GraphLRP(model, seed="logit")(X16, torch.tensor([0, 1, 2])))
    model.fc = nn.Linear(model.fc.in_features, 7).double()
    assert g(X16, torch.tensor([0, 6, 2])).shape == X16.shape


def test_bias_free_copy_zeroes_shifts_and_redraws_zero_gains():
    model = timm.create_model("test_vit", num_classes=3)
    nn.init.zeros_(model.head.weight)
    m = bias_free_copy(model, torch.randn(4, 3, 64, 64))
    assert float(m.head.weight.detach().abs().max()) > 0
    assert float(m.pos_embed.detach().abs().max()) == 0 and float(m.cls_token.detach().abs().max()) == 0
    assert all(float(p.detach().abs().max()) == 0 for n, p in m.named_parameters() if n.endswith("bias"))


class _Clamp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, g):
        return g


class _CustomFn(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(_Clamp.apply(self.conv(x)).mean((2, 3)))


class _DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 16 * 16, 2)

    def forward(self, x):
        if x.mean() > 0:
            x = -x
        return self.fc(x.flatten(1))


@pytest.mark.parametrize("model,match", [(_CustomFn(), r"node 'clamp' \(tensor method \.clamp\(\)\)"),
                                         (_DataDependent(), r"cannot trace _DataDependent")])
def test_refuses_custom_autograd_functions_and_untraceable_control_flow(model, match):
    """fx traces a custom autograd Function through its forward (LRP rules follow the forward, its
    custom backward plays no part); an op there without a rule is refused by name."""
    with pytest.raises(ValueError, match=match):
        attribute(model, X16.float(), torch.tensor([0, 1, 1]), backend="graph")


def test_batchnorm_before_its_conv_and_frozen_batchnorm_conserve():
    from torchvision.ops.misc import FrozenBatchNorm2d

    frozen = FrozenBatchNorm2d(6)
    with torch.no_grad():
        frozen.weight.uniform_(0.5, 1.5)
        frozen.running_var.uniform_(0.5, 1.5)
    model = nn.Sequential(nn.Conv2d(3, 6, 3), frozen, nn.ReLU(), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 6, 3),
                          timm.layers.BatchNormAct2d(6, act_layer=nn.SiLU), nn.Conv2d(6, 6, 1),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))
    ratios = conservation_ratios(model, (3, 12, 12))
    assert torch.all((ratios > 0.99) & (ratios < 1.01)), ratios
