"""The building blocks of block occlusion (shared by RelDrop and Random Erasing, open for new
strategies): block sizes with the Random Erasing law, relevance maps, centres, block bounds and
masks, fills. See :mod:`reldrop.masks.image` for the public functions and the order of random draws.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import torch
from torch import Tensor

from ._args import CENTRES, TOPK_FRACTION, check_choice, check_scale_ratio, parse_value
from ._draw import Device, cached_constant, draw_integers, draw_normal, draw_uniform

__all__ = ["BlockSizes", "Centres", "sample_block_sizes", "relevance_2d", "normalize_relevance_2d",
           "centres_from_relevance", "random_centres", "block_bounds", "block_fits", "block_mask", "fill_masked",
           "fill_where", "Value"]

Value = float | Sequence[float] | Tensor | str


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


def sample_block_sizes(
    batch: int,
    height: int,
    width: int,
    *,
    scale: tuple[float, float] = (0.02, 0.4),
    ratio: tuple[float, float] = (0.3, 1 / 0.3),
    tries: int = 1,
    generator: torch.Generator | None = None,
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
    (s_lo, s_hi), (r_lo, r_hi) = check_scale_ratio(scale, ratio)
    u = draw_uniform((2, batch, tries), generator, device)
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
    generator: torch.Generator | None = None,
    device: Device = None,
) -> tuple[Tensor, Tensor]:
    """Uniformly random pixel per sample: ``(rows, cols)``, each ``(batch,)`` long. One draw of ``(batch,)``."""
    idx = draw_integers(height * width, (batch,), generator, device)
    return idx // width, idx % width


def centres_from_relevance(
    relevance: Tensor,
    *,
    centre: str = "argmax",
    k: int | None = None,
    generator: torch.Generator | None = None,
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
    check_choice("centre", centre, CENTRES)
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
        pick = draw_integers(kk, (B,), generator, device)
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
    generator: torch.Generator | None = None,
    inplace: bool = False,
) -> Tensor:
    """Images ``x (B, C, H, W)`` with the pixels where ``mask (B, H, W)`` is True replaced by ``value``.

    ``value``: a float, a sequence of ``C`` floats (one per channel), ``"random"`` (per-pixel,
    per-channel N(0, 1) noise, timm's ``mode='pixel'``; a ``(B, C, H, W)`` normal draw) or
    ``"rand"`` (one N(0, 1) colour per sample and channel, timm's ``mode='rand'`` for one block; a
    ``(B, 1, C)`` normal draw). Outside the mask the result equals ``x`` bit for bit. ``x`` is
    modified only when ``inplace=True``; the result keeps ``x``'s dtype, device and memory format.
    """
    kind, v = parse_value(value, x.shape[1])
    fill: float | Tensor
    if kind == "scalar":
        if inplace:
            return x.masked_fill_(mask[:, None], v)
        fill = cached_constant((v,), x.dtype, x.device).view(())
    elif kind == "channel":
        fill = cached_constant(tuple(v), x.dtype, x.device).view(1, -1, 1, 1)
    elif kind == "rand":
        colours = draw_normal((x.shape[0], 1, x.shape[1]), generator, x.device)
        fill = colours[:, 0, :, None, None].to(x.dtype)
    else:
        fill = draw_normal(tuple(x.shape), generator, x.device).to(x.dtype)
    return fill_where(x, mask, fill, inplace)


def fill_where(x: Tensor, mask: Tensor, fill: float | Tensor, inplace: bool) -> Tensor:
    """``where(mask[:, None], fill, x)``: into ``x`` (inplace), else a new tensor in ``x``'s memory format."""
    m = mask[:, None]
    if inplace:
        return x.copy_(torch.where(m, fill, x))
    if x.requires_grad and torch.is_grad_enabled():  # out= does not support autograd
        return torch.where(m, fill, x)
    out = torch.empty_like(x)  # keeps the memory format (channels_last stays channels_last)
    return torch.where(m, fill, x, out=out)  # type: ignore[arg-type]  # a float fill works; the stubs want a Tensor
