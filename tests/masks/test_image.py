"""relevance_erase / random_erase and their building blocks: paper formulas, block law, borders, API."""
from __future__ import annotations

import math

import pytest
import torch

from reldrop.masks import random_erase, relevance_erase
from reldrop.masks.image import (
    REJECT_TRIES,
    block_fits,
    block_mask,
    centres_from_relevance,
    fill_masked,
    normalize_relevance_2d,
    sample_block_sizes,
)

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")


def gen(seed: int = 0, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def hot_pixel(B: int, C: int, H: int, W: int, rows, cols) -> torch.Tensor:
    """Relevance (B, C, H, W): small noise plus one clearly most relevant pixel per sample."""
    r = torch.rand(B, C, H, W, generator=gen(123)) * 0.1
    for b in range(B):
        r[b, :, rows[b], cols[b]] = 5.0
    return r


# ----------------------------------------------------------------------------- Eq. 3, centroid


def test_normalize_eq3_hand_example():
    # R2d = [[-2, 0], [1, 2]] -> max|R2d| = 2 -> (R2d + 2) / 4
    r = torch.tensor([[[-2.0, 0.0], [1.0, 2.0]]])
    expected = torch.tensor([[[0.0, 0.5], [0.75, 1.0]]])
    assert torch.equal(normalize_relevance_2d(r), expected)
    # the same relevance split over 2 channels is summed first
    r4 = torch.stack([r[0] * 0.25, r[0] * 0.75])[None]
    assert torch.allclose(normalize_relevance_2d(r4), expected)


def test_normalize_eq3_matches_formula_per_sample():
    torch.manual_seed(0)
    r = torch.randn(5, 3, 7, 9, dtype=torch.float64)
    rn = normalize_relevance_2d(r)
    for b in range(5):
        r2d = r[b].sum(0)
        m = r2d.abs().max()
        assert torch.allclose(rn[b], (r2d + m) / (2 * m), rtol=0, atol=1e-15)
    assert rn.min() >= 0 and rn.max() <= 1
    # the extreme of larger magnitude maps to exactly 0 or 1
    assert bool(((rn.amin((1, 2)) == 0) | (rn.amax((1, 2)) == 1)).all())


def test_normalize_all_zero_gives_half_not_nan():
    rn = normalize_relevance_2d(torch.zeros(2, 3, 4, 4))
    assert torch.equal(rn, torch.full((2, 4, 4), 0.5))


def test_centre_is_argmax_of_rnorm_and_mask_contains_it():
    torch.manual_seed(1)
    B, C, H, W = 16, 3, 12, 10
    x = torch.randn(B, C, H, W)
    r = torch.randn(B, C, H, W)
    stats: dict = {}
    _, mask = relevance_erase(x, r, p=1.0, generator=gen(2), stats=stats)
    idx = normalize_relevance_2d(r).reshape(B, -1).argmax(1)
    assert torch.equal(stats["rows"], idx // W) and torch.equal(stats["cols"], idx % W)
    assert bool(mask[torch.arange(B), idx // W, idx % W].all())


def test_interior_block_is_centred_on_the_argmax():
    B, H, W = 32, 32, 32
    rows = torch.randint(12, 20, (B,), generator=gen(3))
    cols = torch.randint(12, 20, (B,), generator=gen(4))
    r = hot_pixel(B, 3, H, W, rows, cols)
    stats: dict = {}
    _, mask = relevance_erase(torch.zeros(B, 3, H, W), r, p=1.0, scale=(0.02, 0.05), generator=gen(5), stats=stats)
    h, w = stats["heights"], stats["widths"]
    assert bool((h < 24).all() and (w < 24).all())  # blocks fit: no clipping in this test
    for b in range(B):
        ys, xs = torch.nonzero(mask[b], as_tuple=True)
        assert ys.min() == rows[b] - h[b] // 2 and ys.max() == rows[b] - h[b] // 2 + h[b] - 1
        assert xs.min() == cols[b] - w[b] // 2 and xs.max() == cols[b] - w[b] // 2 + w[b] - 1
        assert int(mask[b].sum()) == int(h[b] * w[b])  # a full rectangle, area h*w
        if h[b] % 2 == 1:  # odd sizes are exactly centred
            assert rows[b] - ys.min() == ys.max() - rows[b]


def test_topk_picks_among_the_k_most_relevant():
    B, H, W = 400, 8, 8
    r2d = torch.zeros(B, H, W)
    top = [(1, 1), (2, 6), (5, 3), (6, 6), (7, 0)]
    for i, (y, x) in enumerate(top):
        r2d[:, y, x] = 10.0 + i
    r2d[:, 0, 0] = 1.0  # 6th best: never picked with k=5
    rows, cols, fb = centres_from_relevance(r2d, centre="topk", k=5, generator=gen(6))
    assert not fb.any()
    picked = list(zip(rows.tolist(), cols.tolist()))
    assert set(picked) == set(top)  # all five reached, nothing else
    counts = torch.tensor([picked.count(t) for t in top], dtype=torch.float)
    assert bool((counts > B / 5 * 0.6).all())  # roughly uniform (expected 80 each, sd ~8)
    # k=1 is the argmax
    rows1, cols1, _ = centres_from_relevance(r2d, centre="topk", k=1, generator=gen(7))
    assert bool((rows1 == 7).all() and (cols1 == 0).all())


def test_topk_default_k_is_one_percent_and_k_is_capped():
    H = W = 20  # 400 pixels -> k = 4
    r = torch.arange(H * W, dtype=torch.float).reshape(1, H, W).expand(300, H, W)
    rows, cols, _ = centres_from_relevance(r, centre="topk", generator=gen(8))
    assert set((rows * W + cols).tolist()) == {396, 397, 398, 399}
    rows, cols, _ = centres_from_relevance(r[:, :3, :3].contiguous(), centre="topk", k=1000, generator=gen(9))
    assert set((rows * 3 + cols).tolist()) == set(range(9))  # k capped at H*W: every pixel


def test_degenerate_relevance_falls_back_to_random_centre():
    B, H, W = 64, 16, 16
    r = torch.zeros(B, 3, H, W)
    r[1::2] = 0.7  # constant but non-zero is degenerate too
    r[0] = torch.randn(3, H, W)  # one normal sample
    x = torch.randn(B, 3, H, W)
    stats: dict = {}
    out, mask = relevance_erase(x, r, p=1.0, generator=gen(10), stats=stats)
    assert stats["num_fallback"] == B - 1
    assert not stats["fallback"][0] and bool(stats["fallback"][1:].all())
    assert not torch.isnan(out).any()
    assert bool(mask.flatten(1).any(1).all())
    centres = set(zip(stats["rows"][1:].tolist(), stats["cols"][1:].tolist()))
    assert len(centres) > 20  # random, not always the top-left corner
    # a sample skipped by the coin is not counted as a fallback
    relevance_erase(x, r, p=0.0, generator=gen(10), stats=stats)
    assert stats["num_fallback"] == 0


# ----------------------------------------------------------------------------- block law


def test_block_size_law_bounds_and_rounding():
    B, T, H, W = 4000, 3, 24, 40
    s = sample_block_sizes(B, H, W, scale=(0.1, 0.3), ratio=(0.5, 3.0), tries=T, generator=gen(11))
    assert s.heights.shape == (B, T) and s.heights.dtype == torch.long
    assert bool((s.areas >= 0.1 * H * W).all() and (s.areas <= 0.3 * H * W).all())
    assert bool((s.aspects >= 0.5 * (1 - 1e-6)).all() and (s.aspects <= 3.0 * (1 + 1e-6)).all())
    assert torch.equal(s.heights, torch.sqrt(s.areas * s.aspects).round().long().clamp_min(1))
    assert torch.equal(s.widths, torch.sqrt(s.areas / s.aspects).round().long().clamp_min(1))
    # the range is used: both ends are approached
    assert s.areas.min() < 0.11 * H * W and s.areas.max() > 0.29 * H * W
    # rounded area stays within half a pixel per side of S_O
    a, b = torch.sqrt(s.areas * s.aspects), torch.sqrt(s.areas / s.aspects)
    hw = (s.heights * s.widths).double()
    assert bool((hw >= (a - 0.5) * (b - 0.5) - 1e-3).all() and (hw <= (a + 0.5) * (b + 0.5) + 1e-3).all())


def test_block_sizes_at_least_one_pixel():
    s = sample_block_sizes(500, 4, 4, scale=(0.001, 0.002), ratio=(0.01, 100.0), generator=gen(12))
    assert bool((s.heights >= 1).all() and (s.widths >= 1).all())


def test_aspect_ratio_is_log_uniform():
    n = 20000
    lo, hi = 0.3, 1 / 0.3
    s = sample_block_sizes(n, 32, 32, ratio=(lo, hi), generator=gen(13))
    u = ((s.aspects.double().log() - math.log(lo)) / (math.log(hi) - math.log(lo))).flatten().sort().values
    ks = (u - torch.arange(1, n + 1, dtype=torch.double) / n).abs().max().item()
    assert ks < 1.63 / math.sqrt(n)  # Kolmogorov-Smirnov, 1 % level
    # log-uniform on (r, 1/r) is symmetric: P(r_O < 1) = 1/2 (a plain uniform would give 0.23)
    assert abs((s.aspects < 1).double().mean().item() - 0.5) < 0.02


def test_block_mask_union_of_several_blocks_and_clipping():
    rows = torch.tensor([[0, 5]])
    cols = torch.tensor([[0, 5]])
    h = torch.tensor([[3, 1]])
    w = torch.tensor([[3, 2]])
    m = block_mask(6, 7, rows, cols, h, w)
    expected = torch.zeros(1, 6, 7, dtype=torch.bool)
    expected[0, 0:2, 0:2] = True  # rows/cols [-1, 2) clipped to [0, 2)
    expected[0, 5, 4:6] = True  # width 2 centred on col 5: [4, 6)
    assert torch.equal(m, expected)
    assert block_fits(6, 7, rows, cols, h, w).tolist() == [[False, True]]


# ----------------------------------------------------------------------------- borders


def test_clip_at_corner_erases_the_clipped_block():
    B, H, W = 50, 16, 16
    r = hot_pixel(B, 1, H, W, [0] * B, [0] * B)
    stats: dict = {}
    _, mask = relevance_erase(torch.ones(B, 1, H, W), r, p=1.0, generator=gen(14), stats=stats)
    h, w = stats["heights"], stats["widths"]
    assert stats["num_erased"] == B and bool(mask[:, 0, 0].all())
    # clipped rectangle [0, h - h//2) x [0, w - w//2)
    eh = (h - h // 2).clamp_max(H)
    ew = (w - w // 2).clamp_max(W)
    assert torch.equal(mask.sum((1, 2)), eh * ew)


def test_reject_at_corner_leaves_sample_untouched():
    B, H, W = 20, 16, 16
    r = hot_pixel(B, 3, H, W, [0] * B, [H - 1] * B)
    x = torch.randn(B, 3, H, W)
    stats: dict = {}
    out, mask = relevance_erase(x, r, p=1.0, border="reject", generator=gen(15), stats=stats)
    # min area 0.02*256 = 5.1 px needs h or w >= 2 -> a centred block cannot fit at a corner
    assert not mask.any() and torch.equal(out, x)
    assert bool(stats["rejected"].all()) and stats["num_erased"] == 0


def test_reject_uses_first_size_that_fits():
    B, H, W = 200, 16, 16
    torch.manual_seed(16)
    rows = torch.randint(0, H, (B,))
    cols = torch.randint(0, W, (B,))
    r = hot_pixel(B, 3, H, W, rows, cols)
    stats: dict = {}
    _, mask = relevance_erase(torch.zeros(B, 3, H, W), r, p=1.0, border="reject", generator=gen(17), stats=stats)
    # replay the documented draw order: coin (B,), then sizes (2, B, T)
    g = gen(17)
    torch.rand(B, generator=g)
    s = sample_block_sizes(B, H, W, tries=REJECT_TRIES, generator=g)
    fits = block_fits(H, W, rows[:, None], cols[:, None], s.heights, s.widths)
    placed = fits.any(1)
    assert torch.equal(stats["erased"], placed) and 0 < int(placed.sum()) < B
    for b in torch.nonzero(placed).flatten().tolist():
        t = int(torch.nonzero(fits[b])[0])
        assert (stats["heights"][b], stats["widths"][b]) == (s.heights[b, t], s.widths[b, t])
        assert int(mask[b].sum()) == int(s.heights[b, t] * s.widths[b, t])  # inside: never clipped
    assert not mask[~placed].any()


# ----------------------------------------------------------------------------- p, values, API


def test_p0_is_identity_bit_for_bit():
    x = torch.randn(8, 3, 10, 10)
    x[0, 0, 0, 0] = -0.0
    out, mask = relevance_erase(x, torch.randn(8, 10, 10), p=0.0, value=7.0, generator=gen(18))
    assert torch.equal(out.view(torch.int32), x.view(torch.int32)) and not mask.any()
    assert out.data_ptr() != x.data_ptr()  # a new tensor, not an alias


def test_p1_erases_every_sample():
    x = torch.randn(64, 3, 8, 8)
    for centre in ("argmax", "topk", "random"):
        out, mask = relevance_erase(x, torch.randn(64, 3, 8, 8), p=1.0, centre=centre, generator=gen(19))
        assert bool(mask.flatten(1).any(1).all())
        assert bool((out != x).flatten(1).any(1).all())


def test_p_is_a_per_sample_coin():
    B = 4000
    stats: dict = {}
    _, mask = random_erase(torch.randn(B, 1, 4, 4), p=0.3, generator=gen(20), stats=stats)
    frac = mask.flatten(1).any(1).double().mean().item()
    assert abs(frac - 0.3) < 4 * math.sqrt(0.3 * 0.7 / B)
    assert torch.equal(stats["erased"], mask.flatten(1).any(1))


@pytest.mark.parametrize("value", [0.0, -1.5, [0.1, 0.2, 0.3], torch.tensor([1.0, 2.0, 3.0]), "random"])
def test_value_modes(value):
    torch.manual_seed(21)
    x = torch.randn(16, 3, 20, 20) + 10.0  # far from every fill value
    out, mask = relevance_erase(x, torch.randn(16, 3, 20, 20), p=1.0, value=value, generator=gen(22))
    m = mask[:, None].expand_as(x)
    assert torch.equal(out[~m], x[~m])
    inside = out.permute(1, 0, 2, 3)[:, mask]  # (C, n_masked)
    if value == "random":
        assert inside.abs().max() < 8 and abs(inside.mean().item()) < 0.1 and abs(inside.std().item() - 1) < 0.1
        assert not torch.equal(inside[0], inside[1])  # per channel, per pixel
    else:
        expect = torch.as_tensor(value, dtype=x.dtype).reshape(-1, 1).expand_as(inside)
        assert torch.equal(inside, expect)


def test_inplace_semantics():
    x = torch.randn(6, 3, 9, 9)
    r = torch.randn(6, 3, 9, 9)
    x0, r0 = x.clone(), r.clone()
    for value in (0.0, [1.0, 2.0, 3.0], "random"):
        out, mask = relevance_erase(x, r, p=1.0, value=value, generator=gen(23))
        assert torch.equal(x, x0) and torch.equal(r, r0) and out.data_ptr() != x.data_ptr()
        y = x.clone()
        out2, mask2 = relevance_erase(y, r, p=1.0, value=value, generator=gen(23), inplace=True)
        assert out2 is y and torch.equal(y, out) and torch.equal(mask2, mask)
        assert torch.equal(r, r0)


def test_generator_reproducibility_and_seed_dependence():
    x, r = torch.randn(32, 3, 16, 16), torch.randn(32, 3, 16, 16)
    a = relevance_erase(x, r, p=0.5, value="random", generator=gen(24))
    b = relevance_erase(x, r, p=0.5, value="random", generator=gen(24))
    c = relevance_erase(x, r, p=0.5, value="random", generator=gen(25))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
    torch.manual_seed(3)
    d = random_erase(x, p=0.5)
    torch.manual_seed(3)
    e = random_erase(x, p=0.5)
    assert torch.equal(d[1], e[1])  # generator=None uses (and is reproducible via) the global seed


def test_random_erase_is_relevance_erase_with_random_centre_and_shares_draws():
    x, r = torch.randn(32, 3, 16, 16), torch.randn(32, 3, 16, 16)
    sa: dict = {}
    sb: dict = {}
    sc: dict = {}
    a = random_erase(x, p=0.5, border="reject", generator=gen(26), stats=sa)
    b = relevance_erase(x, None, p=0.5, centre="random", border="reject", generator=gen(26), stats=sb)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    relevance_erase(x, r, p=0.5, centre="argmax", border="clip", generator=gen(26), stats=sc)
    # paired comparison: same coins and sizes for RelDrop and RE, only the centre differs
    assert torch.equal(sa["coin"], sc["coin"])
    assert not torch.equal(sa["rows"] * 16 + sa["cols"], sc["rows"] * 16 + sc["cols"])


def test_relevance_2d_and_4d_forms_agree():
    x, r = torch.randn(8, 3, 12, 12), torch.randn(8, 3, 12, 12, dtype=torch.float64)
    a = relevance_erase(x, r, p=1.0, generator=gen(27))
    b = relevance_erase(x, r.sum(1), p=1.0, generator=gen(27))
    assert torch.equal(a[1], b[1])


def test_batch_of_one_and_minimal_image():
    out, mask = relevance_erase(torch.randn(1, 3, 2, 2), torch.randn(1, 2, 2), p=1.0, generator=gen(28))
    assert mask.shape == (1, 2, 2) and mask.any()
    out, mask = random_erase(torch.randn(1, 1, 5, 3), p=1.0, border="reject", generator=gen(29))
    assert mask.shape == (1, 5, 3)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dtypes(dtype):
    x = torch.randn(4, 3, 8, 8).to(dtype)
    r = torch.randn(4, 3, 8, 8).to(dtype)
    out, mask = relevance_erase(x, r, p=1.0, value=[0.5, -0.25, 2.0], generator=gen(30))
    assert out.dtype == dtype and mask.dtype == torch.bool and mask.shape == (4, 8, 8)
    assert torch.equal(out[:, 1][mask], torch.full((int(mask.sum()),), -0.25, dtype=dtype))
    assert torch.equal(out[~mask[:, None].expand_as(x)], x[~mask[:, None].expand_as(x)])
    idx = normalize_relevance_2d(r).reshape(4, -1).argmax(1)
    assert bool(mask.reshape(4, -1)[torch.arange(4), idx].all())


def test_channels_last_is_kept():
    x = torch.randn(4, 3, 8, 8).to(memory_format=torch.channels_last)
    for value in (0.0, [1.0, 2.0, 3.0], "random"):
        out, _ = random_erase(x, p=1.0, value=value, generator=gen(31))
        assert out.is_contiguous(memory_format=torch.channels_last)


def test_fill_masked_alone():
    x = torch.zeros(1, 2, 2, 2)
    m = torch.tensor([[[True, False], [False, True]]])
    out = fill_masked(x, m, [1.0, 2.0])
    assert out[0, 0].tolist() == [[1.0, 0.0], [0.0, 1.0]] and out[0, 1].tolist() == [[2.0, 0.0], [0.0, 2.0]]


@CUDA
@pytest.mark.parametrize("gen_device", ["cuda", "cpu"])
def test_cuda(gen_device):
    x = torch.randn(16, 3, 32, 32, device="cuda")
    r = torch.randn(16, 3, 32, 32, device="cuda")
    stats: dict = {}
    out, mask = relevance_erase(x, r, p=1.0, value="random", generator=gen(32, gen_device), stats=stats)
    assert out.device == x.device and mask.device == x.device and mask.flatten(1).any(1).all()
    idx = r.sum(1).reshape(16, -1).argmax(1)
    assert bool(mask.reshape(16, -1)[torch.arange(16, device="cuda"), idx].all())
    again = relevance_erase(x, r, p=1.0, value="random", generator=gen(32, gen_device))
    assert torch.equal(out, again[0])
    out2, mask2 = random_erase(x, p=0.5, border="reject", generator=gen(33, gen_device))
    assert out2.device == x.device
    m = mask2[:, None].expand_as(x)
    assert torch.equal(out2[~m], x[~m]) and bool((out2[m] == 0).all())


@CUDA
def test_cuda_relevance_on_other_device_is_rejected():
    with pytest.raises(ValueError, match="relevance"):
        relevance_erase(torch.randn(2, 3, 4, 4, device="cuda"), torch.randn(2, 3, 4, 4))


# ----------------------------------------------------------------------------- bad input


X = torch.randn(2, 3, 8, 8)
R = torch.randn(2, 3, 8, 8)
NAN = X.clone()
NAN[0, 0, 0, 0] = float("nan")
INF = R.clone()
INF[1, 2, 3, 4] = float("inf")

BAD = [
    # (args, kwargs, exception, name that the message must contain)
    ((X.numpy(), R), {}, TypeError, "x"),
    ((X[0], R), {}, ValueError, "x"),
    ((X[None], R), {}, ValueError, "x"),
    ((X.long(), R), {}, TypeError, "x"),
    ((X, R.long()), {}, TypeError, "relevance"),
    ((X, R[:, :, :7]), {}, ValueError, "relevance"),
    ((X, R[:, :1]), {}, ValueError, "relevance"),
    ((X, R[:1]), {}, ValueError, "relevance"),
    ((X, R[:, 0, 0]), {}, ValueError, "relevance"),
    ((X, None), {}, TypeError, "relevance"),
    ((NAN, R), {}, ValueError, "x"),
    ((X, INF), {}, ValueError, "relevance"),
    ((X[:0], R[:0]), {}, ValueError, "x"),
    ((X[:, :, :1], R[:, :, :1]), {}, ValueError, "x"),
    ((X[:, :, :, :1], R[:, :, :, :1]), {}, ValueError, "x"),
    ((X, R), {"p": -0.1}, ValueError, "p"),
    ((X, R), {"p": 1.01}, ValueError, "p"),
    ((X, R), {"p": "0.5"}, TypeError, "p"),
    ((X, R), {"p": float("nan")}, ValueError, "p"),
    ((X, R), {"scale": (0.4, 0.1)}, ValueError, "scale"),
    ((X, R), {"scale": (0.0, 0.4)}, ValueError, "scale"),
    ((X, R), {"scale": (0.1, 1.5)}, ValueError, "scale"),
    ((X, R), {"scale": (0.1,)}, TypeError, "scale"),
    ((X, R), {"scale": 0.3}, TypeError, "scale"),
    ((X, R), {"ratio": (-1.0, 2.0)}, ValueError, "ratio"),
    ((X, R), {"ratio": (3.0, 0.3)}, ValueError, "ratio"),
    ((X, R), {"ratio": (0.3, float("inf"))}, ValueError, "ratio"),
    ((X, R), {"value": [1.0, 2.0]}, ValueError, "value"),
    ((X, R), {"value": "noise"}, ValueError, "value"),
    ((X, R), {"value": float("nan")}, ValueError, "value"),
    ((X, R), {"value": None}, TypeError, "value"),
    ((X, R), {"centre": "max"}, ValueError, "centre"),
    ((X, R), {"border": "wrap"}, ValueError, "border"),
    ((X, R), {"centre": "topk", "k": 0}, ValueError, "k"),
    ((X, R), {"centre": "topk", "k": 2.5}, TypeError, "k"),
    ((X, R), {"k": 3}, ValueError, "k"),
    ((X, R), {"generator": 0}, TypeError, "generator"),
    ((X, R), {"inplace": 1}, TypeError, "inplace"),
    ((X, R), {"stats": []}, TypeError, "stats"),
]


@pytest.mark.parametrize("args,kwargs,exc,name", BAD)
def test_bad_input_names_the_argument(args, kwargs, exc, name):
    with pytest.raises(exc, match=rf"\b{name}\b"):
        relevance_erase(*args, **kwargs)


@pytest.mark.parametrize(
    "x,kwargs,exc,name",
    [
        (NAN, {}, ValueError, "x"),
        (X[:0], {}, ValueError, "x"),
        (X, {"p": 2}, ValueError, "p"),
        (X, {"scale": (0.5, 0.2)}, ValueError, "scale"),
        (X, {"border": "x"}, ValueError, "border"),
    ],
)
def test_random_erase_bad_input(x, kwargs, exc, name):
    with pytest.raises(exc, match=rf"\b{name}\b"):
        random_erase(x, **kwargs)


def test_bad_input_leaves_inputs_untouched():
    x, r = X.clone(), INF.clone()
    with pytest.raises(ValueError):
        relevance_erase(x, r, p=1.0, inplace=True)
    assert torch.equal(x, X)


def test_finite_check_covers_every_dtype_and_reports_sum_overflow():
    for dtype in DTYPES:
        for bad in (float("nan"), float("inf"), -float("inf")):
            x = torch.randn(2, 3, 4, 4).to(dtype)
            r = torch.randn(2, 3, 4, 4).to(dtype)
            xb, rb = x.clone(), r.clone()
            xb[1, 2, 3, 0] = bad
            rb[1, 0, 0, 3] = bad
            with pytest.raises(ValueError, match=r"^x contains NaN"):
                relevance_erase(xb, r)
            with pytest.raises(ValueError, match=r"^relevance contains NaN"):
                relevance_erase(x, rb)
            with pytest.raises(ValueError, match=r"^x contains NaN"):
                random_erase(xb)
    big = torch.full((1, 2, 3, 3), 3e38)  # finite, but the channel sum overflows float32
    with pytest.raises(ValueError, match="relevance's channel sum overflows"):
        relevance_erase(torch.zeros(1, 2, 3, 3), big)
    x64 = torch.full((1, 1, 2, 2), 1e300, dtype=torch.float64)  # finite in float64: accepted
    relevance_erase(x64, x64, p=1.0)


def test_value_must_fit_the_dtype_and_autograd_input_works():
    with pytest.raises(ValueError, match=r"\bvalue\b"):
        relevance_erase(X.half(), R, value=1e6)
    with pytest.raises(ValueError, match=r"\bvalue\b"):
        random_erase(X.half(), value=[0.0, 1e6, 0.0])
    x = X.clone().requires_grad_(True)
    out, mask = relevance_erase(x, R, p=1.0, value=[1.0, 2.0, 3.0], generator=gen(34))
    out.sum().backward()  # gradient 1 outside the mask, 0 inside
    assert torch.equal(x.grad, (~mask[:, None]).expand_as(x).float())
