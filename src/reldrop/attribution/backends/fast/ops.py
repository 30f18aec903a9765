"""Elementwise and convolution pieces of the fast CNN backend (:mod:`.lrp`): activation factors
in few passes, timm's TF-"same" padding, a fused oneDNN conv+ReLU, the input gradient of a 2-D
convolution (the shared numerics - stabilized division, ``pair``, crop - are in
:mod:`reldrop.attribution.rules`)."""
from __future__ import annotations


import torch
import torch.nn as nn

from ...rules import conv_transpose, pair

__all__ = ["relu_stab_div", "activate", "act_stab_div", "same_pads", "HAS_CONV_POINTWISE",
           "conv_relu", "conv_input_grad"]


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


HAS_CONV_POINTWISE = hasattr(torch.ops, "mkldnn") and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


def conv_relu(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, m: nn.Conv2d) -> torch.Tensor:
    """relu(conv2d(x, w, b)) in one oneDNN call (CPU, float32, channels_last)."""
    return torch.ops.mkldnn._convolution_pointwise(
        x, w, b, pair(m.padding), pair(m.stride), pair(m.dilation), m.groups, "relu", [], "")


def conv_input_grad(c: torch.Tensor, w: torch.Tensor, in_shape: torch.Size, m: nn.Conv2d) -> torch.Tensor:
    return conv_transpose(c, w, in_shape[-2:], m.stride, m.padding, m.dilation, m.groups)
