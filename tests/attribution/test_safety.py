"""The safety contract, bit for bit: an attribution call (also one that raises) leaves the model as it was."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from torchvision.models.resnet import BasicBlock

from helpers.resnet_zoo import resnet18_3x3, tiny_resnet
from reldrop import models
from reldrop.attribution import Attributor, attribute, preserve_model_state
from reldrop.attribution.canonizers import SequentialMergeBatchNorm

from helpers.model_state import assert_unchanged, snapshot


def _decorate(model: nn.Module) -> dict:
    """Give the model every kind of state a training loop has: grads (some None), frozen params,
    mixed train/eval flags, user hooks of all kinds."""
    calls = {"fwd": 0, "pre": 0, "bwd": 0, "sd": 0}
    params = list(model.parameters())
    for i, p in enumerate(params):
        if i % 3 == 0:
            p.grad = torch.full_like(p, 0.5 + i)
        if i % 5 == 1:
            p.requires_grad_(False)
    model.train()
    model.layer1.eval()
    model.register_forward_hook(lambda m, i, o: calls.__setitem__("fwd", calls["fwd"] + 1))
    model.layer2.register_forward_pre_hook(lambda m, i: calls.__setitem__("pre", calls["pre"] + 1))
    model.fc.register_full_backward_hook(lambda m, gi, go: calls.__setitem__("bwd", calls["bwd"] + 1))
    model._register_state_dict_hook(lambda m, sd, prefix, local: calls.__setitem__("sd", calls["sd"] + 1))
    params[0].register_hook(lambda g: g)
    return calls


@pytest.fixture
def model():
    m = tiny_resnet(BasicBlock, seed=5, dtype=torch.float32)
    _decorate(m)
    return m


X = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
Y = torch.tensor([1, 3])


@pytest.mark.parametrize("method", ["epsilon_flat", "zplus_flat", "gradient", "gradient_x_input"])
def test_attribution_leaves_model_bit_identical(model, method):
    before = snapshot(model)
    R = attribute(model, X, Y, method, backend="zennit")
    assert torch.isfinite(R).all()
    assert_unchanged(before, model)


def test_resnet18_3x3_bit_identical_and_train_mode_bn_stats_untouched():
    m = resnet18_3x3(seed=1)
    _decorate(m)
    before = snapshot(m)
    attribute(m, X, Y, backend="zennit")
    assert_unchanged(before, m)
    assert m.training and m.bn1.training and not m.layer1.training


class _Boom(Exception):
    pass


def test_exception_in_forward_hook_mid_forward(model):
    """A user hook deep in the net raises while canonizers and LRP hooks are registered."""
    armed = {"on": False}

    def hook(module, inputs, output):
        if armed["on"]:
            raise _Boom("injected")

    model.layer2[1].conv2.register_forward_hook(hook)
    attributor = Attributor(model, "epsilon_flat", backend="zennit")
    reference = attributor(X, Y)  # also does the first-layer trace
    before = snapshot(model)
    armed["on"] = True
    with pytest.raises(_Boom):
        attributor(X, Y)
    assert_unchanged(before, model)
    armed["on"] = False
    torch.testing.assert_close(attributor(X, Y), reference, rtol=0, atol=0)
    assert_unchanged(before, model)


class _RaiseInBackward(torch.autograd.Function):
    armed = False

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        if _RaiseInBackward.armed:
            raise _Boom("injected in backward")
        return g


class _Tripwire(nn.Module):
    def forward(self, x):
        return _RaiseInBackward.apply(x)


def test_exception_mid_backward():
    m = tiny_resnet(BasicBlock, seed=6, dtype=torch.float32)
    m.layer2.append(_Tripwire())
    _decorate(m)
    attributor = Attributor(m, "epsilon_flat", backend="zennit")
    reference = attributor(X, Y)
    before = snapshot(m)
    _RaiseInBackward.armed = True
    try:
        with pytest.raises(_Boom):
            attributor(X, Y)
    finally:
        _RaiseInBackward.armed = False
    assert_unchanged(before, m)
    torch.testing.assert_close(attributor(X, Y), reference, rtol=0, atol=0)


class _RaisingCanonizer(SequentialMergeBatchNorm):
    def apply(self, root_module):
        super().apply(root_module)  # merges (and leaves merged) ...
        raise _Boom("injected in canonizer")  # ... then fails


def test_exception_inside_canonization(model):
    before = snapshot(model)
    attributor = Attributor(model, "epsilon_flat", backend="zennit",
                            canonizers=[SequentialMergeBatchNorm(), _RaisingCanonizer()])
    with pytest.raises(_Boom):
        attributor(X, Y)
    assert_unchanged(before, model)


def test_exception_in_first_layer_trace(model):
    armed = {"on": True}

    def hook(module, inputs):
        if armed["on"]:
            raise _Boom("injected in trace")

    model.layer1.register_forward_pre_hook(hook)
    before = snapshot(model)
    with pytest.raises(_Boom):
        attribute(model, X, Y, backend="zennit")
    assert_unchanged(before, model)


def test_bad_target_raises_and_leaves_model(model):
    before = snapshot(model)
    with pytest.raises(ValueError, match="target"):
        attribute(model, X, torch.tensor([0, 99]), backend="zennit")
    assert_unchanged(before, model)


def test_no_parameter_gradients_and_user_hooks_still_work(model):
    calls = _decorate(model)  # second set of hooks on top of the fixture's
    grads = [p.grad for p in model.parameters()]
    attribute(model, X, Y, backend="zennit")
    assert [p.grad for p in model.parameters()] == grads or all(
        a is b for a, b in zip((p.grad for p in model.parameters()), grads)
    )
    model.state_dict()
    assert calls["fwd"] >= 1 and calls["pre"] >= 1 and calls["sd"] == 1


def test_guard_undoes_arbitrary_changes():
    m = tiny_resnet(BasicBlock, seed=7, dtype=torch.float32)
    _decorate(m)
    before = snapshot(m)
    with preserve_model_state(m, copy_parameters=True):
        m.eval()
        m.fc.weight.requires_grad_(not m.fc.weight.requires_grad)
        m.fc.bias.grad = torch.ones_like(m.fc.bias)
        m.layer1[0].conv1.weight.grad = None
        m.layer1.register_forward_hook(lambda *a: None)
        m.bn1.eps = 1.0
        m.bn1.forward = lambda x: x
        m.extra = nn.Linear(1, 1)
        m.register_buffer("extra_buf", torch.ones(1))
        m.conv1.weight.data = torch.zeros_like(m.conv1.weight)
        with torch.no_grad():
            m.layer1[0].bn1.running_mean.add_(1.0)
            m.fc.weight.mul_(2.0)
        m.train()
        m.bn1(torch.randn(4, m.bn1.num_features, 2, 2))  # updates running stats in train mode
    assert_unchanged(before, m)


def test_guard_restores_after_exception_and_reraises():
    m = tiny_resnet(BasicBlock, seed=8, dtype=torch.float32)
    before = snapshot(m)
    with pytest.raises(_Boom):
        with preserve_model_state(m):
            m.train()
            m.layer3[0].downsample[0].weight.data = torch.ones(1)
            m.layer3.register_forward_hook(lambda *a: None)
            raise _Boom()
    assert_unchanged(before, m)


def test_guard_refuses_silent_in_place_parameter_change_without_copy():
    m = tiny_resnet(BasicBlock, seed=9, dtype=torch.float32)
    with pytest.raises(RuntimeError, match="fc.weight"):
        with preserve_model_state(m):
            with torch.no_grad():
                m.fc.weight.add_(1.0)


def test_wrappers_are_unwrapped(model):
    inner = attribute(model, X, Y, backend="zennit")
    dp = nn.DataParallel(model)
    compiled = torch.compile(model)  # lazy: nothing is compiled unless called (marks the model itself)
    before = snapshot(model)
    torch.testing.assert_close(attribute(dp, X, Y, backend="zennit"), inner, rtol=0, atol=0)
    torch.testing.assert_close(attribute(compiled, X, Y, backend="zennit"), inner, rtol=0, atol=0)
    assert_unchanged(before, model)
    assert Attributor(dp, backend="zennit").model is model


def test_ddp_wrapped_model_single_process(tmp_path):
    dist = pytest.importorskip("torch.distributed")
    if not dist.is_available():
        pytest.skip("torch.distributed not available")
    m = tiny_resnet(BasicBlock, seed=10, dtype=torch.float32)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        ddp = nn.parallel.DistributedDataParallel(m)
        before = snapshot(m)
        R = attribute(ddp, X, Y, backend="zennit")
        assert_unchanged(before, m)
        torch.testing.assert_close(R, attribute(m, X, Y, backend="zennit"), rtol=0, atol=0)
    finally:
        dist.destroy_process_group()


def test_point_model_through_registry_is_left_unchanged():
    """Integration: PointNet++ (reldrop.models) with its canonizer from canonizers.points, zplus_flat."""
    torch.manual_seed(0)
    m = models.build("pointnet2_ssg", num_classes=4).eval()
    pts = torch.randn(2, 128, 3, generator=torch.Generator().manual_seed(1))
    before = snapshot(m)
    R = attribute(m, pts, torch.tensor([1, 2]), "zplus_flat")
    assert R.shape == pts.shape and torch.isfinite(R).all() and R.abs().sum() > 0
    assert_unchanged(before, m)
