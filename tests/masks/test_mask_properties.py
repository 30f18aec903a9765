"""Property-based tests (hypothesis) over shapes, dtypes, devices and options of the mask functions."""
from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reldrop.masks import random_erase, relevance_erase, relevance_point_drop
from reldrop.masks.image import normalize_relevance_2d
from reldrop.masks.points import normalize_relevance_points, point_drop_mask

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
SETTINGS = settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

probability = st.sampled_from([0.0, 1.0]) | st.floats(0.0, 1.0)


@st.composite
def scale_pairs(draw):
    a = draw(st.floats(0.001, 1.0))
    b = draw(st.floats(0.001, 1.0))
    return (min(a, b), max(a, b))


@st.composite
def ratio_pairs(draw):
    a = draw(st.floats(0.05, 20.0))
    b = draw(st.floats(0.05, 20.0))
    return (min(a, b), max(a, b))


def relevance_like(kind: str, shape, seed: int, dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind == "random":
        return torch.randn(shape, generator=g).to(dtype)
    if kind == "zeros":
        return torch.zeros(shape, dtype=dtype)
    if kind == "constant":
        return torch.full(shape, -2.5, dtype=dtype)
    r = torch.randn(shape, generator=g)  # mixed batch: first sample degenerate
    r[0] = 0
    return r.to(dtype)


@SETTINGS
@given(
    B=st.integers(1, 4),
    C=st.integers(1, 4),
    H=st.integers(2, 12),
    W=st.integers(2, 12),
    dtype=st.sampled_from(DTYPES),
    device=st.sampled_from(DEVICES),
    p=probability,
    scale=scale_pairs(),
    ratio=ratio_pairs(),
    centre=st.sampled_from(["argmax", "topk", "random"]),
    border=st.sampled_from(["clip", "reject"]),
    value_kind=st.sampled_from(["scalar", "channel", "random"]),
    rel_kind=st.sampled_from(["random", "zeros", "constant", "mixed"]),
    rel_2d=st.booleans(),
    inplace=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_relevance_erase_properties(
    B, C, H, W, dtype, device, p, scale, ratio, centre, border, value_kind, rel_kind, rel_2d, inplace, seed
):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(B, C, H, W, generator=g) * 3).to(dtype).to(device)
    r = relevance_like(rel_kind, (B, H, W) if rel_2d else (B, C, H, W), seed, dtype).to(device)
    value = {"scalar": 0.5, "channel": [float(c) - 1.5 for c in range(C)], "random": "random"}[value_kind]
    x0, r0 = x.clone(), r.clone()
    stats: dict = {}
    out, mask = relevance_erase(
        x, r, p=p, scale=scale, ratio=ratio, value=value, centre=centre, border=border,
        generator=torch.Generator(device=device).manual_seed(seed), inplace=inplace, stats=stats,
    )
    assert mask.dtype == torch.bool and mask.shape == (B, H, W) and mask.device == x.device
    assert out.shape == x0.shape and out.dtype == dtype and out.device == x0.device
    assert torch.equal(r, r0)
    assert (out is x) if inplace else torch.equal(x, x0)
    m = mask[:, None].expand(B, C, H, W)
    assert torch.equal(out[~m], x0[~m])  # untouched outside the mask, bit for bit
    assert torch.isfinite(out).all()
    if value_kind != "random":
        fill = torch.tensor(value, dtype=dtype, device=device).reshape(1, -1, 1, 1).expand(B, C, H, W)
        assert torch.equal(out[m], fill[m])
    # mask is non-empty exactly for the erased samples; never for a sample the coin skipped
    assert torch.equal(mask.flatten(1).any(1), stats["erased"])
    assert not (stats["erased"] & ~stats["coin"]).any()
    if p == 0.0:
        assert not mask.any()
    if p == 1.0 and border == "clip":
        assert bool(mask.flatten(1).any(1).all())
    if centre == "argmax":  # the most relevant pixel is inside every erased block
        idx = normalize_relevance_2d(r).reshape(B, -1).argmax(1)
        hit = mask.reshape(B, -1)[torch.arange(B, device=device), idx]
        ok = stats["fallback"] | ~stats["erased"] | hit
        assert bool(ok.all())
    if border == "reject":  # an erased block is never clipped
        assert torch.equal(mask.sum((1, 2))[stats["erased"]], (stats["heights"] * stats["widths"])[stats["erased"]])


@SETTINGS
@given(
    B=st.integers(1, 4),
    C=st.integers(1, 3),
    H=st.integers(2, 10),
    W=st.integers(2, 10),
    p=probability,
    border=st.sampled_from(["clip", "reject"]),
    seed=st.integers(0, 2**31 - 1),
)
def test_random_erase_equals_random_centre(B, C, H, W, p, border, seed):
    x = torch.randn(B, C, H, W, generator=torch.Generator().manual_seed(seed))
    a = random_erase(x, p=p, border=border, generator=torch.Generator().manual_seed(seed))
    b = relevance_erase(x, torch.randn(B, H, W), p=p, centre="random", border=border,
                        generator=torch.Generator().manual_seed(seed))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@SETTINGS
@given(
    B=st.integers(1, 4),
    N=st.integers(1, 64),
    D=st.integers(3, 6),
    dtype=st.sampled_from(DTYPES),
    device=st.sampled_from(DEVICES),
    alpha=probability,
    beta=probability,
    per_feature=st.booleans(),
    rel_kind=st.sampled_from(["random", "zeros", "constant", "mixed"]),
    rel_3d=st.booleans(),
    inplace=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_relevance_point_drop_properties(B, N, D, dtype, device, alpha, beta, per_feature, rel_kind, rel_3d, inplace, seed):
    g = torch.Generator().manual_seed(seed)
    pts = torch.randn(B, N, D, generator=g).to(dtype).to(device)
    rel = relevance_like(rel_kind, (B, N, D) if rel_3d else (B, N), seed, dtype).to(device)
    value = [float(d) for d in range(D)] if per_feature else -1.0
    p0, r0 = pts.clone(), rel.clone()
    out, mask = relevance_point_drop(pts, rel, alpha=alpha, beta=beta, value=value,
                                     generator=torch.Generator(device=device).manual_seed(seed), inplace=inplace)
    assert mask.dtype == torch.bool and mask.shape == (B, N) and mask.device == pts.device
    assert out.shape == (B, N, D) and out.dtype == dtype
    assert torch.equal(rel, r0)
    assert (out is pts) if inplace else torch.equal(pts, p0)
    assert torch.equal(out[~mask], p0[~mask])
    fill = torch.tensor(value, dtype=dtype, device=device).expand(B, N, D)
    assert torch.equal(out[mask], fill[mask])
    assert torch.isfinite(out).all()
    # the mask is Eq. 9 on the documented single draw v ~ U(0, 1)^(B x N)
    v = torch.rand((B, N), generator=torch.Generator(device=device).manual_seed(seed))
    rn, deg = normalize_relevance_points(rel)
    assert torch.equal(mask, point_drop_mask(rn, deg, v.to(rn.dtype), alpha, beta))
    assert not torch.isnan(rn).any() and rn.min() >= 0 and rn.max() <= 1
    if beta == 1.0:
        assert mask.all()


@pytest.mark.parametrize("device", DEVICES)
def test_normalize_2d_range_on_extreme_magnitudes(device):
    r = torch.tensor([[[1e-30, -1e-30], [0.0, 3e-31]], [[1e30, -1e30], [0.0, 1.0]]], device=device)
    rn = normalize_relevance_2d(r)
    assert torch.isfinite(rn).all() and rn.min() >= 0 and rn.max() <= 1
