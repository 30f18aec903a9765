"""Elementwise and convolution pieces of the fast CNN backend (:mod:`.fast`): zennit's stabilized
division and activation factors in few passes, timm's TF-"same" padding and its crop, a fused
oneDNN conv+ReLU, the input gradient of a 2-D convolution."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["stab_div", "relu_stab_div", "activate", "act_stab_div", "same_pads", "crop", "HAS_CONV_POINTWISE",
           "conv_relu", "pair", "conv_transpose", "conv_input_grad"]


def stab_div(z: torch.Tensor, eps: float) -> torch.Tensor:
    """``z / (z + eps·sign(z))`` with sign(0)=+1 (zennit's ``stabilize``), as a new tensor.

    Computed as ``|z| / (|z| + eps)``: for z > 0 the same IEEE operations; for z < 0 both
    numerator and denominator are negated exactly, so the quotient is bit-identical; z = ±0
    gives 0 either way. Three passes instead of five.
    """
    a = z.abs()
    den = a + eps
    return torch.div(a, den, out=den)


def relu_stab_div(y: torch.Tensor, eps: float) -> torch.Tensor:
    """``relu(z) / stab(z)`` given ``y = relu(z)``: 0 where z <= 0, z/(z+eps) elsewhere."""
    den = y + eps
    return torch.div(y, den, out=den)


def activate(z: torch.Tensor, act: str, fused: bool) -> torch.Tensor:
    """``act(z)`` (in place where possible); ``fused``: the conv already applied the ReLU."""
    if act == "relu":
        return z if fused else z.relu_()
    return z.clamp_(0.0, 6.0)


def act_stab_div(z: torch.Tensor, act: str, eps: float, fused: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(y, y / stab(z))`` with ``y = act(z)`` (ReLU or ReLU6): the relevance factor of a layer
    whose output passes an activation. For z <= 0 both are 0; for z > 0, stab(z) = z + eps."""
    if act == "relu":
        y = z if fused else z.relu_()
        return y, relu_stab_div(y, eps)
    r = z.relu_()
    y = r.clamp(max=6.0)
    den = r.add_(eps)
    return y, torch.div(y, den, out=den)


def same_pads(shape: torch.Size, m: nn.Module) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) padding of timm's Conv2dSame for an input of ``shape``."""
    pads = []
    for size, k, st, d in zip(shape[-2:], pair(m.kernel_size), pair(m.stride), pair(m.dilation)):
        pads.append(max((-(-size // st) - 1) * st + (k - 1) * d + 1 - size, 0))
    ph, pw = pads
    return (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)


def crop(r: torch.Tensor, pads: tuple[int, int, int, int] | None) -> torch.Tensor:
    """Undo an explicit zero padding (relevance/gradient of the pad is a crop)."""
    if pads is None or not any(pads):
        return r
    left, right, top, bottom = pads
    return r[..., top:r.shape[-2] - bottom, left:r.shape[-1] - right]


HAS_CONV_POINTWISE = hasattr(torch.ops, "mkldnn") and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


def conv_relu(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, m: nn.Conv2d) -> torch.Tensor:
    """relu(conv2d(x, w, b)) in one oneDNN call (CPU, float32, channels_last)."""
    return torch.ops.mkldnn._convolution_pointwise(
        x, w, b, pair(m.padding), pair(m.stride), pair(m.dilation), m.groups, "relu", [], "")


def pair(v: Any) -> list[int]:
    return [v, v] if isinstance(v, int) else list(v)


def conv_transpose(c: torch.Tensor, w: torch.Tensor, in_hw: Any, stride: Any, padding: Any,
                    dilation: Any, groups: int) -> torch.Tensor:
    """Input-gradient of a 2-D convolution (transposed conv with the right output padding)."""
    st, pd, dl = pair(stride), pair(padding), pair(dilation)
    kh, kw = w.shape[-2], w.shape[-1]
    oh, ow = c.shape[-2], c.shape[-1]
    op_h = in_hw[0] - ((oh - 1) * st[0] - 2 * pd[0] + dl[0] * (kh - 1) + 1)
    op_w = in_hw[1] - ((ow - 1) * st[1] - 2 * pd[1] + dl[1] * (kw - 1) + 1)
    return F.conv_transpose2d(c, w, None, st, pd, (op_h, op_w), groups, dl)


def conv_input_grad(c: torch.Tensor, w: torch.Tensor, in_shape: torch.Size, m: nn.Conv2d) -> torch.Tensor:
    return conv_transpose(c, w, in_shape[-2:], m.stride, m.padding, m.dilation, m.groups)
