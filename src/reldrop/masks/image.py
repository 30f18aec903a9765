"""Block occlusion for images: RelDrop (block centred on the most relevant pixel) and Random Erasing.

Both public functions run the same code path; only the way the block centre is chosen differs
(``centre="argmax" | "topk" | "random"``). The building blocks are exported for future strategies
(several blocks, CutMix at the relevant region; they live in :mod:`reldrop.masks.blocks`): :func:`sample_block_sizes`,
:func:`normalize_relevance_2d`, :func:`centres_from_relevance`, :func:`random_centres`,
:func:`block_bounds`, :func:`block_fits`, :func:`block_mask`, :func:`fill_masked`.

Randomness: every random number comes from ``generator`` (or torch's default generator of
``x``'s device when it is ``None``). A :class:`torch.Generator` lives on one device, so the numbers
are drawn on the generator's device and then moved to ``x``'s device; pass a generator on ``x``'s
device to avoid the copy. The draws are made in a fixed order whatever the inputs hold —
coin ``(B,)``, block counts ``(B,)`` (``max_count`` only), block sizes ``(2, B, K * T)``, random
centres ``(K * B,)``, top-k picks ``(B,)`` per block (``"topk"`` only), fill noise ``(B, C, H, W)``
(``value="random"``) or block colours ``(B, K, C)`` (``value="rand"``) — so, with the same seed,
RelDrop (``"argmax"``) and Random Erasing draw the *same* coins, counts and block sizes and differ
only in the centres: a paired comparison. ``K`` is the number of blocks per image (``count``, or
``max_count`` when the count is random); with ``K = 1`` the draws are those of a single block.

Several blocks (``count``, ``max_count``, as timm's ``RandomErasing(min_count, max_count)``): each
block's area is drawn from ``scale`` divided by the image's block count (timm: "area per box is
scaled by count"), so the total erased area keeps roughly the same law. RelDrop places block ``k``
at the most relevant pixel outside blocks ``1..k-1`` (vectorized over the batch; the loop runs over
the ``K`` blocks); Random Erasing draws every centre uniformly at random.

Fill values and timm's ``mode``: ``const`` = ``0.0`` (or any float / per-channel sequence),
``rand`` = ``"rand"`` (one N(0, 1) colour per block and channel), ``pixel`` = ``"random"``
(N(0, 1) per pixel and channel). timm's names ``"const"`` and ``"pixel"`` are accepted as aliases.
"""
from __future__ import annotations


import torch
from torch import Tensor

from .._checks import check_probability
from ._args import (
    BORDERS,
    CENTRES,
    REJECT_TRIES,
    TOPK_FRACTION,
    VALUE_NAMES,
    check_bool,
    check_choice,
    check_count,
    check_finite_images,
    check_generator,
    check_images,
    check_k,
    check_relevance_2d,
    check_scale_ratio,
    parse_value,
)
from ._draw import draw_integers, draw_normal, draw_uniform
from .blocks import (
    BlockSizes,
    Centres,
    Value,
    block_bounds,
    block_fits,
    block_mask,
    centres_from_relevance,
    fill_masked,
    fill_where,
    normalize_relevance_2d,
    random_centres,
    relevance_2d,
    sample_block_sizes,
)

__all__ = [
    "relevance_erase",
    "random_erase",
    "BlockSizes",
    "Centres",
    "sample_block_sizes",
    "relevance_2d",
    "normalize_relevance_2d",
    "centres_from_relevance",
    "random_centres",
    "block_bounds",
    "block_fits",
    "block_mask",
    "fill_masked",
    "CENTRES",
    "BORDERS",
    "REJECT_TRIES",
    "TOPK_FRACTION",
    "VALUE_NAMES",
]


# ----------------------------------------------------------------------------- public functions


def _relevance_centres(
    flat: Tensor,
    covered: Tensor | None,
    centre: str,
    kk: int,
    fallback_idx: Tensor,
    generator: torch.Generator | None,
) -> tuple[Tensor, Tensor]:
    """One block centre per sample from flattened relevance ``flat (B, H*W)``: ``(idx (B,), degenerate (B,))``.

    ``covered (B, H*W)`` bool (or None): pixels inside earlier blocks, never chosen. The relevance
    is degenerate when it is constant over two or more remaining pixels (or none remain); such samples
    take ``fallback_idx``. ``"topk"`` draws one ``(B,)`` pick: ``randint`` for the first block
    (as a single block always did), a uniform for later ones (the number of candidates may differ
    per sample when fewer than ``kk`` pixels remain).
    """
    device = flat.device
    if covered is None:
        lo, hi = torch.aminmax(flat, dim=1)
        degenerate = lo == hi
        masked = flat
    else:
        masked = flat.masked_fill(covered, float("-inf"))
        lo = flat.masked_fill(covered, float("inf")).amin(dim=1)
        n_free = (~covered).sum(dim=1)
        # constant over two or more remaining pixels, or nothing left (one remaining pixel is the max)
        degenerate = ((lo == masked.amax(dim=1)) & (n_free > 1)) | (n_free == 0)
    if centre == "argmax":
        idx = masked.argmax(dim=1)
    elif covered is None:
        top = flat.topk(kk, dim=1, sorted=False).indices  # (B, kk)
        pick = draw_integers(kk, (flat.shape[0],), generator, device)
        idx = top.gather(1, pick[:, None]).squeeze(1)
    else:
        top = masked.topk(kk, dim=1, sorted=True).indices  # uncovered pixels first
        n_top = n_free.clamp(1, kk)
        u = draw_uniform((flat.shape[0],), generator, device)
        pick = torch.minimum((u * n_top).long(), n_top - 1)
        idx = top.gather(1, pick[:, None]).squeeze(1)
    return torch.where(degenerate, fallback_idx, idx), degenerate


def _block_sizes(B: int, H: int, W: int, K: int, tries: int, n_blocks: Tensor | None, *, scale: tuple[float, float],
                 ratio: tuple[float, float], generator: torch.Generator | None, device: torch.device
                 ) -> tuple[Tensor, Tensor]:
    """Candidate block heights and widths ``(B, K, tries)``; with ``K > 1`` blocks each block's area is
    divided by the image's block count (timm)."""
    sizes = sample_block_sizes(B, H, W, scale=scale, ratio=ratio, tries=K * tries, generator=generator, device=device)
    all_h, all_w = sizes.heights, sizes.widths  # (B, K * T)
    if K > 1:
        per = torch.full((B,), float(K), device=device) if n_blocks is None else n_blocks.to(sizes.areas.dtype)
        areas = sizes.areas / per[:, None]
        all_h = torch.sqrt(areas * sizes.aspects).round().clamp_min(1).long()
        all_w = torch.sqrt(areas / sizes.aspects).round().clamp_min(1).long()
    return all_h.view(B, K, tries), all_w.view(B, K, tries)


def _block_size_at(H: int, W: int, rows: Tensor, cols: Tensor, heights: Tensor, widths: Tensor, border: str
                   ) -> tuple[Tensor, Tensor, Tensor]:
    """``(heights (B,), widths (B,), placed (B,))`` of a block centred at ``rows, cols`` from the candidate
    sizes ``(B, T)``: the first that fits for ``border="reject"`` (placed: one fits), else the first."""
    if border == "reject":
        fits = block_fits(H, W, rows[:, None], cols[:, None], heights, widths)  # (B, T)
        first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # first size that fits (0 if none)
        return heights.gather(1, first).squeeze(1), widths.gather(1, first).squeeze(1), fits.any(dim=1)
    return heights[:, 0], widths[:, 0], torch.ones(rows.shape[0], dtype=torch.bool, device=rows.device)


def _fill_blocks(x: Tensor, mask: Tensor, block_masks: list[Tensor], value: Value, generator: torch.Generator | None,
                 inplace: bool) -> Tensor:
    """``x`` with ``mask (B, H, W)`` filled; several blocks with ``value="rand"`` get one colour each
    (a later block covers an earlier one)."""
    B, C, H, W = x.shape
    K = len(block_masks)
    if K > 1 and parse_value(value, C)[0] == "rand":
        colours = draw_normal((B, K, C), generator, x.device).to(x.dtype)[..., None, None]  # (B, K, C, 1, 1)
        fill = colours[:, 0]
        for j in range(1, K):
            fill = torch.where(block_masks[j][:, None], colours[:, j], fill)
        return fill_where(x, mask, fill.expand(B, C, H, W), inplace)
    return fill_masked(x, mask, value, generator=generator, inplace=inplace)


def _write_stats(stats: dict, parts: dict[str, list[Tensor]], coin: Tensor, n_blocks: Tensor | None) -> None:
    """Fill ``stats`` in place: per-sample ``(B,)`` tensors for one block, ``(B, K)`` per block for several."""
    K = len(parts["mask"])
    one = K == 1
    st = {n: (v[0] if one else torch.stack(v, dim=1)) for n, v in parts.items() if n != "mask"}
    active, placed = st.pop("active"), st.pop("placed")
    fallback = st.pop("degenerate") & active
    erased = active & placed
    stats.clear()
    stats.update(
        coin=coin,
        erased=erased if one else erased.any(dim=1),
        fallback=fallback,
        rejected=active & ~placed,
        **st,
        num_erased=int(erased.sum()) if one else int(erased.any(dim=1).sum()),
        num_fallback=int(fallback.sum()),
    )
    if not one:
        stats.update(blocks=erased, count=n_blocks if n_blocks is not None else torch.full_like(parts["rows"][-1], K))


def _erase(
    x: Tensor,
    relevance: Tensor | None,
    *,
    p: float,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    value: Value,
    centre: str,
    border: str,
    generator: torch.Generator | None,
    k: int | None,
    inplace: bool,
    stats: dict | None,
    count: int = 1,
    max_count: int | None = None,
) -> tuple[Tensor, Tensor]:
    """The one code path of :func:`relevance_erase` and :func:`random_erase` (arguments checked).

    Blocks are placed one after the other (a loop over the ``K`` blocks, vectorized over the batch).
    """
    B, C, H, W = x.shape
    device = x.device
    coin = draw_uniform((B,), generator, device) < p
    K = count if max_count is None else max_count
    n_blocks: Tensor | None = None  # per-image block count; None = K for every image
    if max_count is not None and max_count > count:
        n_blocks = count + draw_integers(max_count - count + 1, (B,), generator, device)
    all_h, all_w = _block_sizes(B, H, W, K, REJECT_TRIES if border == "reject" else 1, n_blocks, scale=scale,
                                ratio=ratio, generator=generator, device=device)
    rand_idx = draw_integers(H * W, (K * B,), generator, device).view(K, B)  # one random centre per block
    flat: Tensor | None = None
    kk = 1
    if centre != "random":
        assert relevance is not None
        flat = relevance_2d(relevance).reshape(B, H * W)
        kk = min(max(1, round(TOPK_FRACTION * H * W)) if k is None else int(k), H * W)
    no = torch.zeros(B, dtype=torch.bool, device=device)
    covered: Tensor | None = None
    parts: dict[str, list[Tensor]] = {n: [] for n in ("rows", "cols", "heights", "widths", "placed",
                                                      "degenerate", "active", "mask")}
    for j in range(K):
        if flat is None:
            idx, degenerate = rand_idx[j], no
        else:
            idx, degenerate = _relevance_centres(flat, covered, centre, kk, rand_idx[j], generator)
        rows, cols = idx // W, idx % W
        heights, widths, placed = _block_size_at(H, W, rows, cols, all_h[:, j], all_w[:, j], border)
        active = coin if n_blocks is None else coin & (n_blocks > j)
        m = block_mask(H, W, rows, cols, heights, widths) & (active & placed)[:, None, None]
        if j < K - 1:
            covered = m.flatten(1) if covered is None else covered | m.flatten(1)
        for name, t in zip(parts, (rows, cols, heights, widths, placed, degenerate, active, m)):
            parts[name].append(t)
    mask = parts["mask"][0] if K == 1 else torch.stack(parts["mask"], dim=1).any(dim=1)
    out = _fill_blocks(x, mask, parts["mask"], value, generator, inplace)
    if stats is not None:
        _write_stats(stats, parts, coin, n_blocks)
    return out, mask


def _check_common(
    x: object, p: object, scale: object, ratio: object, value: object, border: object, generator: object,
    inplace: object, stats: object, count: object, max_count: object,
) -> tuple[Tensor, float, tuple[float, float], tuple[float, float]]:
    x = check_images(x)
    p = check_probability("p", p)
    s, r = check_scale_ratio(scale, ratio)
    check_count(count, max_count)
    kind, v = parse_value(value, x.shape[1])
    if kind not in ("random", "rand") and not bool(torch.isfinite(torch.tensor(v, dtype=x.dtype)).all()):
        raise ValueError(f"value must be representable in x's dtype {x.dtype}, got {value!r}")
    check_choice("border", border, BORDERS)
    check_generator(generator)
    check_bool("inplace", inplace)
    if stats is not None and not isinstance(stats, dict):
        raise TypeError(f"stats must be a dict (filled in place) or None, got {type(stats).__name__}")
    return x, p, s, r


def relevance_erase(
    x: Tensor,
    relevance: Tensor | None,
    *,
    p: float = 0.5,
    scale: tuple[float, float] = (0.02, 0.4),
    ratio: tuple[float, float] = (0.3, 1 / 0.3),
    value: Value = 0.0,
    centre: str = "argmax",
    border: str = "clip",
    generator: torch.Generator | None = None,
    k: int | None = None,
    inplace: bool = False,
    stats: dict | None = None,
    count: int = 1,
    max_count: int | None = None,
) -> tuple[Tensor, Tensor]:
    """RelDrop for images (paper Sec. 3.1, Alg. A.1): erase a block centred on the most relevant pixel.

    Args:
        x: images ``(B, C, H, W)``, floating point, finite, ``B >= 1``, ``H, W >= 2``.
        relevance: ``(B, C, H, W)`` or ``(B, H, W)``, floating point, finite, on ``x``'s device;
            summed over channels to ``R2d``. May be ``None`` only with ``centre="random"``.
        p: per-sample probability of erasing (an independent coin per sample).
        scale: ``(s_low, s_high)``, block area as a fraction of ``H * W``; ``0 < low <= high <= 1``.
        ratio: ``(r_low, r_high)``, aspect ratio ``H_O / W_O`` range, positive, drawn
            **log-uniformly** like torchvision/timm (the paper writes a plain uniform).
        value: fill — a float (paper: the dataset mean, 0 in normalized input space), a sequence of
            ``C`` floats (per channel), ``"random"`` (N(0, 1) per pixel and channel, timm's
            'pixel' mode) or ``"rand"`` (one N(0, 1) colour per block and channel, timm's 'rand'
            mode). timm's names ``"const"`` (= 0) and ``"pixel"`` (= ``"random"``) work too.
        centre: ``"argmax"`` (paper: argmax of ``Rnorm``, Eq. 3), ``"topk"`` (uniformly one of the
            ``k`` most relevant pixels) or ``"random"`` (Random Erasing).
        border: ``"clip"``: the centred block is clipped to the image (never loops, keeps the
            centre on the most relevant pixel). ``"reject"``: up to ``REJECT_TRIES`` (10) sizes are
            drawn, like torchvision's RandomErasing, and the first whose block *centred* on the
            centre fits inside the image is used; if none fits the sample is left untouched
            (the paper's Alg. A.1 loops until a size fits, which never ends near a corner).
        generator: source of all randomness (see the module docstring for the device rule).
        k: number of top pixels for ``centre="topk"``; ``None`` -> ``max(1, round(0.01 H W))``.
        inplace: write into ``x``; otherwise ``x`` and ``relevance`` are never modified.
        stats: optional dict, cleared and filled with per-sample ``(B,)`` tensors ``coin``, ``erased``,
            ``fallback``, ``rejected``, ``rows``, ``cols``, ``heights``, ``widths`` (the block
            used, before clipping) and ints ``num_erased``, ``num_fallback`` (one host sync).
            With several blocks (``K > 1``) ``rows``, ``cols``, ``heights``, ``widths``,
            ``fallback`` and ``rejected`` are ``(B, K)`` (one column per block), ``blocks`` ``(B, K)``
            marks the blocks erased, ``count`` ``(B,)`` the image's block count, and
            ``num_fallback`` counts blocks.
        count: blocks per image (timm's ``min_count``), default 1. Block ``k`` is centred on the
            most relevant pixel outside blocks ``1..k-1`` (``"argmax"``; ``"topk"`` picks among
            the top pixels outside them; ``"random"`` ignores earlier blocks). Each block's area is
            drawn from ``scale`` divided by the image's count (timm: "area per box is scaled by
            count"), so the total area keeps roughly the law of one block.
        max_count: ``None`` (every image gets ``count`` blocks) or an int ``>= count``: each image's
            count is drawn uniformly in ``[count, max_count]`` (timm's ``max_count``).

    Degenerate relevance (constant per sample, e.g. all zero) has no most relevant pixel: such a
    sample gets a uniformly random centre (it is erased like Random Erasing) and is counted in
    ``stats["num_fallback"]``. Never produces NaN.

    Returns:
        ``(x_out, mask)``: ``x_out`` ``(B, C, H, W)`` like ``x``; ``mask`` ``(B, H, W)`` bool,
        True = occluded. ``x_out == x`` outside the mask, ``== value`` inside.

    Raises:
        TypeError: naming the argument, for a wrong type or dtype.
        ValueError: naming the argument, for malformed input (rank, shape, batch mismatch, NaN/inf,
            ``p`` outside [0, 1], bad ``scale``/``ratio``, ``B = 0``, images smaller than 2x2,
            unknown ``centre``/``border``).
    """
    x, p, s, r = _check_common(x, p, scale, ratio, value, border, generator, inplace, stats, count, max_count)
    check_choice("centre", centre, CENTRES)
    k = check_k(k, centre)
    if relevance is None:
        if centre != "random":
            raise TypeError("relevance must be a tensor of shape (B, C, H, W) or (B, H, W), got None")
        check_finite_images(x, None, None)
    else:
        relevance = check_relevance_2d(x, relevance)
        r2d = relevance_2d(relevance)  # summed once; (B, H, W) is all the centre needs
        check_finite_images(x, r2d, relevance)
        relevance = r2d
    return _erase(
        x, relevance, p=p, scale=s, ratio=r, value=value, centre=centre, border=border,
        generator=generator, k=k, inplace=inplace, stats=stats, count=count, max_count=max_count,
    )


def random_erase(
    x: Tensor,
    *,
    p: float = 0.5,
    scale: tuple[float, float] = (0.02, 0.4),
    ratio: tuple[float, float] = (0.3, 1 / 0.3),
    value: Value = 0.0,
    border: str = "clip",
    generator: torch.Generator | None = None,
    inplace: bool = False,
    stats: dict | None = None,
    count: int = 1,
    max_count: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Random Erasing (Zhong et al.), the RelDrop baseline: :func:`relevance_erase` with ``centre="random"``.

    Same block law, border policy, fill values and return value; the block is centred on a
    uniformly random pixel (unlike torchvision, which draws the top-left corner among positions
    where the block fits; here both methods share one border policy). With the same generator
    seed, ``random_erase`` and ``relevance_erase`` draw identical coins and block sizes.
    ``count`` / ``max_count``: several blocks per image, each centred on a random pixel (see
    :func:`relevance_erase`). Returns ``(x_out (B, C, H, W), mask (B, H, W) bool)``.
    """
    x, p, s, r = _check_common(x, p, scale, ratio, value, border, generator, inplace, stats, count, max_count)
    check_finite_images(x, None, None)
    return _erase(
        x, None, p=p, scale=s, ratio=r, value=value, centre="random", border=border,
        generator=generator, k=None, inplace=inplace, stats=stats, count=count, max_count=max_count,
    )
