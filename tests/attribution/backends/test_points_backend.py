"""The fast z⁺/Flat backend for PointNet++ / PointNet equals the zennit backend (issue 3)."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from reldrop import RelDrop, models
from reldrop.attribution import Attributor
from reldrop.attribution import registry
from reldrop.attribution.backends.points import FastPointLRP, supports

from helpers.model_state import assert_unchanged, snapshot
from helpers.point_models import TinyPointNet2, randomize_bn, unit_clouds

SMALL = dict(npoint=(32, 8))
CASES = {
    "ssg": ("pointnet2_ssg", SMALL, 3),
    "ssg_normals": ("pointnet2_ssg", SMALL, 6),
    "msg": ("pointnet2_msg", SMALL, 3),
    "msg_normals": ("pointnet2_msg", SMALL, 6),
    "pointnet": ("pointnet", {}, 3),
    "pointnet_tnets": ("pointnet", dict(tnet=True, feature_tnet=True), 6),
}


def make(case: str, dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    name, kw, d = CASES[case]
    torch.manual_seed(seed)
    net = randomize_bn(models.build(name, num_classes=5, in_channels=d, **kw), seed).to(dtype)
    net.train()  # attribution must use eval semantics whatever the mode
    x = unit_clouds(3, 96, d, seed).to(dtype)
    return net, x, torch.tensor([0, 3, 4])


def rel_err(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample max |a - b| / max |b|."""
    return (a - b).abs().flatten(1).amax(1) / b.abs().flatten(1).amax(1)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-4)])
def test_fast_equals_zennit(case, dtype, tol):
    net, x, t = make(case, dtype)
    r_z = Attributor(net, "zplus_flat", backend="zennit")(x, t)
    fast = Attributor(net, "zplus_flat")
    assert fast.backend == "points"  # auto picks it
    r_f = fast(x, t)
    assert r_f.shape == x.shape and r_f.dtype == dtype
    assert float(r_z.abs().amax()) > 0
    assert rel_err(r_f, r_z).max() <= tol
    assert net.training


@pytest.mark.parametrize("case", ["ssg", "pointnet"])
def test_seed_logit_and_predicted(case):
    net, x, t = make(case, torch.float64)
    a_logit = Attributor(net, "zplus_flat", seed="logit")
    r1 = Attributor(net, "zplus_flat")(x, t)
    with torch.no_grad():
        logit = copy.deepcopy(net).eval()(x).gather(1, t[:, None]).view(-1, 1, 1)
    assert rel_err(a_logit(x, t), r1 * logit).max() < 1e-10
    assert rel_err(a_logit(x, t), Attributor(net, "zplus_flat", backend="zennit", seed="logit")(x, t)).max() < 1e-10
    with torch.no_grad():
        pred = copy.deepcopy(net).eval()(x).argmax(1)
    assert torch.equal(Attributor(net, "zplus_flat")(x, "predicted"), Attributor(net, "zplus_flat")(x, pred))


def test_real_modelnet10_clouds_same_dropped_points(modelnet10_root, tmp_path, monkeypatch):
    """Full-size PointNet++ SSG on real clouds: same relevance, same points dropped (α = 0)."""
    from reldrop.data import build_dataset
    from reldrop.masks.points import relevance_point_drop

    monkeypatch.setenv("RELDROP_CACHE_DIR", str(tmp_path))
    test = build_dataset("modelnet10", modelnet10_root, "test", cache=False)
    x = torch.stack([test.dataset[i][0] for i in (0, 300, 600, 900)])[:, :512]
    t = torch.tensor([test.dataset[i][1] for i in (0, 300, 600, 900)])
    net = randomize_bn(models.build("pointnet2_ssg", num_classes=10, npoint=(128, 32)))
    r_z = Attributor(net, "zplus_flat", backend="zennit")(x, t)
    r_f = Attributor(net, "zplus_flat", backend="fast")(x, t)
    assert rel_err(r_f, r_z).max() <= 1e-4
    _, m_z = relevance_point_drop(x, r_z, alpha=0.0, beta=0.15)
    _, m_f = relevance_point_drop(x, r_f, alpha=0.0, beta=0.15)
    assert (m_z == m_f).float().mean() >= 0.99 and int(m_z.sum()) > 0


def test_points_is_its_own_backend_and_answers_fast():
    """"points" is registered on its own (the CNN backend "fast" declines point nets) and an explicit
    backend="fast" on a point net still reaches it; the Attributor names the backend that computes."""
    net, x, t = make("ssg", torch.float64)
    assert registry.get_backend("fast").supports(net, "zplus_flat") is not True
    via_alias = Attributor(net, "zplus_flat", backend="fast")
    direct = Attributor(net, "zplus_flat", backend="points")
    assert via_alias.backend == direct.backend == "points"
    assert torch.equal(via_alias(x, t), direct(x, t))
    with pytest.raises(ValueError, match="(?s)backend='fast' does not support.*fast: .*points: "):
        Attributor(models.build("small_cnn", num_classes=3), "zplus_flat", backend="fast")


@pytest.mark.parametrize("case", ["msg", "pointnet_tnets"])
def test_model_untouched_also_on_error(case):
    net, x, t = make(case)
    net.head.requires_grad_(False)
    net.fc.weight.grad = torch.ones_like(net.fc.weight)
    before = snapshot(net)
    lrp = FastPointLRP(net)
    lrp(x, t)
    assert_unchanged(before, net)
    with pytest.raises(ValueError, match="outside"):
        lrp(x, torch.tensor([0, 1, 5]))
    with pytest.raises(ValueError, match="points"):
        lrp(x[..., :2], t)
    assert_unchanged(before, net)
    next(net.parameters()).data.add_(1.0)  # the snapshot sees a change: the check is not vacuous
    with pytest.raises(AssertionError, match="value"):
        assert_unchanged(before, net)


def test_what_is_supported():
    assert supports(models.build("pointnet2_ssg", num_classes=4), "zplus_flat")
    assert supports(nn.DataParallel(models.build("pointnet", num_classes=4)), "zplus_flat")
    assert not supports(models.build("pointnet2_ssg", num_classes=4), "epsilon_flat")
    conv = models.build("pointnet2_ssg", num_classes=4, layout="conv2d")
    assert not supports(conv, "zplus_flat")
    assert Attributor(conv, "zplus_flat").backend == "zennit"
    assert not supports(TinyPointNet2(), "zplus_flat")  # not a reldrop.models classifier

    class Sub(type(models.build("pointnet", num_classes=4))):
        def forward(self, points):  # a changed forward must not be attributed by the stock plan
            return super().forward(points * 2)

    assert not supports(Sub(num_classes=4), "zplus_flat")
    swapped = models.build("pointnet", num_classes=4)
    swapped.head[2] = nn.GELU()
    assert not supports(swapped, "zplus_flat")
    with pytest.raises(ValueError, match="does not handle"):
        FastPointLRP(swapped, "zplus_flat")
    with pytest.raises(ValueError, match="does not support"):
        Attributor(swapped, "zplus_flat", backend="fast")
    assert isinstance(registry.get_backend("points").build(models.build("pointnet", num_classes=4), "zplus_flat"),
                      FastPointLRP)


def test_conv2d_layout_zennit_equals_rows_fast():
    """The straightforward Conv2d layout (zennit) and the rows layout (fast) give the same relevance."""
    rows = randomize_bn(models.build("pointnet2_ssg", num_classes=5, **SMALL)).double()
    conv = models.build("pointnet2_ssg", num_classes=5, layout="conv2d", **SMALL).double()
    conv.load_state_dict(conv.convert_state_dict(rows.state_dict()))
    x, t = unit_clouds(2, 96).double(), torch.tensor([1, 2])
    r_rows = Attributor(rows, "zplus_flat", backend="fast")(x, t)
    r_conv = Attributor(conv, "zplus_flat", backend="zennit")(x, t)
    assert rel_err(r_rows, r_conv).max() < 1e-10


def test_bad_arguments():
    net, x, t = make("ssg")
    with pytest.raises(ValueError, match="stabilizer"):
        FastPointLRP(net, stabilizer=0.0)
    with pytest.raises(ValueError, match="method"):
        FastPointLRP(net, "epsilon_flat")
    with pytest.raises(ValueError, match="seed"):
        FastPointLRP(net, seed="ones")
    with pytest.raises(TypeError, match="model"):
        FastPointLRP("net")  # type: ignore[arg-type]
    lrp = FastPointLRP(net)
    with pytest.raises(TypeError, match="points"):
        lrp(x.long(), t)
    with pytest.raises(ValueError, match="points"):
        lrp(x[:0], t[:0])
    with pytest.raises(TypeError, match="target"):
        lrp(x, t.float())
    with pytest.raises(ValueError, match="target"):
        lrp(x, t[:2])
    with pytest.raises(ValueError, match="target"):
        lrp(x, "label")


def test_reldrop_points_uses_the_fast_backend():
    net, x, t = make("ssg")
    fn = RelDrop(net, modality="points", alpha=0.0, beta=0.2, generator=torch.Generator().manual_seed(0))
    assert fn.attributor.backend == "points"
    x_aug, mask = fn(x, t, return_mask=True)
    assert x_aug.shape == x.shape and bool(mask.any()) and net.training


def test_custom_canonizers_or_first_layers_never_go_to_the_fast_backend():
    """The fast plan hard-codes the default canonization and input layers: a custom choice must run zennit."""
    net, x, t = make("ssg")
    only_first = Attributor(net, "zplus_flat", first_layers=[net.sa1.mlp[0]])
    assert only_first.backend == "zennit"
    with pytest.raises(ValueError, match="not merged"):  # no canonizers: unmerged BNs, refused (no silent garbage)
        Attributor(net, "zplus_flat", canonizers=[])
    from reldrop.attribution.canonizers import SequentialMergeBatchNorm

    bn_only = Attributor(net, "zplus_flat", canonizers=[SequentialMergeBatchNorm()])  # no centroid handling
    assert bn_only.backend == "zennit"
    assert rel_err(bn_only(x, t), Attributor(net, "zplus_flat")(x, t)).max() > 1e-3  # it does differ
    with pytest.raises(ValueError, match="custom canonizers"):
        Attributor(net, "zplus_flat", backend="fast", canonizers=[])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("case", ["ssg", "msg", "pointnet_tnets"])
def test_fast_equals_zennit_on_cuda(case):
    net, x, t = make(case, torch.float64)
    net, x, t = net.cuda(), x.cuda(), t.cuda()
    r_f = Attributor(net, "zplus_flat", backend="fast")(x, t)
    assert r_f.device.type == "cuda"
    assert rel_err(r_f, Attributor(net, "zplus_flat", backend="zennit")(x, t)).max() <= 1e-12
    assert rel_err(r_f.cpu(), Attributor(net.cpu(), "zplus_flat", backend="fast")(x.cpu(), t.cpu())).max() <= 1e-12
