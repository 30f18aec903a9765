"""The numerics every attribution backend shares, written once: zennit's stabilized division, the
Flat rule of a 2-D convolution, the output-relevance seeds, the BatchNorm arithmetic of merging a
BN into the layer before it, and the ``Unsupported`` signal of a backend without an exact rule.

``stab_ε(z) = z + ε·sign(z)`` with ``sign(0) = +1`` (zennit's ``stabilize``) throughout.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["Unsupported", "why_unsupported", "SEEDS", "check_seed", "bn_scale", "fold_batchnorm", "stabilize",
           "stab_div", "pair",
           "conv_transpose", "crop", "flat_conv2d"]

#: output relevance of the LRP presets: ``one_hot(target)`` (default) or ``one_hot(target) * logit``
SEEDS = ("one_hot", "logit")


class Unsupported(Exception):
    """The model is not one this backend reproduces exactly (the caller falls back or names it)."""


def why_unsupported(parse: Callable[[Any], object], model: Any) -> str | None:
    """The message of the :class:`Unsupported` that ``parse(model)`` raises (a backend's plan or
    structure reader), None when it returns: a backend's ``supports`` without a second parse."""
    try:
        parse(model)
    except Unsupported as exc:
        return str(exc)
    return None


def check_seed(seed: object) -> str:
    """``seed`` when it is one of :data:`SEEDS`, else ValueError naming them."""
    if seed not in SEEDS:
        raise ValueError(f"seed must be one of {', '.join(SEEDS)}, got {seed!r}")
    return seed


def stabilize(z: torch.Tensor, eps: float) -> torch.Tensor:
    """``stab_ε(z) = z + eps·sign(z)`` with sign(0) = +1, as a new tensor."""
    return torch.where(z >= 0, z + eps, z - eps)


def stab_div(z: torch.Tensor, eps: float) -> torch.Tensor:
    """``z / stab_ε(z)`` as a new tensor.

    Computed as ``|z| / (|z| + eps)``: for z > 0 the same IEEE operations; for z < 0 both
    numerator and denominator are negated exactly, so the quotient is bit-identical; z = ±0
    gives 0 either way. Three passes instead of five.
    """
    a = z.abs()
    den = a + eps
    return torch.div(a, den, out=den)


def pair(v: Any) -> list[int]:
    """``[v, v]`` for an int, else ``list(v)`` (kernel size / stride / padding / dilation of a 2-D layer)."""
    return [v, v] if isinstance(v, int) else list(v)


def conv_transpose(c: torch.Tensor, w: torch.Tensor, in_hw: Any, stride: Any, padding: Any,
                   dilation: Any, groups: int) -> torch.Tensor:
    """Input-gradient of a 2-D convolution (transposed conv with the output padding that gives ``in_hw``)."""
    st, pd, dl = pair(stride), pair(padding), pair(dilation)
    kh, kw = w.shape[-2], w.shape[-1]
    oh, ow = c.shape[-2], c.shape[-1]
    op_h = in_hw[0] - ((oh - 1) * st[0] - 2 * pd[0] + dl[0] * (kh - 1) + 1)
    op_w = in_hw[1] - ((ow - 1) * st[1] - 2 * pd[1] + dl[1] * (kw - 1) + 1)
    return F.conv_transpose2d(c, w, None, st, pd, (op_h, op_w), groups, dl)


def crop(r: torch.Tensor, pads: tuple[int, int, int, int] | None) -> torch.Tensor:
    """Undo an explicit zero padding ``(left, right, top, bottom)`` (relevance/gradient of a pad is a crop)."""
    if pads is None or not any(pads):
        return r
    left, right, top, bottom = pads
    return r[..., top:r.shape[-2] - bottom, left:r.shape[-1] - right]


def flat_conv2d(conv: nn.Conv2d, r_out: torch.Tensor, in_shape: torch.Size, delta: float,
                pads: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """zennit's Flat rule at a 2-D convolution: ``R_out (B, C_out, H', W')`` spread uniformly over each
    receptive field, ``R_in = Σ_out R_out / (n_in(out) + δ)``; returns ``(B, C_in, H, W)``.

    ``in_shape`` is the conv's (padded, for an explicit ``pads``, e.g. timm's Conv2dSame) input
    shape; explicit padding counts as zeros (zennit puts the ones in place of the input, before
    the module pads) and is cropped from the result.
    """
    kh, kw = pair(conv.kernel_size)
    cin = in_shape[1]
    ones_k = torch.ones(1, 1, kh, kw, dtype=r_out.dtype, device=r_out.device)
    if pads is None:
        ones_x = torch.ones(1, 1, in_shape[2], in_shape[3], dtype=r_out.dtype, device=r_out.device)
    else:
        left, right, top, bottom = pads
        ones_x = torch.ones(1, 1, in_shape[2] - top - bottom, in_shape[3] - left - right,
                            dtype=r_out.dtype, device=r_out.device)
        ones_x = F.pad(ones_x, pads)
    count = F.conv2d(ones_x, ones_k, None, conv.stride, conv.padding, conv.dilation) * (cin // conv.groups)
    s = r_out.sum(dim=1, keepdim=True) / (count + delta)  # count > 0: sign +1
    r = conv_transpose(s, ones_k, in_shape[-2:], conv.stride, conv.padding, conv.dilation, 1)
    r = crop(r, pads)
    return r.expand(in_shape[0], cin, r.shape[2], r.shape[3]).contiguous()


def bn_scale(bn: Any) -> torch.Tensor:
    """``gamma / sqrt(running_var + eps)`` per channel ``(C,)`` (``1 / sqrt(...)`` without affine weight);
    the same arithmetic as zennit's ``MergeBatchNorm``."""
    denominator = (bn.running_var + bn.eps) ** 0.5
    return bn.weight / denominator if bn.weight is not None else 1.0 / denominator


def fold_batchnorm(weight: torch.Tensor, bias: torch.Tensor | None, bn: Any, *, out_dim: int = 0
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of a linear/conv layer followed by ``bn`` in eval mode, merged into one layer.

    ``weight``: the layer's weight with its output channels along ``out_dim`` (1 for transposed
    convolutions); ``bias``: ``(C,)`` or None. Returns ``(weight * scale, (bias - mean) * scale + beta)``.
    """
    scale = bn_scale(bn)
    shape = [1] * weight.ndim
    shape[out_dim] = -1
    if bias is None:
        bias = torch.zeros(weight.shape[out_dim], dtype=weight.dtype, device=weight.device)
    shift = bn.bias if bn.bias is not None else torch.zeros_like(bn.running_mean)
    return weight * scale.reshape(shape), (bias - bn.running_mean) * scale + shift
