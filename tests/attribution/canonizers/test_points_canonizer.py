"""LRP (z⁺ / Flat) for PointNet++: the point canonizer keeps outputs, conserves relevance, and
relevance reaches exactly the input points the model used."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from zennit.attribution import Gradient
from zennit.core import Composite
from zennit.rules import Flat, Pass, ZPlus
from zennit.types import Activation, BatchNorm
from zennit.types import Linear as LinearOrConv

from helpers.point_models import TinyPointNet2, randomize_bn, unit_clouds
from reldrop.attribution import Attributor, attribute
from reldrop.attribution.canonizers import SequentialMergeBatchNorm
from reldrop.attribution.canonizers.points import PointNet2Canonizer, PointNetCanonizer, canonizers_for, input_layers
from reldrop.models import build
from reldrop.models.pointnet2 import ball_query, farthest_point_sample, index_points


def _models():
    torch.manual_seed(0)
    return {
        "ssg": randomize_bn(build("pointnet2_ssg", num_classes=5, npoint=(32, 8))),
        "msg_d6": randomize_bn(build("pointnet2_msg", num_classes=5, in_channels=6, npoint=(16, 4))),
        "ssg_conv2d": randomize_bn(build("pointnet2_ssg", num_classes=5, npoint=(32, 8), layout="conv2d")),
        "tiny_msg": randomize_bn(TinyPointNet2(5, msg=True)),
        "tiny_ssg": randomize_bn(TinyPointNet2(5, msg=False)),
        "pointnet_tnets": randomize_bn(build("pointnet", num_classes=5, tnet=True, feature_tnet=True)),
    }


MODELS = _models()


def _x(name: str, b: int = 3, n: int = 128) -> torch.Tensor:
    return unit_clouds(b, n, MODELS[name].in_channels, seed=1)


def _lrp(model: nn.Module, x: torch.Tensor, y: torch.Tensor, canonizers) -> torch.Tensor:
    """Bias-free z⁺ (the textbook rule, conservative) with Flat on every input layer, seed = one-hot."""
    first = {id(m) for m in input_layers(model)}
    assert first

    def module_map(ctx, name, module):
        if id(module) in first:
            return Flat()
        if isinstance(module, (Activation, BatchNorm)):
            return Pass()
        return ZPlus(zero_params=["bias"]) if isinstance(module, LinearOrConv) else None

    composite = Composite(module_map=module_map, canonizers=canonizers)
    with Gradient(model=model, composite=composite) as attr:
        out, rel = attr(x.clone().requires_grad_(True), torch.eye(5)[y])
    return rel


@pytest.mark.parametrize("name", list(MODELS))
def test_canonizer_keeps_outputs_and_is_undone(name):
    model, x = MODELS[name], _x(name)
    before = model(x)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    (can,) = canonizers_for(model)
    assert isinstance(can, PointNetCanonizer if name.startswith("pointnet") else PointNet2Canonizer)
    handles = can.apply(model)
    try:
        during = model(x)
        switched = [m for m in model.modules() if getattr(m, "detach_centre", False) or "forward" in vars(m)]
        assert switched  # centroid detach (or the T-Net forward) is active
    finally:
        for h in handles:
            h.remove()
    assert torch.allclose(before, during, atol=1e-5)
    assert not any("forward" in vars(m) or getattr(m, "detach_centre", False) for m in model.modules())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert all(getattr(m, "eps", 1e-5) > 0 for m in model.modules() if isinstance(m, nn.BatchNorm1d))


@pytest.mark.parametrize("name", ["ssg", "msg_d6", "tiny_msg", "pointnet_tnets"])
def test_relevance_is_conserved_with_the_point_canonizer(name):
    model, x = MODELS[name], _x(name)
    y = torch.tensor([0, 2, 4])
    ours = _lrp(model, x, y, canonizers_for(model)).sum(-1)  # per-point relevance (B, N)
    assert torch.allclose(ours.sum(1), torch.ones(3), atol=1e-4)  # bias-free z+ conserves exactly
    assert (ours >= 0).all()


@pytest.mark.parametrize("name", ["tiny_ssg", "tiny_msg"])
def test_without_centroid_detach_relevance_is_lost_and_negative(name):
    model, x = MODELS[name], _x(name)
    y = torch.tensor([0, 2, 4])
    plain = _lrp(model, x, y, [SequentialMergeBatchNorm()]).sum(-1)  # gradient through "xyz - centroid"
    assert (plain.sum(1) - 1).abs().min() > 0.05 and (plain < 0).any()


def _used_points(model: nn.Module, xyz: torch.Tensor) -> torch.Tensor:
    """(B, N) bool: points gathered by a level-1 ball or picked as level-1 centroids."""
    sa = model.sa1
    b, n, _ = xyz.shape
    fps = farthest_point_sample(xyz, sa.npoint)
    centres = index_points(xyz, fps)
    radii = getattr(sa, "radii", None) or [sa.radius]
    nsamples = getattr(sa, "nsamples", None) or [sa.nsample]
    used = torch.zeros(b, n, dtype=torch.bool)
    used.scatter_(1, fps, True)
    for r, k in zip(radii, nsamples):
        used.scatter_(1, ball_query(r, k, xyz, centres).reshape(b, -1), True)
    return used


@pytest.mark.parametrize("name", ["ssg", "msg_d6", "tiny_msg"])
def test_points_the_model_never_uses_get_exactly_zero_relevance(name):
    model = MODELS[name]
    x = _x(name, n=400)
    # 260 copies of point 0 at the end: a ball keeps only its first nsample (<= 128) points in
    # index order, so copies beyond index 140 + 128 are never gathered by any ball
    x[:, 140:] = x[:, :1]
    y = torch.tensor([1, 3, 0])
    rel = attribute(model, x, y, "zplus_flat").sum(-1)
    used = _used_points(model, x[..., :3])
    assert (~used).sum() > 3 * 100, "the setup must leave points unused"
    assert torch.equal(rel[~used], torch.zeros_like(rel[~used]))
    assert (rel[used] != 0).sum() > 10


def test_attributor_uses_the_point_canonizer():
    att = Attributor(MODELS["ssg"], "zplus_flat", backend="zennit")  # auto would pick the fast backend
    assert any(isinstance(c, PointNet2Canonizer) for c in att.canonizers)
    assert canonizers_for(nn.Sequential(nn.Linear(3, 3))) is None


def test_point_models_are_recognised_by_class_not_by_name():
    """The point canonizers claim instances of reldrop's classes (subclasses included) and nothing that
    merely shares a class name."""
    from reldrop.attribution.canonizers import points
    from reldrop.models.pointnet import PointNetClassifier

    class MyPointNet(PointNetClassifier):  # defined outside reldrop.models: the class, not its name, counts
        pass

    SetAbstraction = type("SetAbstraction", (nn.Linear,), {"__module__": "reldrop.models.pointnet2"})
    assert points.claims(MyPointNet(num_classes=3))
    assert isinstance(points.factory(MyPointNet(num_classes=3))[0], PointNetCanonizer)
    assert not points.claims(nn.Sequential(SetAbstraction(3, 3)))  # same name and module string, other class
    assert input_layers(nn.Sequential(SetAbstraction(3, 3))) == []
