"""relevance_point_drop: Eq. 8-9 of the paper, the alpha/beta extremes, values, API, bad input."""
from __future__ import annotations

import math

import pytest
import torch

from reldrop.masks import relevance_point_drop
from reldrop.masks.points import normalize_relevance_points, point_drop_mask

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")


def gen(seed: int = 0, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def test_normalize_eq8_hand_example():
    rn, deg = normalize_relevance_points(torch.tensor([[1.0, 3.0, 2.0, 5.0]]))
    assert rn.tolist() == [[0.0, 0.5, 0.25, 1.0]] and deg.tolist() == [False]
    # per-coordinate relevance (B, N, D) is summed over D first
    r3 = torch.tensor([[[1.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.5, 0.5, 1.0], [5.0, 0.0, 0.0]]])
    assert normalize_relevance_points(r3)[0].tolist() == [[0.0, 0.5, 0.25, 1.0]]


def test_normalize_eq8_per_sample_and_degenerate():
    torch.manual_seed(0)
    r = torch.randn(4, 50, dtype=torch.float64)
    r[2] = 0.0
    r[3] = -1.25
    rn, deg = normalize_relevance_points(r)
    for b in range(2):
        assert torch.allclose(rn[b], (r[b] - r[b].min()) / (r[b].max() - r[b].min()), rtol=0, atol=1e-15)
        assert rn[b].min() == 0 and rn[b].max() == 1
    assert deg.tolist() == [False, False, True, True]
    assert not torch.isnan(rn).any() and torch.equal(rn[2:], torch.zeros(2, 50, dtype=torch.float64))


def test_alpha0_drops_exactly_the_points_with_high_rnorm():
    rel = torch.tensor([[1.0, 3.0, 2.0, 5.0]])
    pts = torch.ones(1, 4, 3)
    _, mask = relevance_point_drop(pts, rel, alpha=0.0, beta=0.5, generator=gen(1))
    assert mask.tolist() == [[False, True, False, True]]  # Rnorm >= 0.5
    torch.manual_seed(2)
    rel = torch.randn(8, 500)
    for beta in (0.0, 0.15, 0.5, 0.85, 1.0):
        _, mask = relevance_point_drop(torch.randn(8, 500, 3), rel, alpha=0.0, beta=beta, generator=gen(3))
        assert torch.equal(mask, normalize_relevance_points(rel)[0] >= 1 - beta)


def test_alpha1_drops_a_beta_fraction_independent_of_relevance():
    B, N = 64, 1024
    torch.manual_seed(4)
    pts = torch.randn(B, N, 3)
    for beta in (0.15, 0.5, 0.85):
        _, m1 = relevance_point_drop(pts, torch.randn(B, N), alpha=1.0, beta=beta, generator=gen(5))
        _, m2 = relevance_point_drop(pts, torch.randn(B, N, 3), alpha=1.0, beta=beta, generator=gen(5))
        assert torch.equal(m1, m2)  # relevance plays no part
        frac = m1.double().mean().item()
        assert abs(frac - beta) < 5 * math.sqrt(beta * (1 - beta) / (B * N))


def test_mask_follows_eq9_with_the_documented_draw():
    B, N = 6, 300
    torch.manual_seed(6)
    pts, rel = torch.randn(B, N, 4), torch.randn(B, N)
    _, mask = relevance_point_drop(pts, rel, alpha=0.5, beta=0.15, generator=gen(7))
    v = torch.rand((B, N), generator=gen(7))  # the only draw
    rn = normalize_relevance_points(rel)[0]
    assert torch.equal(mask, 0.5 * v + 0.5 * rn >= 0.85)
    # relevant points are dropped more often than the others
    high = rn > 0.7
    assert mask[high].float().mean() > 5 * mask[~high].float().mean()


def test_degenerate_relevance_is_pure_random_drop():
    B, N = 4, 4000
    rel = torch.zeros(B, N)
    rel[1] = 3.0
    rel[3] = torch.randn(N)
    stats: dict = {}
    _, mask = relevance_point_drop(torch.randn(B, N, 3), rel, alpha=0.0, beta=0.2, generator=gen(8), stats=stats)
    v = torch.rand((B, N), generator=gen(8))
    assert stats["fallback"].tolist() == [True, True, True, False] and stats["num_fallback"] == 3
    assert torch.equal(mask[:3], v[:3] >= 0.8)  # decided by v alone, not "drop nothing"
    assert abs(mask[:3].double().mean().item() - 0.2) < 0.02
    assert torch.equal(stats["num_dropped"], mask.sum(1))


def test_beta_extremes():
    pts, rel = torch.randn(3, 200, 3), torch.randn(3, 200)
    for alpha in (0.3, 1.0):
        assert not relevance_point_drop(pts, rel, alpha=alpha, beta=0.0, generator=gen(9))[1].any()
    for alpha in (0.0, 0.5, 1.0):
        assert relevance_point_drop(pts, rel, alpha=alpha, beta=1.0, generator=gen(9))[1].all()
    # the paper's ">=": alpha = 0, beta = 0 still drops the most relevant point
    m = relevance_point_drop(pts, rel, alpha=0.0, beta=0.0, generator=gen(9))[1]
    assert torch.equal(m.nonzero()[:, 1], rel.argmax(1))


@pytest.mark.parametrize("value", [0.0, 2.5, [1.0, 2.0, 3.0, 4.0, 5.0], torch.tensor([9.0, 8.0, 7.0, 6.0, 5.0])])
def test_values_and_untouched_points(value):
    torch.manual_seed(10)
    pts = torch.randn(4, 100, 5) + 20.0
    out, mask = relevance_point_drop(pts, torch.randn(4, 100), alpha=0.5, beta=0.5, value=value, generator=gen(11))
    assert mask.any() and (~mask).any()
    assert torch.equal(out[~mask], pts[~mask])
    expect = torch.as_tensor(value, dtype=pts.dtype).expand(int(mask.sum()), 5)
    assert torch.equal(out[mask], expect)  # all D features of a dropped point


def test_inplace_semantics_and_reproducibility():
    pts, rel = torch.randn(4, 64, 3), torch.randn(4, 64, 3)
    p0, r0 = pts.clone(), rel.clone()
    for value in (0.0, [1.0, 2.0, 3.0]):
        out, mask = relevance_point_drop(pts, rel, beta=0.5, value=value, generator=gen(12))
        assert torch.equal(pts, p0) and torch.equal(rel, r0) and out.data_ptr() != pts.data_ptr()
        again = relevance_point_drop(pts, rel, beta=0.5, value=value, generator=gen(12))
        assert torch.equal(out, again[0]) and torch.equal(mask, again[1])
        other = relevance_point_drop(pts, rel, beta=0.5, value=value, generator=gen(13))
        assert not torch.equal(mask, other[1])
        q = pts.clone()
        out2, mask2 = relevance_point_drop(q, rel, beta=0.5, value=value, generator=gen(12), inplace=True)
        assert out2 is q and torch.equal(q, out) and torch.equal(mask2, mask) and torch.equal(rel, r0)


def test_batch_of_one_and_single_point():
    torch.manual_seed(14)
    rel = torch.randn(1, 50)
    out, mask = relevance_point_drop(torch.randn(1, 50, 3), rel, alpha=0.0, beta=0.3, generator=gen(14))
    assert mask.shape == (1, 50) and torch.equal(mask, normalize_relevance_points(rel)[0] >= 0.7)
    # one point: constant relevance -> the random rule v >= 1 - beta (v < 1: beta = 0 keeps it)
    stats: dict = {}
    _, mask = relevance_point_drop(torch.randn(1, 1, 3), torch.randn(1, 1), alpha=0.0, beta=0.0, stats=stats)
    assert mask.tolist() == [[False]] and stats["num_fallback"] == 1
    _, mask = relevance_point_drop(torch.randn(1, 1, 3), torch.randn(1, 1), alpha=0.0, beta=1.0)
    assert mask.tolist() == [[True]]


@pytest.mark.parametrize("dtype", DTYPES)
def test_dtypes(dtype):
    torch.manual_seed(15)
    pts, rel = torch.randn(3, 128, 3).to(dtype), torch.randn(3, 128).to(dtype)
    out, mask = relevance_point_drop(pts, rel, alpha=0.5, beta=0.3, value=1.0, generator=gen(16))
    assert out.dtype == dtype and mask.dtype == torch.bool and mask.shape == (3, 128)
    assert torch.equal(out[~mask], pts[~mask]) and bool((out[mask] == 1).all())
    v = torch.rand((3, 128), generator=gen(16))
    rn = normalize_relevance_points(rel)[0]
    assert torch.equal(mask, point_drop_mask(rn, torch.zeros(3, dtype=torch.bool), v.to(rn.dtype), 0.5, 0.3))


@CUDA
@pytest.mark.parametrize("gen_device", ["cuda", "cpu"])
def test_cuda(gen_device):
    pts = torch.randn(8, 1024, 3, device="cuda")
    rel = torch.randn(8, 1024, device="cuda")
    out, mask = relevance_point_drop(pts, rel, alpha=0.0, beta=0.15, generator=gen(17, gen_device))
    assert out.device == pts.device and mask.device == pts.device
    assert torch.equal(mask, normalize_relevance_points(rel)[0] >= 0.85)
    a = relevance_point_drop(pts, rel, alpha=1.0, beta=0.15, generator=gen(18, gen_device))
    b = relevance_point_drop(pts, rel, alpha=1.0, beta=0.15, generator=gen(18, gen_device))
    assert torch.equal(a[1], b[1]) and abs(a[1].float().mean().item() - 0.15) < 0.02


P = torch.randn(2, 16, 3)
RP = torch.randn(2, 16)
PNAN = P.clone()
PNAN[0, 0, 0] = float("nan")
RINF = RP.clone()
RINF[1, 3] = -float("inf")

BAD = [
    ((P.numpy(), RP), {}, TypeError, "points"),
    ((P[0], RP), {}, ValueError, "points"),
    ((P[..., :2], RP), {}, ValueError, "points"),
    ((P.int(), RP), {}, TypeError, "points"),
    ((P[:0], RP[:0]), {}, ValueError, "points"),
    ((P[:, :0], RP[:, :0]), {}, ValueError, "points"),
    ((P, RP.long()), {}, TypeError, "relevance"),
    ((P, RP[:1]), {}, ValueError, "relevance"),
    ((P, RP[:, :15]), {}, ValueError, "relevance"),
    ((P, RP[:, :, None]), {}, ValueError, "relevance"),
    ((P, RP[0]), {}, ValueError, "relevance"),
    ((PNAN, RP), {}, ValueError, "points"),
    ((P, RINF), {}, ValueError, "relevance"),
    ((P, RP), {"alpha": -0.5}, ValueError, "alpha"),
    ((P, RP), {"alpha": 1.5}, ValueError, "alpha"),
    ((P, RP), {"beta": 2}, ValueError, "beta"),
    ((P, RP), {"beta": "0.1"}, TypeError, "beta"),
    ((P, RP), {"value": [0.0, 0.0]}, ValueError, "value"),
    ((P, RP), {"value": "random"}, TypeError, "value"),
    ((P, RP), {"value": float("inf")}, ValueError, "value"),
    ((P, RP), {"generator": "seed"}, TypeError, "generator"),
    ((P, RP), {"inplace": None}, TypeError, "inplace"),
]


@pytest.mark.parametrize("args,kwargs,exc,name", BAD)
def test_bad_input_names_the_argument(args, kwargs, exc, name):
    with pytest.raises(exc, match=rf"\b{name}\b"):
        relevance_point_drop(*args, **kwargs)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_input_is_rejected_in_every_dtype(dtype, bad):
    pts, rel = torch.randn(2, 8, 3).to(dtype), torch.randn(2, 8, 3).to(dtype)
    pb, rb = pts.clone(), rel.clone()
    pb[1, 7, 2] = bad
    rb[0, 3, 1] = bad
    with pytest.raises(ValueError, match="^points contains NaN"):
        relevance_point_drop(pb, rel)
    with pytest.raises(ValueError, match="^relevance contains NaN"):
        relevance_point_drop(pts, rb)


def test_value_must_fit_the_dtype():
    with pytest.raises(ValueError, match=r"\bvalue\b"):
        relevance_point_drop(P.half(), RP, value=1e6)
