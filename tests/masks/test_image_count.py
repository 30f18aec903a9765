"""Several blocks per image (count / max_count) and per-block random colours (value="rand"), timm-style."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import reldrop
from reldrop.masks import random_erase, relevance_erase
from reldrop.masks.image import block_mask


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _expected_centres(r2d: torch.Tensor, stats: dict) -> None:
    """Block k's centre is the argmax of the relevance outside the (clipped) blocks 1..k-1, per sample."""
    B, H, W = r2d.shape
    K = stats["rows"].shape[1]
    for b in range(B):
        covered = torch.zeros(H, W, dtype=torch.bool)
        for k in range(K):
            masked = r2d[b].masked_fill(covered, float("-inf"))
            i = int(masked.flatten().argmax())
            assert (int(stats["rows"][b, k]), int(stats["cols"][b, k])) == (i // W, i % W), (b, k)
            covered |= block_mask(H, W, stats["rows"][b:b + 1, k], stats["cols"][b:b + 1, k],
                                  stats["heights"][b:b + 1, k], stats["widths"][b:b + 1, k])[0]


def test_count_2_second_block_at_most_relevant_pixel_outside_the_first() -> None:
    torch.manual_seed(0)
    B, C, H, W = 24, 3, 20, 18
    x = torch.randn(B, C, H, W, dtype=torch.float64)
    r = torch.randn(B, C, H, W, dtype=torch.float64)
    stats: dict = {}
    out, mask = relevance_erase(x, r, p=1.0, count=2, scale=(0.05, 0.3), generator=gen(1), stats=stats)
    assert stats["rows"].shape == (B, 2) and stats["blocks"].all() and (stats["count"] == 2).all()
    _expected_centres(r.sum(1), stats)
    # the mask is exactly the union of the two clipped blocks, filled with 0
    union = block_mask(H, W, stats["rows"], stats["cols"], stats["heights"], stats["widths"])
    assert torch.equal(mask, union)
    assert torch.equal(out[mask[:, None].expand_as(x)], torch.zeros(int(mask.sum()) * C, dtype=x.dtype))
    assert torch.equal(out[~mask[:, None].expand_as(x)], x[~mask[:, None].expand_as(x)])
    # the second centre lies outside the first block
    first = block_mask(H, W, stats["rows"][:, 0], stats["cols"][:, 0], stats["heights"][:, 0], stats["widths"][:, 0])
    assert not first[torch.arange(B), stats["rows"][:, 1], stats["cols"][:, 1]].any()


def test_count_3_and_topk_centres_stay_outside_earlier_blocks() -> None:
    torch.manual_seed(1)
    B, H, W = 16, 16, 16
    x = torch.randn(B, 3, H, W)
    r = torch.randn(B, H, W)
    stats: dict = {}
    relevance_erase(x, r, p=1.0, count=3, generator=gen(2), stats=stats)
    _expected_centres(r, stats)
    relevance_erase(x, r, p=1.0, count=3, centre="topk", k=5, generator=gen(2), stats=stats)
    for k in (1, 2):
        earlier = block_mask(H, W, stats["rows"][:, :k], stats["cols"][:, :k], stats["heights"][:, :k],
                             stats["widths"][:, :k])
        assert not earlier[torch.arange(B), stats["rows"][:, k], stats["cols"][:, k]].any()


def test_each_block_area_is_scaled_by_the_count_like_timm() -> None:
    x = torch.zeros(64, 1, 40, 40)
    s1: dict = {}
    s2: dict = {}
    relevance_erase(x, torch.randn(64, 40, 40), p=1.0, scale=(0.2, 0.2), ratio=(1.0, 1.0), stats=s1, generator=gen(3))
    random_erase(x, p=1.0, scale=(0.2, 0.2), ratio=(1.0, 1.0), count=2, stats=s2, generator=gen(3))
    assert (s1["heights"] == 18).all()  # round(sqrt(0.2 * 1600)) = 18
    assert (s2["heights"] == 13).all() and (s2["widths"] == 13).all()  # round(sqrt(0.1 * 1600)) = 13


def test_random_erase_count_pairs_with_relevance_erase() -> None:
    torch.manual_seed(4)
    x = torch.randn(32, 3, 24, 24)
    a: dict = {}
    b: dict = {}
    random_erase(x, p=0.5, count=2, max_count=4, generator=gen(5), stats=a)
    relevance_erase(x, torch.randn(32, 24, 24), p=0.5, count=2, max_count=4, generator=gen(5), stats=b)
    for key in ("coin", "count", "heights", "widths"):
        assert torch.equal(a[key], b[key]), key
    again = random_erase(x, p=0.5, count=2, max_count=4, generator=gen(5))
    assert torch.equal(again[1], random_erase(x, p=0.5, count=2, max_count=4, generator=gen(5))[1])


def test_max_count_draws_a_count_per_image_in_range() -> None:
    B = 400
    x = torch.randn(B, 1, 16, 16)
    stats: dict = {}
    relevance_erase(x, torch.randn(B, 16, 16), p=1.0, count=1, max_count=3, scale=(0.01, 0.02), generator=gen(6),
                    stats=stats)
    n = stats["count"]
    assert stats["rows"].shape == (B, 3) and set(n.tolist()) == {1, 2, 3}
    assert (n.bincount(minlength=4)[1:] > B / 3 * 0.7).all()  # roughly uniform (expected 133 each)
    # exactly the first n blocks of each image are erased
    assert torch.equal(stats["blocks"], torch.arange(3)[None, :] < n[:, None])
    # the mask is the union of the erased blocks only (zero-size blocks stand for the others)
    _, mask = relevance_erase(x, torch.randn(B, 16, 16), p=1.0, count=1, max_count=3, scale=(0.01, 0.02),
                              generator=gen(6), stats=stats)
    on = stats["blocks"]
    assert torch.equal(mask, block_mask(16, 16, stats["rows"], stats["cols"], stats["heights"] * on,
                                        stats["widths"] * on))


def test_value_rand_is_one_colour_per_block_and_channel() -> None:
    torch.manual_seed(7)
    B, C, H, W = 8, 3, 32, 32
    x = torch.full((B, C, H, W), 100.0)
    r = torch.zeros(B, H, W)
    r[:, 4, 4] = 3.0  # block 1 there; block 2 at the pixel of relevance 2, far away
    r[:, 26, 26] = 2.0
    stats: dict = {}
    out, mask = relevance_erase(x, r, p=1.0, count=2, value="rand", scale=(0.02, 0.02), ratio=(1.0, 1.0),
                                generator=gen(8), stats=stats)
    assert stats["rows"].tolist() == [[4, 26]] * B
    blocks = [block_mask(H, W, stats["rows"][:, k], stats["cols"][:, k], stats["heights"][:, k],
                         stats["widths"][:, k]) for k in range(2)]
    assert not (blocks[0] & blocks[1]).any() and torch.equal(mask, blocks[0] | blocks[1])
    colours = []
    for bm in blocks:
        vals = out.permute(0, 2, 3, 1)[bm].view(B, -1, C)  # (B, pixels, C)
        assert torch.equal(vals, vals[:, :1].expand_as(vals))  # constant inside a block
        colours.append(vals[:, 0])
    colours = torch.stack(colours, 1)  # (B, 2, C)
    assert colours.abs().max() < 10 and colours.std() > 0.3  # N(0, 1) draws, not the image
    assert len(set(colours.flatten().tolist())) == B * 2 * C  # every block and channel its own
    again, _ = relevance_erase(x, r, p=1.0, count=2, value="rand", scale=(0.02, 0.02), ratio=(1.0, 1.0),
                               generator=gen(8))
    assert torch.equal(out, again)
    # one block: one colour per image
    out1, m1 = random_erase(x, p=1.0, value="rand", generator=gen(9))
    vals = out1.permute(0, 2, 3, 1)[m1]
    assert vals.abs().max() < 10 and len(set(map(tuple, vals.tolist()))) == B


def test_timm_value_names_are_aliases() -> None:
    x = torch.randn(6, 3, 12, 12)
    r = torch.randn(6, 3, 12, 12)
    for alias, name in (("const", 0.0), ("pixel", "random")):
        a = relevance_erase(x, r, p=0.7, value=alias, generator=gen(10))
        b = relevance_erase(x, r, p=0.7, value=name, generator=gen(10))
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_one_pixel_blocks_walk_down_the_relevance_ranking_then_fall_back() -> None:
    x = torch.randn(4, 3, 4, 4)
    r = torch.randn(4, 4, 4)
    stats: dict = {}
    # 16 one-pixel blocks (area 0.01 * 16 / 16 -> 1 px) visit the 16 pixels in decreasing relevance
    out, mask = relevance_erase(x, r, p=1.0, count=16, scale=(0.01, 0.01), ratio=(1.0, 1.0), generator=gen(11),
                                stats=stats)
    assert mask.all() and (stats["heights"] == 1).all() and not stats["fallback"].any()
    order = r.flatten(1).argsort(dim=1, descending=True)
    assert torch.equal(stats["rows"] * 4 + stats["cols"], order)
    # more blocks than pixels: nothing is left outside the earlier blocks -> random centres, no error
    out, mask = relevance_erase(x, r, p=1.0, count=20, scale=(0.01, 0.01), ratio=(1.0, 1.0), generator=gen(11),
                                stats=stats)
    assert torch.isfinite(out).all() and mask.all()
    assert torch.equal(stats["fallback"], torch.arange(20).expand(4, 20) >= 16)


@pytest.mark.parametrize("kwargs, err, match", [
    ({"count": 0}, ValueError, "count"),
    ({"count": 1.5}, TypeError, "count"),
    ({"count": True}, TypeError, "count"),
    ({"count": 3, "max_count": 2}, ValueError, "max_count"),
    ({"max_count": 0}, ValueError, "max_count"),
    ({"value": "uniform"}, ValueError, "value"),
])
def test_count_and_value_errors(kwargs, err, match) -> None:
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(err, match=match):
        relevance_erase(x, torch.randn(2, 8, 8), **kwargs)
    with pytest.raises(err, match=match):
        random_erase(x, **kwargs)
    with pytest.raises(err, match=match):
        reldrop.RelDrop(nn.Conv2d(3, 2, 1), **kwargs)


def test_count_is_refused_for_points() -> None:
    with pytest.raises(ValueError, match="modality='image'"):
        reldrop.RelDrop(nn.Linear(3, 2), modality="points", count=2)


class _TwoSpots:
    """Relevance with its maximum at (4, 4), the second largest at (5, 5), the third at (12, 12)."""

    def __call__(self, x: torch.Tensor, target: torch.Tensor | str) -> torch.Tensor:
        r = torch.zeros_like(x)
        r[:, :, 4, 4], r[:, :, 5, 5], r[:, :, 12, 12] = 3.0, 2.0, 1.0
        return r


def test_reldrop_count_2_erases_two_blocks_the_second_outside_the_first() -> None:
    torch.manual_seed(12)
    x = torch.randn(32, 3, 16, 16)
    y = torch.randint(0, 2, (32,))
    fn = reldrop.RelDrop(nn.Conv2d(3, 2, 1), p=0.5, count=2, scale=(0.1, 0.1), ratio=(1.0, 1.0),
                         generator=gen(13))
    fn._attributor = _TwoSpots()
    out, mask = fn(x, y, return_mask=True)
    sel = mask.flatten(1).any(1)
    assert 0 < int(sel.sum()) < 32 and fn.last_stats["selected"] == int(sel.sum())
    # per block area 0.1 * 256 / 2 = 12.8 -> 4x4 blocks: rows/cols [2, 6) around (4, 4) (covers (5, 5)),
    # and [10, 14) around (12, 12): the second block skips (5, 5), inside the first, for (12, 12)
    expected = torch.zeros(16, 16, dtype=torch.bool)
    expected[2:6, 2:6] = True
    expected[10:14, 10:14] = True
    assert torch.equal(mask[sel], expected.expand(int(sel.sum()), 16, 16))
    assert not mask[~sel].any() and torch.equal(out[~sel], x[~sel])
    assert (out[sel][:, :, expected] == 0).all()
    assert "count=2" in repr(fn)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
def test_count_and_rand_on_cuda_match_cpu_with_a_cpu_generator() -> None:
    torch.manual_seed(14)
    x = torch.randn(16, 3, 24, 24)
    r = torch.randn(16, 3, 24, 24)
    kw = dict(p=0.7, count=2, max_count=4, value="rand", border="reject")
    a = relevance_erase(x, r, generator=gen(15), **kw)
    b = relevance_erase(x.cuda(), r.cuda(), generator=gen(15), **kw)
    assert torch.equal(a[0], b[0].cpu()) and torch.equal(a[1], b[1].cpu())
    c = relevance_erase(x.cuda(), r.cuda(), generator=torch.Generator(device="cuda").manual_seed(15), **kw)
    assert c[0].device.type == "cuda" and torch.isfinite(c[0]).all()
