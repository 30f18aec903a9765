"""Point-cloud preprocessing: normalization, farthest point sampling, subsampling, augmentation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from reldrop.data.points_transforms import PointAugment, farthest_point_sample, normalize_unit_sphere, subsample


def _naive_fps(xyz: np.ndarray, k: int) -> list[int]:
    chosen = [0]
    dist = np.full(len(xyz), np.inf)
    for _ in range(k - 1):
        dist = np.minimum(dist, ((xyz - xyz[chosen[-1]]) ** 2).sum(1))
        chosen.append(int(dist.argmax()))
    return chosen


def test_normalize_centres_and_scales_xyz_only():
    g = torch.Generator().manual_seed(0)
    p = torch.cat([torch.randn(2, 100, 3, generator=g) * 7 + 3, torch.randn(2, 100, 3, generator=g)], -1)
    out = normalize_unit_sphere(p)
    assert torch.allclose(out[..., :3].mean(1), torch.zeros(2, 3), atol=1e-5)
    assert torch.allclose(out[..., :3].norm(dim=-1).amax(1), torch.ones(2))
    assert torch.equal(out[..., 3:], p[..., 3:])
    # single cloud == batch of one; input untouched
    assert torch.allclose(normalize_unit_sphere(p[0]), out[0])
    assert p[0, 0, 0] != out[0, 0, 0]


def test_normalize_degenerate_cloud_is_finite():
    p = torch.ones(10, 3) * 5
    out = normalize_unit_sphere(p)
    assert torch.isfinite(out).all() and torch.equal(out, torch.zeros(10, 3))


def test_fps_matches_naive_reference_per_cloud():
    g = torch.Generator().manual_seed(1)
    xyz = torch.randn(3, 200, 3, generator=g)
    idx = farthest_point_sample(xyz, 20)
    assert idx.shape == (3, 20)
    for b in range(3):
        assert idx[b].tolist() == _naive_fps(xyz[b].double().numpy(), 20)
        assert len(set(idx[b].tolist())) == 20


def test_fps_covers_separated_clusters():
    # 4 tight clusters far apart, 50 points each: 4 FPS picks land in 4 different clusters
    g = torch.Generator().manual_seed(2)
    centres = torch.tensor([[0.0, 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 10]])
    xyz = (centres.repeat_interleave(50, 0) + 0.01 * torch.randn(200, 3, generator=g)).unsqueeze(0)
    idx = farthest_point_sample(xyz, 4)[0]
    assert sorted((idx // 50).tolist()) == [0, 1, 2, 3]


@pytest.mark.parametrize("method", ["fps", "uniform", "first"])
def test_subsample_returns_rows_of_the_input(method):
    g = torch.Generator().manual_seed(3)
    p = torch.randn(64, 6, generator=g)
    out = subsample(p, 16, method, generator=torch.Generator().manual_seed(0))
    assert out.shape == (16, 6)
    rows = {tuple(r.tolist()) for r in p}
    assert all(tuple(r.tolist()) in rows for r in out)
    assert len({tuple(r.tolist()) for r in out}) == 16
    if method == "first":
        assert torch.equal(out, p[:16])


def test_subsample_uniform_is_seeded_and_pads_small_clouds():
    p = torch.randn(50, 3)
    a = subsample(p, 10, "uniform", generator=torch.Generator().manual_seed(5))
    b = subsample(p, 10, "uniform", generator=torch.Generator().manual_seed(5))
    c = subsample(p, 10, "uniform", generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    padded = subsample(p[:7], 12, "fps")
    assert padded.shape == (12, 3) and torch.equal(padded[:7], p[:7])
    rows = {tuple(r.tolist()) for r in p[:7]}
    assert all(tuple(r.tolist()) in rows for r in padded[7:])


def test_augment_scale_shift_jitter_bounds():
    g = torch.Generator().manual_seed(4)
    p = torch.cat([torch.randn(4, 100, 3, generator=g), torch.nn.functional.normalize(torch.randn(4, 100, 3), dim=-1)], -1)
    exact = PointAugment(scale=(2.0, 2.0), shift=0.0, jitter_sigma=0.0)(p)
    assert torch.allclose(exact[..., :3], 2 * p[..., :3]) and torch.equal(exact[..., 3:], p[..., 3:])
    shifted = PointAugment(scale=(1.0, 1.0), shift=0.1, jitter_sigma=0.0)(p, torch.Generator().manual_seed(0))
    delta = shifted[..., :3] - p[..., :3]
    assert torch.allclose(delta, delta[:, :1].expand_as(delta), atol=1e-6)  # one shift per cloud
    assert delta.abs().max() <= 0.1 + 1e-6 and delta.abs().max() > 0
    jit = PointAugment(scale=(1.0, 1.0), shift=0.0, jitter_sigma=1.0, jitter_clip=0.05)(p)
    assert (jit[..., :3] - p[..., :3]).abs().max() <= 0.05 + 1e-6
    aniso = PointAugment(scale=(0.5, 2.0), shift=0.0, jitter_sigma=0.0, anisotropic=True)(p)
    assert torch.allclose(aniso[..., 3:].norm(dim=-1), torch.ones(4, 100), atol=1e-5)


@pytest.mark.parametrize("bad, err", [(torch.zeros(5, 2), ValueError), (torch.zeros(5, 3, dtype=torch.long), TypeError),
                                      ("x", TypeError), (torch.zeros(3), ValueError)])
def test_bad_points_are_rejected_with_the_argument_name(bad, err):
    with pytest.raises(err, match="points"):
        normalize_unit_sphere(bad)


def test_bad_arguments():
    with pytest.raises(ValueError, match="npoints"):
        subsample(torch.zeros(5, 3), 0)
    with pytest.raises(ValueError, match="method"):
        subsample(torch.zeros(5, 3), 2, "random")
    with pytest.raises(ValueError, match="npoint"):
        farthest_point_sample(torch.zeros(1, 5, 3), 6)
    with pytest.raises(ValueError, match="scale"):
        PointAugment(scale=(0.0, 1.0))
