"""Autograd pieces of the graph LRP engine: each LRP rule as a *modified gradient*.

Convention (the "x ⊙ grad" form, as in lxt's efficient rules and the fast backends): the
backward pass carries ``g`` with ``R = x ⊙ g`` at every tensor. Then

* LRP-0 on any linear map (reshape, LayerNorm with 1/σ held constant, a product with a held
  gate, BatchNorm standing alone) is the plain gradient;
* LRP-ε on a layer/map with output ``z`` is the plain gradient after multiplying ``g`` by
  ``z / stab_ε(z)`` at the output (:class:`ScaleGrad`; at the logits the seed ``R`` is divided by
  ``stab_ε(z)`` instead);
* the identity rule on an element-wise activation ``y = f(x)`` multiplies by ``f(x) / x``
  (:class:`IdentityRule`);
* the uniform rule on a product of two signals halves both gradients (:class:`UniformMul`,
  :class:`UniformMatmul`);
* z⁺ and γ need their own backward (:class:`ZPlusLinear`, :class:`GammaLinear`);
* Flat and ZBox on the first layer work on the relevance itself (:func:`flat_rule`,
  :func:`zbox_rule`), after the backward.

``stab_ε(z) = z + ε·sign(z)``, ``sign(0) = +1`` (zennit's ``stabilize``):
:func:`reldrop.attribution.rules.stabilize`, and ``z / stab_ε(z)`` is
:func:`~reldrop.attribution.rules.stab_div`.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

from ...rules import stab_div, stabilize

__all__ = ["ScaleGrad", "scale_grad", "ScaleAct", "scale_act", "IdentityRule", "identity_rule", "UniformMul",
           "UniformMatmul", "ZPlusLinear", "GammaLinear", "LayerNormConst", "GroupNormConst", "RMSNormConst",
           "flat_rule", "zbox_rule", "HalfGrad"]


class ScaleGrad(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by ``z / stab_ε(z)`` (LRP-ε at ``z``) or,
    ``top=True`` (the output layer, gradient = relevance seed), by ``1 / stab_ε(z)``."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, eps: float, top: bool) -> torch.Tensor:
        ctx.eps, ctx.top = eps, top
        ctx.save_for_backward(z)
        return z.view_as(z)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple:
        (z,) = ctx.saved_tensors
        if ctx.top:
            return g / stabilize(z, ctx.eps), None, None
        return g * stab_div(z, ctx.eps), None, None


def scale_grad(z: torch.Tensor, eps: float, top: bool = False) -> torch.Tensor:
    return ScaleGrad.apply(z, eps, top) if z.requires_grad else z


class ScaleAct(torch.autograd.Function):
    """``y = fn(z)`` right after a stabilized layer/sum ``z`` (its only reader): LRP-ε at ``z`` and the
    identity rule of the activation in one factor, ``g · fn(z) / stab_ε(z)`` (as the fast backends)."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor], eps: float) -> torch.Tensor:
        y = fn(z)
        ctx.eps = eps
        ctx.save_for_backward(z, y)
        return y

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple:
        z, y = ctx.saved_tensors
        den = z.abs().add_(ctx.eps).copysign_(z)  # -0.0 gives -eps: only where y = fn(0) = 0 anyway
        return g * torch.div(y, den, out=den), None, None


def scale_act(z: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor], eps: float) -> torch.Tensor:
    return ScaleAct.apply(z, fn, eps) if z.requires_grad else fn(z)


class IdentityRule(torch.autograd.Function):
    """``y = fn(x)`` with the identity rule ``R_x = R_y``: backward ``g · y / x`` (``limit`` where x = 0)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor], limit: float) -> torch.Tensor:
        y = fn(x)
        ctx.limit = limit
        ctx.save_for_backward(x, y)
        return y

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple:
        x, y = ctx.saved_tensors
        zero = x == 0
        r = torch.where(zero, ctx.limit, y / torch.where(zero, 1.0, x))
        return g * r, None, None


def identity_rule(x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor], limit: float = 0.0) -> torch.Tensor:
    if not x.requires_grad:
        return fn(x)
    return IdentityRule.apply(x, fn, limit)


class HalfGrad(torch.autograd.Function):
    """Identity forward, gradient × 0.5 (one factor of the uniform rule)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        return g * 0.5


class UniformMul(torch.autograd.Function):
    """``a * b`` of two signals, uniform rule: each operand gets half of the relevance."""

    @staticmethod
    def forward(ctx: Any, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(a, b)
        ctx.shapes = (a.shape, b.shape)
        return a * b

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple:
        a, b = ctx.saved_tensors
        h = g * 0.5
        return _unbroadcast(h * b, ctx.shapes[0]), _unbroadcast(h * a, ctx.shapes[1])


class UniformMatmul(torch.autograd.Function):
    """``a @ b`` of two signals, uniform rule (half of the gradient to each operand)."""

    @staticmethod
    def forward(ctx: Any, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(a, b)
        return torch.matmul(a, b)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple:
        a, b = ctx.saved_tensors
        with torch.enable_grad():
            a_ = a.detach().requires_grad_(True)
            b_ = b.detach().requires_grad_(True)
            out = torch.matmul(a_, b_)
            ga, gb = torch.autograd.grad(out, (a_, b_), g * 0.5)
        return ga, gb


def _unbroadcast(t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    if t.shape == shape:
        return t
    while t.dim() > len(shape):
        t = t.sum(0)
    dims = [i for i, (s, n) in enumerate(zip(shape, t.shape)) if s == 1 and n != 1]
    return t.sum(dims, keepdim=True) if dims else t


LinFn = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


def _part(t: torch.Tensor | None, positive: bool) -> torch.Tensor | None:
    """``t⁺`` (``positive``) or ``t⁻`` of an optional tensor (a bias)."""
    if t is None:
        return None
    return t.clamp(min=0) if positive else t.clamp(max=0)


def _save_linear(ctx: Any, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, lin: LinFn,
                 stabilizer: float, top: bool) -> torch.Tensor:
    """The forward of a conv/linear layer with its own rule: ``z = lin(x, W, b)``, what the backward needs saved."""
    z = lin(x, w, b)
    ctx.lin, ctx.stabilizer, ctx.top, ctx.b = lin, stabilizer, top, b
    ctx.save_for_backward(x, w, z)
    return z


def _sign_split_grad(x: torch.Tensor, halves: Callable[[torch.Tensor, torch.Tensor], tuple[tuple, tuple]]
                     ) -> torch.Tensor:
    """The backward of a rule that treats ``x⁺`` and ``x⁻`` apart (z⁺, γ): ``halves(x⁺, x⁻)`` gives the
    modified outputs and their output gradients; the input gradient is x⁺'s where ``x > 0``, else x⁻'s."""
    with torch.enable_grad():
        xp = x.clamp(min=0).requires_grad_(True)
        xn = x.clamp(max=0).requires_grad_(True)
        outs, grads = halves(xp, xn)
        gp, gn = torch.autograd.grad(outs, (xp, xn), grads)
    return torch.where(x > 0, gp, gn)


class ZPlusLinear(torch.autograd.Function):
    """A conv/linear layer ``z = lin(x, W, b)`` with zennit's ZPlus rule:
    ``R_x = x⁺ ⊙ W⁺ᵀ c + x⁻ ⊙ W⁻ᵀ c``, ``c = R_z / stab(lin(x⁺, W⁺, b⁺) + lin(x⁻, W⁻))``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, lin: LinFn, stabilizer: float,
                top: bool) -> torch.Tensor:
        return _save_linear(ctx, x, w, b, lin, stabilizer, top)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple:
        x, w, z = ctx.saved_tensors
        b, lin = ctx.b, ctx.lin
        r = g if ctx.top else g * z

        def halves(xp: torch.Tensor, xn: torch.Tensor) -> tuple[tuple, tuple]:
            zp = lin(xp, w.clamp(min=0), _part(b, True)) + lin(xn, w.clamp(max=0), None)
            return (zp,), (r / stabilize(zp.detach(), ctx.stabilizer),)

        return _sign_split_grad(x, halves), None, None, None, None, None


class GammaLinear(torch.autograd.Function):
    """A conv/linear layer with zennit's (generalized) Gamma rule (γ on the positive/negative parts)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, lin: LinFn, gamma: float,
                stabilizer: float, top: bool) -> torch.Tensor:
        ctx.gamma = gamma
        return _save_linear(ctx, x, w, b, lin, stabilizer, top)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple:
        x, w, z = ctx.saved_tensors
        b, gm, lin = ctx.b, ctx.gamma, ctx.lin
        wp = w + gm * w.clamp(min=0)
        wn = w + gm * w.clamp(max=0)
        bp = None if b is None else b + gm * b.clamp(min=0)
        bn = None if b is None else b + gm * b.clamp(max=0)
        r = g if ctx.top else g * z

        def halves(xp: torch.Tensor, xn: torch.Tensor) -> tuple[tuple, tuple]:
            pos = lin(xp, wp, bp) + lin(xn, wn, None)
            neg = lin(xp, wn, bn) + lin(xn, wp, None)
            c_pos = (z > 0).to(r) * r / stabilize(pos.detach(), ctx.stabilizer)
            c_neg = (z < 0).to(r) * r / stabilize(neg.detach(), ctx.stabilizer)
            return (pos, neg), (c_pos, c_neg)

        return _sign_split_grad(x, halves), None, None, None, None, None, None


class LayerNormConst(torch.autograd.Function):
    """``layer_norm`` with 1/σ held constant (AttnLRP/lxt): backward ``((gγ) - mean(gγ)) / σ``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, shape: tuple, w: torch.Tensor | None, b: torch.Tensor | None,
                eps: float) -> torch.Tensor:
        y, _mean, rstd = torch.native_layer_norm(x, shape, w, b, eps)
        ctx.dims = tuple(range(-len(shape), 0))
        ctx.save_for_backward(rstd, w)
        ctx.has_w = w is not None
        return y

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple:
        rstd, w = ctx.saved_tensors
        h = g * w if ctx.has_w else g
        return (h - h.mean(dim=ctx.dims, keepdim=True)).mul_(rstd), None, None, None, None


class GroupNormConst(torch.autograd.Function):
    """``group_norm`` with each group's 1/σ held constant."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, groups: int, w: torch.Tensor | None, b: torch.Tensor | None,
                eps: float) -> torch.Tensor:
        n, c = x.shape[0], x.shape[1]
        hw = x[0, 0].numel()
        y, _mean, rstd = torch.ops.aten.native_group_norm(x, w, b, n, c, hw, groups, eps)
        ctx.groups = groups
        ctx.has_w = w is not None
        ctx.save_for_backward(rstd, w)
        return y

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple:
        rstd, w = ctx.saved_tensors
        shape = g.shape
        h = g * w.reshape(1, -1, *([1] * (g.dim() - 2))) if ctx.has_w else g
        h = h.reshape(shape[0], ctx.groups, -1)
        h = (h - h.mean(dim=-1, keepdim=True)) * rstd.reshape(shape[0], ctx.groups, 1)
        return h.reshape(shape), None, None, None, None


class RMSNormConst(torch.autograd.Function):
    """``rms_norm`` with 1/rms held constant: backward ``g γ / rms``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, shape: tuple, w: torch.Tensor | None, eps: float | None) -> torch.Tensor:
        dims = tuple(range(-len(shape), 0))
        e = torch.finfo(x.dtype).eps if eps is None else eps
        rstd = torch.rsqrt(x.pow(2).mean(dim=dims, keepdim=True) + e)
        y = x * rstd
        if w is not None:
            y = y * w
        ctx.has_w = w is not None
        ctx.save_for_backward(rstd, w)
        return y

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple:
        rstd, w = ctx.saved_tensors
        h = g * w if ctx.has_w else g
        return h * rstd, None, None, None


def flat_rule(r_out: torch.Tensor, x_shape: torch.Size, lin_struct: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
              w_shape: torch.Size, groups: int, stabilizer: float, dense: bool) -> torch.Tensor:
    """zennit's Flat rule: ``R_x = 1ᵀ (R_out / stab(lin(1, 1)))`` (ones for the input and the weight, no bias).

    ``lin_struct(x, w)``: the layer's map without bias (its padding/stride/dilation; for a conv with
    ``groups == 1`` it is applied to one channel with a one-channel kernel, a cheaper way to the
    same numbers). ``dense``: a Linear layer (every output sees every input).
    """
    dt, dev = r_out.dtype, r_out.device
    if dense:
        n_in = w_shape[1]
        s = r_out.sum(dim=-1, keepdim=True) / (n_in + stabilizer)
        return s.expand(*r_out.shape[:-1], n_in).contiguous()
    spatial = tuple(x_shape[2:])
    k = tuple(w_shape[2:])
    cin = x_shape[1]
    if groups == 1:
        with torch.enable_grad():
            ones_k = torch.ones(1, 1, *k, dtype=dt, device=dev)
            count = lin_struct(torch.ones(1, 1, *spatial, dtype=dt, device=dev), ones_k) * cin
            s = r_out.sum(dim=1, keepdim=True) / (count + stabilizer)
            xo = torch.ones(r_out.shape[0], 1, *spatial, dtype=dt, device=dev, requires_grad=True)
            (r,) = torch.autograd.grad(lin_struct(xo, ones_k), xo, s)
        return r.expand(r_out.shape[0], cin, *spatial).contiguous()
    with torch.enable_grad():
        ones_w = torch.ones(w_shape, dtype=dt, device=dev)
        count = lin_struct(torch.ones(1, *x_shape[1:], dtype=dt, device=dev), ones_w)
        xo = torch.ones(r_out.shape[0], *x_shape[1:], dtype=dt, device=dev, requires_grad=True)
        (r,) = torch.autograd.grad(lin_struct(xo, ones_w), xo, r_out / stabilize(count, stabilizer))
    return r


def zbox_rule(r_out: torch.Tensor, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, lin: LinFn,
              low: Any, high: Any, stabilizer: float) -> torch.Tensor:
    """zennit's ZBox rule: ``R_x = x ⊙ Wᵀc − l ⊙ W⁺ᵀc − h ⊙ W⁻ᵀc``,
    ``c = R_out / stab(lin(x, W, b) − lin(l, W⁺, b⁺) − lin(h, W⁻, b⁻))``."""
    low_t = torch.as_tensor(low, dtype=x.dtype, device=x.device).expand_as(x)
    high_t = torch.as_tensor(high, dtype=x.dtype, device=x.device).expand_as(x)
    with torch.enable_grad():
        xa = x.detach().clone().requires_grad_(True)
        la = low_t.clone().requires_grad_(True)
        ha = high_t.clone().requires_grad_(True)
        zb = lin(xa, w, b) - lin(la, w.clamp(min=0), _part(b, True)) - lin(ha, w.clamp(max=0), _part(b, False))
        gx, gl, gh = torch.autograd.grad(zb, (xa, la, ha), r_out / stabilize(zb.detach(), stabilizer))
    return x * gx + low_t * gl + high_t * gh


def conv_fn(dims: int, stride: Any, padding: Any, dilation: Any, groups: int,
            pre_pad: Callable[[torch.Tensor], torch.Tensor] | None = None) -> LinFn:
    """``lin(x, w, b)`` of a convolution with fixed hyper-parameters (``pre_pad``: explicit padding first)."""
    fn = (F.conv1d, F.conv2d, F.conv3d)[dims - 1]

    def lin(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        if pre_pad is not None:
            x = pre_pad(x)
        return fn(x, w, b, stride, padding, dilation, groups)

    return lin


def dense_fn(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    return F.linear(x, w, b)
