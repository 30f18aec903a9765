"""PointNet++ building blocks against naive references; layout equivalence; invariances."""
from __future__ import annotations

import pytest
import torch

from reldrop.models import build
from reldrop.models.pointnet2 import (
    SetAbstraction,
    group,
    ball_query,
    farthest_point_sample,
    index_points,
    square_distance,
)
from helpers.tolerance import assert_close_scaled


def naive_fps(xyz: torch.Tensor, npoint: int, start: int) -> list[int]:
    """One cloud (N, 3): greedy, each pick maximizes the distance to the picked set (lowest index on ties)."""
    n = xyz.shape[0]
    picked = [start]
    for _ in range(npoint - 1):
        best, best_d = 0, -1.0
        for i in range(n):
            d = min(float(((xyz[i] - xyz[j]) ** 2).sum()) for j in picked)
            if d > best_d:
                best, best_d = i, d
        picked.append(best)
    return picked


def naive_ball(xyz: torch.Tensor, centres: torch.Tensor, radius: float, nsample: int) -> list[list[int]]:
    out = []
    for c in centres:
        inside = [i for i in range(xyz.shape[0]) if float(((xyz[i] - c) ** 2).sum()) <= radius**2]
        inside = inside[:nsample]
        out.append(inside + [inside[0]] * (nsample - len(inside)))
    return out


def cloud(b: int, n: int, d: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, n, d, generator=g) * 2 - 1
    return x


def test_fps_matches_naive() -> None:
    xyz = cloud(3, 25)
    start = torch.tensor([0, 7, 24])
    idx = farthest_point_sample(xyz, 10, start)
    assert idx.shape == (3, 10) and idx.dtype == torch.long
    for b in range(3):
        assert idx[b].tolist() == naive_fps(xyz[b], 10, int(start[b]))


def test_fps_default_start_is_farthest_from_mean_and_order_free() -> None:
    xyz = cloud(2, 30, seed=1)
    idx = farthest_point_sample(xyz, 8)
    far = (xyz - xyz.mean(1, keepdim=True)).pow(2).sum(-1).argmax(-1)
    assert torch.equal(idx[:, 0], far)
    perm = torch.randperm(30, generator=torch.Generator().manual_seed(3))
    idx_p = farthest_point_sample(xyz[:, perm], 8)
    # the same points are picked, in the same order, whatever the order of the input
    assert torch.equal(perm[idx_p], idx)


def test_fps_more_samples_than_points_repeats() -> None:
    xyz = cloud(1, 5)
    idx = farthest_point_sample(xyz, 9, torch.tensor([2]))
    assert sorted(set(idx[0].tolist())) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("radius,nsample", [(0.3, 4), (0.6, 8), (5.0, 6), (0.6, 64)])
def test_ball_query_matches_naive(radius: float, nsample: int) -> None:
    xyz = cloud(2, 40, seed=2)
    centres = index_points(xyz, torch.tensor([[0, 5, 9, 39], [1, 2, 3, 20]]))
    idx = ball_query(radius, nsample, xyz, centres)
    assert idx.shape == (2, 4, nsample)
    for b in range(2):
        assert idx[b].tolist() == naive_ball(xyz[b], centres[b], radius, nsample)


def test_square_distance() -> None:
    a, b = cloud(2, 6, seed=3), cloud(2, 9, seed=4)
    ref = ((a[:, :, None, :] - b[:, None, :, :]) ** 2).sum(-1)
    assert_close_scaled(square_distance(a, b), ref, rel=1e-6)  # float32; |a|²+|b|²-2ab cancels on the scale of the values


@pytest.mark.parametrize("xyz_first", [True, False])
def test_grouped_features_are_correct_and_differentiable(xyz_first: bool) -> None:
    xyz = cloud(2, 20, seed=5).requires_grad_(True)
    feats = cloud(2, 20, d=4, seed=6).requires_grad_(True)
    centres_idx = torch.tensor([[0, 3, 7], [2, 4, 19]])
    new_xyz = index_points(xyz, centres_idx)
    idx = ball_query(0.8, 5, xyz, new_xyz)
    grouped = group(xyz, feats, new_xyz, idx, xyz_first=xyz_first)
    assert grouped.shape == (2, 3, 5, 7)
    for b in range(2):
        for s in range(3):
            for k in range(5):
                j = int(idx[b, s, k])
                rel = xyz[b, j] - xyz[b, int(centres_idx[b, s])]
                want = torch.cat([rel, feats[b, j]] if xyz_first else [feats[b, j], rel])
                torch.testing.assert_close(grouped[b, s, k], want)
    # gradients reach exactly the points that were grouped (and the centres)
    grouped.sum().backward()
    assert feats.grad is not None and xyz.grad is not None
    used = torch.zeros(2, 20, dtype=torch.bool)
    used.scatter_(1, idx.flatten(1), True)
    assert torch.equal(feats.grad.abs().sum(-1) > 0, used)
    assert (xyz.grad[~used] == 0).all()


def test_indices_are_not_differentiable() -> None:
    xyz = cloud(1, 10).requires_grad_(True)
    assert not farthest_point_sample(xyz, 4).requires_grad
    assert not ball_query(0.5, 3, xyz, xyz[:, :2]).requires_grad


def copy_weights(src: torch.nn.Module, dst: torch.nn.Module) -> None:
    with torch.no_grad():
        for (ka, a), (kb, b) in zip(src.state_dict().items(), dst.state_dict().items()):
            assert ka == kb
            b.copy_(a.view_as(b))


@pytest.mark.parametrize("variant,d", [("ssg", 3), ("ssg", 6), ("msg", 6)])
def test_rows_layout_equals_straightforward_conv2d(variant: str, d: int) -> None:
    torch.manual_seed(0)
    ours = build(f"pointnet2_{variant}", num_classes=6, in_channels=d, npoint=(16, 8))
    ref = build(f"pointnet2_{variant}", num_classes=6, in_channels=d, npoint=(16, 8), layout="conv2d")
    assert isinstance(ref.sa3.mlp[0], torch.nn.Conv2d) and isinstance(ours.sa3.mlp[0], torch.nn.Linear)
    copy_weights(ours, ref)
    x = cloud(3, 64, d=d, seed=7)
    # eval mode, float32: same logits to 1e-5 (BN running stats made non-trivial first)
    with torch.no_grad():
        for m_ours, m_ref in zip(ours.modules(), ref.modules()):
            if isinstance(m_ours, torch.nn.modules.batchnorm._BatchNorm):
                g = torch.Generator().manual_seed(m_ours.num_features)
                m_ours.running_mean.copy_(torch.randn(m_ours.num_features, generator=g) * 0.1)
                m_ours.running_var.copy_(torch.rand(m_ours.num_features, generator=g) + 0.5)
                m_ref.load_state_dict(m_ours.state_dict())
        torch.testing.assert_close(ours.eval()(x), ref.eval()(x), atol=1e-5, rtol=1e-5)
    # train mode (batch statistics, random FPS start with the same seed, dropout, gradients):
    # in float64, because BN batch statistics of near-constant channels amplify float32 rounding
    # differences between the two layouts' reductions (both equally right) to ~1e-3.
    ours, ref, x = ours.double(), ref.double(), x.double()
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    torch.manual_seed(1)
    out_a = ours.train()(xa)
    torch.manual_seed(1)
    out_b = ref.train()(xb)
    # tolerances relative to each tensor's largest magnitude: the two layouts reduce in different
    # orders, and that order differs between machines (an absolute 1e-9 failed on a fresh machine
    # with 1.29e-9 on gradients of magnitude ~1e1)
    assert_close_scaled(out_a, out_b, rel=1e-9)
    out_a.square().sum().backward()
    out_b.square().sum().backward()
    assert_close_scaled(xa.grad, xb.grad, rel=1e-9)
    # the biases in front of a train-mode BN have gradients that are 0 up to rounding, so each
    # gradient is compared on the scale of the largest gradient of the model
    grad_scale = max(float(p.grad.abs().max()) for p in ref.parameters())
    for (na, pa), (nb, pb) in zip(ours.named_parameters(), ref.named_parameters()):
        assert na == nb
        assert_close_scaled(pa.grad, pb.grad.view_as(pa.grad), rel=1e-9, floor=1e-9 * grad_scale, msg=na)
    for (_, ba), (_, bb) in zip(ours.named_buffers(), ref.named_buffers()):
        assert_close_scaled(ba, bb, rel=1e-12)


@pytest.mark.parametrize("variant", ["ssg", "msg"])
def test_eval_is_deterministic_and_permutation_invariant(variant: str) -> None:
    torch.manual_seed(0)
    model = build(f"pointnet2_{variant}", num_classes=5, npoint=(16, 8))
    x = cloud(3, 64, seed=8)
    with torch.no_grad():
        model.train()(x)  # give BN non-trivial running statistics
        model.eval()
        a = model(x)
        b = model(x)
        perm = torch.randperm(64, generator=torch.Generator().manual_seed(9))
        c = model(x[:, perm])
    assert torch.equal(a, b)
    # every ball holds fewer points than nsample here, so grouping does not depend on the order
    torch.testing.assert_close(a, c, atol=1e-5, rtol=1e-5)


def test_train_mode_fps_start_is_random_but_seeded() -> None:
    torch.manual_seed(0)
    model = build("pointnet2_ssg", num_classes=5, npoint=(8, 4)).train()
    x = cloud(2, 64, seed=10)
    torch.manual_seed(3)
    a = model(x)
    torch.manual_seed(3)
    b = model(x)
    torch.manual_seed(4)
    c = model(x)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)  # a different start point gives different groups
    model.random_start = False  # deterministic start: only dropout draws from the seed
    torch.manual_seed(3)
    d = model(x)
    torch.manual_seed(4)
    e = model(x)
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    assert torch.equal(model(x), model(x))
    assert not torch.equal(d, e)


def test_set_abstraction_group_all_uses_uncentred_coordinates() -> None:
    torch.manual_seed(0)
    sa = SetAbstraction(None, None, None, 3 + 2, [4], group_all=True).eval()
    xyz, feats = cloud(2, 7, seed=11), cloud(2, 7, d=2, seed=12)
    new_xyz, out = sa(xyz, feats)
    assert new_xyz.shape == (2, 1, 3) and (new_xyz == 0).all()
    with torch.no_grad():
        want = sa.mlp(torch.cat([xyz, feats], -1).reshape(14, 5)).view(2, 7, 4).max(1)[0]
    torch.testing.assert_close(out[:, 0], want)


def test_gradient_reaches_exactly_the_grouped_input_points() -> None:
    torch.manual_seed(0)
    model = build("pointnet2_ssg", num_classes=5, npoint=(16, 8)).eval()
    x = (cloud(2, 64, seed=13) * 0.4).requires_grad_(True)
    model(x)[:, 0].sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    has_grad = x.grad.abs().sum(-1) > 0
    with torch.no_grad():  # the points the first level groups (eval start: deterministic)
        centres = index_points(x, farthest_point_sample(x, 16))
        idx = ball_query(0.2, 32, x, centres)
    used = torch.zeros(2, 64, dtype=torch.bool)
    used.scatter_(1, idx.flatten(1), True)
    assert not (has_grad & ~used).any()  # points no group uses get no gradient
    assert has_grad.sum() >= 0.5 * used.sum()


def test_pointnet_tnet_variants() -> None:
    torch.manual_seed(0)
    for kw in ({}, {"tnet": True}, {"tnet": True, "feature_tnet": True}):
        model = build("pointnet", num_classes=4, in_channels=6, **kw).eval()
        x = cloud(3, 32, d=6, seed=14)
        with torch.no_grad():
            out = model(x)
            perm = torch.randperm(32, generator=torch.Generator().manual_seed(1))
            torch.testing.assert_close(model(x[:, perm]), out, atol=1e-5, rtol=1e-5)
        assert out.shape == (3, 4)
        if kw.get("feature_tnet"):
            assert model.feature_transform is not None and model.feature_transform.shape == (3, 64, 64)
    from reldrop.models.pointnet import transform_regularizer

    eye = torch.eye(3).expand(2, 3, 3)
    assert float(transform_regularizer(eye)) == 0.0
    assert float(transform_regularizer(2 * eye)) > 0.0


def test_ball_query_empty_ball_falls_back_to_nearest() -> None:
    xyz = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0, 1, 0]]])
    centres = torch.tensor([[[5.0, 0, 0], [0.1, 0, 0]]])
    idx = ball_query(0.5, 2, xyz, centres)
    assert idx.tolist() == [[[1, 1], [0, 0]]]


@pytest.mark.parametrize("variant", ["ssg", "msg"])
def test_detach_centre_changes_only_the_backward(variant: str) -> None:
    torch.manual_seed(0)
    model = build(f"pointnet2_{variant}", num_classes=5, npoint=(16, 8)).eval()
    x = (cloud(2, 64, seed=15) * 0.4).requires_grad_(True)
    out = model(x)
    (g,) = torch.autograd.grad(out[:, 0].sum(), x)
    for sa in (model.sa1, model.sa2):
        sa.detach_centre = True
    x2 = x.detach().clone().requires_grad_(True)
    out2 = model(x2)
    (g2,) = torch.autograd.grad(out2[:, 0].sum(), x2)
    assert torch.equal(out, out2)
    assert not torch.allclose(g, g2)
