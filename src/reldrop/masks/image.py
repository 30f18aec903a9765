"""Block occlusion for images: RelDrop (block centred on the most relevant pixel) and Random Erasing.

Both public functions run the same code path; only the way the block centre is chosen differs
(``centre="argmax" | "topk" | "random"``). The building blocks are exported for future strategies
(several blocks, CutMix at the relevant region): :func:`sample_block_sizes`,
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

import functools
import math
from typing import Any, NamedTuple, Optional, Sequence, Union

import torch
from torch import Tensor

from .._checks import (
    check_batch_match,
    check_finite,
    check_float_tensor,
    check_probability,
    check_range_pair,
    parse_fill_value,
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

Value = Union[float, Sequence[float], Tensor, str]
Device = Union[torch.device, str, None]

CENTRES = ("argmax", "topk", "random")
#: string fill values: per-pixel noise, one colour per block, and timm's names for 0 and per-pixel noise
VALUE_NAMES = ("random", "rand", "pixel", "const")
BORDERS = ("clip", "reject")
#: ``border="reject"`` draws this many block sizes per sample (as torchvision's RandomErasing).
REJECT_TRIES = 10
#: ``centre="topk"`` with ``k=None`` uses the top 1 % of pixels: ``k = max(1, round(0.01 * H * W))``.
TOPK_FRACTION = 0.01


class BlockSizes(NamedTuple):
    """Block sizes for ``B`` samples and ``T`` tries, all ``(B, T)``, *before* any clipping."""

    heights: Tensor  #: long, ``round(sqrt(S_O * r_O))``, at least 1
    widths: Tensor  #: long, ``round(sqrt(S_O / r_O))``, at least 1
    areas: Tensor  #: float, ``S_O = U(s_low, s_high) * H * W``
    aspects: Tensor  #: float, ``r_O``, log-uniform in ``ratio``


class Centres(NamedTuple):
    """Block centres, all ``(B,)``."""

    rows: Tensor  #: long, y index in ``[0, H)``
    cols: Tensor  #: long, x index in ``[0, W)``
    fallback: Tensor  #: bool, True where the relevance was degenerate and a random centre was used


# ----------------------------------------------------------------------------- randomness


def _draw_device(generator: Optional[torch.Generator], device: Device) -> torch.device:
    if generator is not None:
        return generator.device
    return torch.device(device) if device is not None else torch.device("cpu")


def _out_device(generator: Optional[torch.Generator], device: Device) -> torch.device:
    if device is not None:
        return torch.device(device)
    return generator.device if generator is not None else torch.device("cpu")


def _rand(shape: tuple[int, ...], generator: Optional[torch.Generator], device: Device) -> Tensor:
    """U[0, 1) float32 of ``shape`` drawn on the generator's device, returned on ``device``."""
    out = torch.rand(shape, generator=generator, device=_draw_device(generator, device))
    return out.to(_out_device(generator, device))


def _randn(shape: tuple[int, ...], generator: Optional[torch.Generator], device: Device) -> Tensor:
    """N(0, 1) float32 of ``shape`` drawn on the generator's device, returned on ``device``."""
    out = torch.randn(shape, generator=generator, device=_draw_device(generator, device))
    return out.to(_out_device(generator, device))


def _randint(high: int, shape: tuple[int, ...], generator: Optional[torch.Generator], device: Device) -> Tensor:
    out = torch.randint(0, high, shape, generator=generator, device=_draw_device(generator, device))
    return out.to(_out_device(generator, device))


@functools.lru_cache(maxsize=64)
def cached_constant(values: tuple[float, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    """A small constant tensor on ``device``, cached so a CUDA fill value is copied to the GPU once."""
    return torch.tensor(values, dtype=dtype, device=device)


# ----------------------------------------------------------------------------- argument checks


def _check_generator(generator: object) -> Optional[torch.Generator]:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    return generator


def _check_scale_ratio(scale: object, ratio: object) -> tuple[tuple[float, float], tuple[float, float]]:
    s = check_range_pair("scale", scale, positive=True)
    if s[1] > 1.0:
        raise ValueError(f"scale must be a pair (low, high) with 0 < low <= high <= 1, got {scale!r}")
    r = check_range_pair("ratio", ratio, positive=True)
    return s, r


def _check_choice(name: str, v: object, choices: Sequence[str]) -> str:
    if not isinstance(v, str) or v not in choices:
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}, got {v!r}")
    return v


def _check_bool(name: str, v: object) -> bool:
    if not isinstance(v, bool):
        raise TypeError(f"{name} must be a bool, got {type(v).__name__}")
    return v


def _check_k(k: object, centre: str) -> Optional[int]:
    if k is None:
        return None
    if centre != "topk":
        raise ValueError(f"k is only used with centre='topk'; got k={k!r} with centre={centre!r}")
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"k must be a positive int or None, got {type(k).__name__}")
    if k < 1:
        raise ValueError(f"k must be a positive int or None, got {k}")
    return k


def _parse_value(value: object, channels: int, name: str = "value") -> tuple[str, Any]:
    """Return ``("scalar", float) | ("channel", list[float]) | ("random", None) | ("rand", None)``.

    ``"pixel"`` (timm) is ``"random"``; ``"const"`` (timm) is ``0.0``.
    """
    form = f"a float, a sequence of {channels} floats (one per channel), 'random' or 'rand'"
    if isinstance(value, str):
        if value not in VALUE_NAMES:
            raise ValueError(f"{name} must be {form} (timm's 'const' and 'pixel' are accepted too), got {value!r}")
        if value == "const":
            return "scalar", 0.0
        return ("rand", None) if value == "rand" else ("random", None)
    kind, v = parse_fill_value(name, value, channels, form)
    return ("channel" if kind == "sequence" else kind), v


def _check_count(count: object, max_count: object) -> tuple[int, Optional[int]]:
    """``count >= 1``; ``max_count`` None or an int ``>= count`` (timm's ``min_count``/``max_count``)."""
    for name, v in (("count", count), ("max_count", max_count)):
        if v is None and name == "max_count":
            continue
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name} must be a positive int{' or None' if name == 'max_count' else ''}, "
                            f"got {type(v).__name__}")
        if v < 1:
            raise ValueError(f"{name} must be a positive int, got {v}")
    if max_count is not None and max_count < count:  # type: ignore[operator]
        raise ValueError(f"max_count must be >= count (the per-image count is drawn in [count, max_count]), "
                         f"got count={count}, max_count={max_count}")
    return int(count), (None if max_count is None else int(max_count))  # type: ignore[call-overload]


def _check_images(x: object) -> Tensor:
    x = check_float_tensor("x", x, (4,), "(B, C, H, W)")
    B, C, H, W = x.shape
    if B == 0:
        raise ValueError("x must have a non-empty batch: shape (B, C, H, W) with B >= 1, got B = 0")
    if C == 0:
        raise ValueError("x must have at least one channel: shape (B, C, H, W) with C >= 1")
    if H < 2 or W < 2:
        raise ValueError(f"x must be images of at least 2x2 pixels, shape (B, C, H, W), got {tuple(x.shape)}")
    return x


def _check_finite_images(x: Tensor, r2d: Optional[Tensor], relevance: Optional[Tensor]) -> None:
    """NaN/inf check of ``x`` and (via its channel sum ``r2d``) ``relevance`` with one host sync.

    ``aminmax`` propagates NaN and exposes +-inf, and reads each tensor once without a temporary
    (``isfinite(x).all()`` is ~15x slower on CPU for a 128x3x224x224 batch). A non-finite channel
    sum of finite relevance means the sum overflowed; that is reported as such.
    """
    parts = list(torch.aminmax(x))
    if r2d is not None:
        parts += list(torch.aminmax(r2d))
    ok = torch.stack([torch.isfinite(t) for t in parts]).tolist()
    if not all(ok[:2]):
        raise ValueError("x contains NaN or inf values; expected finite numbers")
    if r2d is not None and not all(ok[2:]):
        assert relevance is not None
        check_finite("relevance", relevance)
        raise ValueError(f"relevance's channel sum overflows {r2d.dtype}; expected finite sums (rescale relevance)")


def _check_relevance_2d(x: Tensor, relevance: object) -> Tensor:
    B, C, H, W = x.shape
    form = f"(B, C, H, W) = {tuple(x.shape)} or (B, H, W) = {(B, H, W)}"
    relevance = check_float_tensor("relevance", relevance, (3, 4), form)
    check_batch_match("x", x, "relevance", relevance)
    if tuple(relevance.shape) not in (tuple(x.shape), (B, H, W)):
        raise ValueError(f"relevance must have shape {form}, got {tuple(relevance.shape)}")
    if relevance.device != x.device:
        raise ValueError(f"relevance must be on x's device ({x.device}), got {relevance.device}")
    return relevance


# ----------------------------------------------------------------------------- building blocks


def sample_block_sizes(
    batch: int,
    height: int,
    width: int,
    *,
    scale: tuple[float, float] = (0.02, 0.4),
    ratio: tuple[float, float] = (0.3, 1 / 0.3),
    tries: int = 1,
    generator: Optional[torch.Generator] = None,
    device: Device = None,
) -> BlockSizes:
    """Draw block sizes with the Random Erasing law (paper Eq. 4-5), before any clipping.

    ``S_O = U(s_low, s_high) * H * W``; the aspect ratio ``r_O`` is drawn **log-uniformly** in
    ``ratio`` (as torchvision/timm do, so ``r`` and ``1/r`` are equally likely; the paper writes
    ``U(r_low, 1/r_low)``); ``H_O = round(sqrt(S_O r_O))``, ``W_O = round(sqrt(S_O / r_O))``, at
    least 1 px. Sizes may exceed the image; clipping happens in :func:`block_mask`.
    Returns :class:`BlockSizes` of ``(batch, tries)`` tensors on ``device`` (default: the
    generator's device, else CPU). One draw of ``(2, batch, tries)`` uniforms.
    """
    (s_lo, s_hi), (r_lo, r_hi) = _check_scale_ratio(scale, ratio)
    u = _rand((2, batch, tries), generator, device)
    areas = (s_lo + (s_hi - s_lo) * u[0]) * float(height * width)
    log_lo, log_hi = math.log(r_lo), math.log(r_hi)
    aspects = torch.exp(log_lo + (log_hi - log_lo) * u[1])
    heights = torch.sqrt(areas * aspects).round().clamp_min(1).long()
    widths = torch.sqrt(areas / aspects).round().clamp_min(1).long()
    return BlockSizes(heights, widths, areas, aspects)


def relevance_2d(relevance: Tensor) -> Tensor:
    """``(B, C, H, W)`` or ``(B, H, W)`` relevance -> ``(B, H, W)`` channel sum ``R2d``.

    Half-precision input is summed in float32 (so the channel sum cannot overflow float16).
    """
    r = relevance.float() if relevance.dtype in (torch.float16, torch.bfloat16) else relevance
    return r.sum(dim=1) if r.dim() == 4 else r


def normalize_relevance_2d(relevance: Tensor) -> Tensor:
    """Paper Eq. 3: ``Rnorm = (R2d + max|R2d|) / (2 max|R2d|)`` per sample, in [0, 1], ``(B, H, W)``.

    ``R2d`` is the channel sum (see :func:`relevance_2d`). A sample whose relevance is all zero
    (the formula would divide by zero) gets ``Rnorm = 0.5`` everywhere instead of NaN.
    """
    r2d = relevance_2d(relevance)
    m = r2d.abs().amax(dim=(1, 2), keepdim=True)
    nonzero = m > 0
    rnorm = (r2d + m) / (2 * torch.where(nonzero, m, torch.ones_like(m)))
    return torch.where(nonzero, rnorm, torch.full_like(rnorm, 0.5))


def random_centres(
    batch: int,
    height: int,
    width: int,
    *,
    generator: Optional[torch.Generator] = None,
    device: Device = None,
) -> tuple[Tensor, Tensor]:
    """Uniformly random pixel per sample: ``(rows, cols)``, each ``(batch,)`` long. One draw of ``(batch,)``."""
    idx = _randint(height * width, (batch,), generator, device)
    return idx // width, idx % width


def centres_from_relevance(
    relevance: Tensor,
    *,
    centre: str = "argmax",
    k: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
) -> Centres:
    """Block centres from relevance ``(B, C, H, W)`` or ``(B, H, W)``; returns :class:`Centres`.

    * ``"argmax"``: the pixel maximising ``Rnorm`` (Eq. 3) = the argmax of the channel-summed
      relevance (the normalization is monotone; we take the argmax of ``R2d`` itself, which
      avoids ties created by rounding). Ties -> the first pixel in row-major order.
    * ``"topk"``: uniformly one of the ``k`` most relevant pixels (``k=None``:
      ``max(1, round(TOPK_FRACTION * H * W))``, i.e. the top 1 %; ``k`` is capped at ``H * W``).
    * ``"random"``: a uniformly random pixel (Random Erasing); ``relevance`` gives only the shape.

    Degenerate relevance — constant over the image, e.g. all zero — has no most relevant pixel
    (the argmax would always be the top-left corner): such samples get a uniformly random centre
    and ``fallback = True``. Random centres are drawn for every sample (one ``(B,)`` draw) so the
    number of draws does not depend on the data; ``"topk"`` draws one more ``(B,)``.
    """
    _check_choice("centre", centre, CENTRES)
    r2d = relevance_2d(relevance)
    B, H, W = r2d.shape
    device = r2d.device
    rows, cols = random_centres(B, H, W, generator=generator, device=device)
    if centre == "random":
        return Centres(rows, cols, torch.zeros(B, dtype=torch.bool, device=device))
    flat = r2d.reshape(B, H * W)
    lo, hi = torch.aminmax(flat, dim=1)
    degenerate = lo == hi
    if centre == "argmax":
        idx = flat.argmax(dim=1)
    else:
        kk = max(1, round(TOPK_FRACTION * H * W)) if k is None else int(k)
        kk = min(kk, H * W)
        top = flat.topk(kk, dim=1, sorted=False).indices  # (B, kk)
        pick = _randint(kk, (B,), generator, device)
        idx = top.gather(1, pick[:, None]).squeeze(1)
    rows = torch.where(degenerate, rows, idx // W)
    cols = torch.where(degenerate, cols, idx % W)
    return Centres(rows, cols, degenerate)


def block_bounds(rows: Tensor, cols: Tensor, heights: Tensor, widths: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Half-open bounds ``(top, bottom, left, right)`` of blocks centred on ``(rows, cols)``.

    ``top = row - h // 2``, ``bottom = top + h`` (likewise for columns): odd sizes are exactly
    centred; even sizes have one more pixel above/left of the centre than below/right. All
    arguments broadcast together (e.g. ``(B,)`` centres with ``(B, T)`` sizes after ``[:, None]``).
    """
    top = rows - torch.div(heights, 2, rounding_mode="floor")
    left = cols - torch.div(widths, 2, rounding_mode="floor")
    return top, top + heights, left, left + widths


def block_fits(height: int, width: int, rows: Tensor, cols: Tensor, heights: Tensor, widths: Tensor) -> Tensor:
    """Bool (broadcast shape): the centred block lies entirely inside the ``height x width`` image."""
    top, bottom, left, right = block_bounds(rows, cols, heights, widths)
    return (top >= 0) & (bottom <= height) & (left >= 0) & (right <= width)


def block_mask(height: int, width: int, rows: Tensor, cols: Tensor, heights: Tensor, widths: Tensor) -> Tensor:
    """Bool mask ``(B, height, width)``, True inside the centred block, clipped to the image.

    ``rows, cols, heights, widths``: ``(B,)`` for one block per sample, or ``(B, n)`` for ``n``
    blocks per sample (their union). Built from broadcasted index comparisons
    (rows in ``[top, bottom)`` and cols in ``[left, right)``), on ``rows``' device.
    """
    top, bottom, left, right = block_bounds(rows, cols, heights, widths)
    r = torch.arange(height, device=rows.device)
    c = torch.arange(width, device=rows.device)
    in_r = (r >= top[..., None]) & (r < bottom[..., None])  # (..., H)
    in_c = (c >= left[..., None]) & (c < right[..., None])  # (..., W)
    mask = in_r[..., :, None] & in_c[..., None, :]
    return mask.any(dim=1) if rows.dim() == 2 else mask


def fill_masked(
    x: Tensor,
    mask: Tensor,
    value: Value = 0.0,
    *,
    generator: Optional[torch.Generator] = None,
    inplace: bool = False,
) -> Tensor:
    """Images ``x (B, C, H, W)`` with the pixels where ``mask (B, H, W)`` is True replaced by ``value``.

    ``value``: a float, a sequence of ``C`` floats (one per channel), ``"random"`` (per-pixel,
    per-channel N(0, 1) noise, timm's ``mode='pixel'``; a ``(B, C, H, W)`` normal draw) or
    ``"rand"`` (one N(0, 1) colour per sample and channel, timm's ``mode='rand'`` for one block; a
    ``(B, 1, C)`` normal draw). Outside the mask the result equals ``x`` bit for bit. ``x`` is
    modified only when ``inplace=True``; the result keeps ``x``'s dtype, device and memory format.
    """
    kind, v = _parse_value(value, x.shape[1])
    fill: Union[float, Tensor]
    if kind == "scalar":
        if inplace:
            return x.masked_fill_(mask[:, None], v)
        fill = cached_constant((v,), x.dtype, x.device).view(())
    elif kind == "channel":
        fill = cached_constant(tuple(v), x.dtype, x.device).view(1, -1, 1, 1)
    elif kind == "rand":
        colours = _randn((x.shape[0], 1, x.shape[1]), generator, x.device)
        fill = colours[:, 0, :, None, None].to(x.dtype)
    else:
        fill = _randn(tuple(x.shape), generator, x.device).to(x.dtype)
    return _fill_where(x, mask, fill, inplace)


def _fill_where(x: Tensor, mask: Tensor, fill: Union[float, Tensor], inplace: bool) -> Tensor:
    """``where(mask[:, None], fill, x)``: into ``x`` (inplace), else a new tensor in ``x``'s memory format."""
    m = mask[:, None]
    if inplace:
        return x.copy_(torch.where(m, fill, x))
    if x.requires_grad and torch.is_grad_enabled():  # out= does not support autograd
        return torch.where(m, fill, x)
    out = torch.empty_like(x)  # keeps the memory format (channels_last stays channels_last)
    return torch.where(m, fill, x, out=out)


# ----------------------------------------------------------------------------- public functions


def _relevance_centres(
    flat: Tensor,
    covered: Optional[Tensor],
    centre: str,
    kk: int,
    fallback_idx: Tensor,
    generator: Optional[torch.Generator],
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
        pick = _randint(kk, (flat.shape[0],), generator, device)
        idx = top.gather(1, pick[:, None]).squeeze(1)
    else:
        top = masked.topk(kk, dim=1, sorted=True).indices  # uncovered pixels first
        n_top = n_free.clamp(1, kk)
        u = _rand((flat.shape[0],), generator, device)
        pick = torch.minimum((u * n_top).long(), n_top - 1)
        idx = top.gather(1, pick[:, None]).squeeze(1)
    return torch.where(degenerate, fallback_idx, idx), degenerate


def _erase(
    x: Tensor,
    relevance: Optional[Tensor],
    *,
    p: float,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    value: Value,
    centre: str,
    border: str,
    generator: Optional[torch.Generator],
    k: Optional[int],
    inplace: bool,
    stats: Optional[dict],
    count: int = 1,
    max_count: Optional[int] = None,
) -> tuple[Tensor, Tensor]:
    """The one code path of :func:`relevance_erase` and :func:`random_erase` (arguments checked).

    Blocks are placed one after the other (a loop over the ``K`` blocks, vectorized over the batch).
    """
    B, C, H, W = x.shape
    device = x.device
    coin = _rand((B,), generator, device) < p
    K = count if max_count is None else max_count
    n_blocks: Optional[Tensor] = None  # per-image block count; None = K for every image
    if max_count is not None and max_count > count:
        n_blocks = count + _randint(max_count - count + 1, (B,), generator, device)
    tries = REJECT_TRIES if border == "reject" else 1
    sizes = sample_block_sizes(B, H, W, scale=scale, ratio=ratio, tries=K * tries, generator=generator, device=device)
    all_h, all_w = sizes.heights, sizes.widths  # (B, K * T)
    if K > 1:  # timm: the area of each block is scaled by the image's block count
        per = torch.full((B,), float(K), device=device) if n_blocks is None else n_blocks.to(sizes.areas.dtype)
        areas = sizes.areas / per[:, None]
        all_h = torch.sqrt(areas * sizes.aspects).round().clamp_min(1).long()
        all_w = torch.sqrt(areas / sizes.aspects).round().clamp_min(1).long()
    all_h, all_w = all_h.view(B, K, tries), all_w.view(B, K, tries)
    rand_idx = _randint(H * W, (K * B,), generator, device).view(K, B)  # one random centre per block
    flat: Optional[Tensor] = None
    kk = 1
    if centre != "random":
        assert relevance is not None
        flat = relevance_2d(relevance).reshape(B, H * W)
        kk = min(max(1, round(TOPK_FRACTION * H * W)) if k is None else int(k), H * W)
    no = torch.zeros(B, dtype=torch.bool, device=device)
    covered: Optional[Tensor] = None
    parts: dict[str, list[Tensor]] = {n: [] for n in ("rows", "cols", "heights", "widths", "placed",
                                                      "degenerate", "active", "mask")}
    for j in range(K):
        if flat is None:
            idx, degenerate = rand_idx[j], no
        else:
            idx, degenerate = _relevance_centres(flat, covered, centre, kk, rand_idx[j], generator)
        rows, cols = idx // W, idx % W
        if border == "reject":
            fits = block_fits(H, W, rows[:, None], cols[:, None], all_h[:, j], all_w[:, j])  # (B, T)
            first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # first size that fits (0 if none)
            heights = all_h[:, j].gather(1, first).squeeze(1)
            widths = all_w[:, j].gather(1, first).squeeze(1)
            placed = fits.any(dim=1)
        else:
            heights, widths = all_h[:, j, 0], all_w[:, j, 0]
            placed = torch.ones(B, dtype=torch.bool, device=device)
        active = coin if n_blocks is None else coin & (n_blocks > j)
        m = block_mask(H, W, rows, cols, heights, widths) & (active & placed)[:, None, None]
        if j < K - 1:
            covered = m.flatten(1) if covered is None else covered | m.flatten(1)
        for name, t in zip(parts, (rows, cols, heights, widths, placed, degenerate, active, m)):
            parts[name].append(t)
    if K == 1:
        mask = parts["mask"][0]
    else:
        mask = torch.stack(parts["mask"], dim=1).any(dim=1)
    if K > 1 and _parse_value(value, C)[0] == "rand":  # one colour per block; a later block covers an earlier one
        colours = _randn((B, K, C), generator, device).to(x.dtype)[..., None, None]  # (B, K, C, 1, 1)
        fill = colours[:, 0]
        for j in range(1, K):
            fill = torch.where(parts["mask"][j][:, None], colours[:, j], fill)
        out = _fill_where(x, mask, fill.expand(B, C, H, W), inplace)
    else:
        out = fill_masked(x, mask, value, generator=generator, inplace=inplace)
    if stats is not None:
        one = K == 1  # one block: (B,) per-sample tensors, as always; several: (B, K) per block
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
            stats.update(blocks=erased, count=n_blocks if n_blocks is not None else torch.full_like(rows, K))
    return out, mask


def _check_common(
    x: object, p: object, scale: object, ratio: object, value: object, border: object, generator: object,
    inplace: object, stats: object, count: object, max_count: object,
) -> tuple[Tensor, float, tuple[float, float], tuple[float, float]]:
    x = _check_images(x)
    p = check_probability("p", p)
    s, r = _check_scale_ratio(scale, ratio)
    _check_count(count, max_count)
    kind, v = _parse_value(value, x.shape[1])
    if kind not in ("random", "rand") and not bool(torch.isfinite(torch.tensor(v, dtype=x.dtype)).all()):
        raise ValueError(f"value must be representable in x's dtype {x.dtype}, got {value!r}")
    _check_choice("border", border, BORDERS)
    _check_generator(generator)
    _check_bool("inplace", inplace)
    if stats is not None and not isinstance(stats, dict):
        raise TypeError(f"stats must be a dict (filled in place) or None, got {type(stats).__name__}")
    return x, p, s, r


def relevance_erase(
    x: Tensor,
    relevance: Optional[Tensor],
    *,
    p: float = 0.5,
    scale: tuple[float, float] = (0.02, 0.4),
    ratio: tuple[float, float] = (0.3, 1 / 0.3),
    value: Value = 0.0,
    centre: str = "argmax",
    border: str = "clip",
    generator: Optional[torch.Generator] = None,
    k: Optional[int] = None,
    inplace: bool = False,
    stats: Optional[dict] = None,
    count: int = 1,
    max_count: Optional[int] = None,
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
        TypeError / ValueError naming the argument for malformed input (rank, shape, batch
        mismatch, dtype, NaN/inf, ``p`` outside [0, 1], bad ``scale``/``ratio``, ``B = 0``,
        images smaller than 2x2, unknown ``centre``/``border``).
    """
    x, p, s, r = _check_common(x, p, scale, ratio, value, border, generator, inplace, stats, count, max_count)
    _check_choice("centre", centre, CENTRES)
    k = _check_k(k, centre)
    if relevance is None:
        if centre != "random":
            raise TypeError("relevance must be a tensor of shape (B, C, H, W) or (B, H, W), got None")
        _check_finite_images(x, None, None)
    else:
        relevance = _check_relevance_2d(x, relevance)
        r2d = relevance_2d(relevance)  # summed once; (B, H, W) is all the centre needs
        _check_finite_images(x, r2d, relevance)
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
    generator: Optional[torch.Generator] = None,
    inplace: bool = False,
    stats: Optional[dict] = None,
    count: int = 1,
    max_count: Optional[int] = None,
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
    _check_finite_images(x, None, None)
    return _erase(
        x, None, p=p, scale=s, ratio=r, value=value, centre="random", border=border,
        generator=generator, k=None, inplace=inplace, stats=stats, count=count, max_count=max_count,
    )
