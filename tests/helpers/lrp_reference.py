"""Ground truth: an explicit, layer-by-layer LRP of a (torchvision- or timm-style) ResNet in plain torch.

No zennit, no hooks, no autograd tricks (except max-pool routing): every layer's relevance rule is
written out, so this file is the reference the zennit-backed and the fast backends are tested
against. Import it from other tests::

    from tests.attribution.lrp_reference import lrp_resnet   # or: from lrp_reference import ...
    R = lrp_resnet(model, x, target, rule="epsilon", epsilon=1e-3)      # (B, C, H, W)

What is computed (matches ``reldrop.attribution`` presets ``epsilon_flat``/``zplus_flat`` with the
corrected canonization):

* Every BN is merged into the conv before it, in float64 math of the caller's dtype:
  ``W' = W·γ/sqrt(σ²+ε_bn)``, ``b' = (b−μ)·γ/sqrt(σ²+ε_bn) + β`` (``merge_bn``).
* Output relevance (seed) = ``one_hot(target) · logit`` (``seed="logit"``) or ``one_hot``
  (``seed="one"``).
* fc and every conv except the first: LRP-ε (``z = W'a + b'``, ``R_in = a ⊙ W'ᵀ(R / (z + ε·sign z))``,
  sign(0) = +1, as zennit) or LRP-z⁺ (zennit's ZPlus: positive inputs×positive weights + positive
  bias, plus negative inputs×negative weights).
* Global average pool and every residual sum: proportional split ("Norm" rule)
  ``R_i = x_i · R / (Σx + s·sign)`` with stabilizer s = 1e-6.
* ReLU: relevance passes unchanged. Max pool: relevance routed to the max (gradient).
* First conv: Flat rule (``R_in = 1ᵀ(R / (1ᵀ1 + s))`` with all-ones weights and inputs, no bias).

The model must have attributes ``conv1, bn1, maxpool (or Identity), layer1..layerN, fc`` with
torchvision/timm BasicBlock/Bottleneck blocks (``conv1, bn1, conv2, bn2[, conv3, bn3], downsample``).
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["merge_bn", "stabilize", "lrp_resnet", "resnet_forward", "lrp_family", "family_forward"]


def stabilize(z: torch.Tensor, eps: float) -> torch.Tensor:
    """``z + eps·sign(z)`` with sign(0) = +1 (zennit's convention)."""
    return z + eps * ((z == 0).to(z) + z.sign())


def merge_bn(conv: nn.Module, bn: nn.Module | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of ``bn(conv(x))`` as one affine layer (eval-mode BN, its real eps)."""
    weight = conv.weight.detach()
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros(weight.shape[0], dtype=weight.dtype)
    if bn is None:
        return weight, bias
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    shape = (-1,) + (1,) * (weight.dim() - 1)
    return weight * scale.reshape(shape), (bias - bn.running_mean) * scale + bn.bias.detach()


class _Affine:
    """A merged conv (or linear) layer with explicit forward and relevance rules."""

    def __init__(self, conv: nn.Module, bn: nn.Module | None) -> None:
        self.weight, self.bias = merge_bn(conv, bn)
        self.linear = isinstance(conv, nn.Linear)
        if not self.linear:
            self.kw = dict(stride=conv.stride, padding=conv.padding, dilation=conv.dilation, groups=conv.groups)

    def _fwd(self, a: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        return F.linear(a, w, b) if self.linear else F.conv2d(a, w, b, **self.kw)

    def _bwd(self, shape: torch.Size, w: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        if self.linear:
            return s @ w
        return torch.nn.grad.conv2d_input(shape, w, s, **self.kw)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return self._fwd(a, self.weight, self.bias)

    def epsilon(self, a: torch.Tensor, r: torch.Tensor, eps: float) -> torch.Tensor:
        s = r / stabilize(self.forward(a), eps)
        return a * self._bwd(a.shape, self.weight, s)

    def zplus(self, a: torch.Tensor, r: torch.Tensor, stab: float) -> torch.Tensor:
        ap, an = a.clamp(min=0), a.clamp(max=0)
        wp, wn = self.weight.clamp(min=0), self.weight.clamp(max=0)
        z = self._fwd(ap, wp, self.bias.clamp(min=0)) + self._fwd(an, wn, None)
        s = r / stabilize(z, stab)
        return ap * self._bwd(a.shape, wp, s) + an * self._bwd(a.shape, wn, s)

    def flat(self, a: torch.Tensor, r: torch.Tensor, stab: float) -> torch.Tensor:
        ones_w = torch.ones_like(self.weight)
        z = self._fwd(torch.ones_like(a), ones_w, None)
        return self._bwd(a.shape, ones_w, r / stabilize(z, stab))


# ------------------------------------------------------------------ the walker: one tape for every family
# Each family's walker records the forward steps on a _Tape (every conv merged with the BN after it;
# activations - ReLU, ReLU6, the activation *inside* timm's BatchNormAct2d - pass relevance and record
# nothing), and _replay runs the tape backwards: the first conv gets Flat, every other conv/linear ε
# or z⁺, residual sums and average pools the Norm rule, max pools route relevance like the gradient.
# TF "same" padding (timm Conv2dSame) is an explicit zero pad before the conv: its relevance backward
# is a crop.


def _same_pad(x: torch.Tensor, conv: nn.Module) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) zero padding of timm's Conv2dSame for input ``x``."""
    import math

    pads = []
    for size, k, s, d in zip(x.shape[-2:], conv.kernel_size, conv.stride, conv.dilation):
        pads.append(max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0))
    ph, pw = pads
    return (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)


class _Conv(_Affine):
    """A merged conv that may pad explicitly first (timm Conv2dSame)."""

    def __init__(self, conv: nn.Module, bn: nn.Module | None) -> None:
        super().__init__(conv, bn)
        self.same = type(conv).__name__ == "Conv2dSame"
        self.conv = conv

    def _pad(self, a: torch.Tensor) -> torch.Tensor:
        return F.pad(a, _same_pad(a, self.conv)) if self.same else a

    def _crop(self, r: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        if not self.same:
            return r
        left, _, top, _ = _same_pad(torch.empty(shape), self.conv)
        return r[..., top:top + shape[-2], left:left + shape[-1]]

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return self._fwd(self._pad(a), self.weight, self.bias)

    def epsilon(self, a: torch.Tensor, r: torch.Tensor, eps: float) -> torch.Tensor:
        ap = self._pad(a)
        s = r / stabilize(self._fwd(ap, self.weight, self.bias), eps)
        return self._crop(ap * self._bwd(ap.shape, self.weight, s), a.shape)

    def zplus(self, a: torch.Tensor, r: torch.Tensor, stab: float) -> torch.Tensor:
        ap = self._pad(a)
        return self._crop(_Affine.zplus(self, ap, r, stab), a.shape)

    def flat(self, a: torch.Tensor, r: torch.Tensor, stab: float) -> torch.Tensor:
        ones_w = torch.ones_like(self.weight)
        ones = self._pad(torch.ones_like(a))  # zennit: ones replace the input, the pad stays zero
        z = self._fwd(ones, ones_w, None)
        return self._crop(self._bwd(ones.shape, ones_w, r / stabilize(z, stab)), a.shape)


def _norm(parts: list[torch.Tensor], total: torch.Tensor, r: torch.Tensor, stab: float) -> list[torch.Tensor]:
    s = r / stabilize(total, stab)
    return [p * s for p in parts]


def _replay(logits: torch.Tensor, tape: "_Tape", target: torch.Tensor, rule: str, epsilon: float,
            stabilizer: float, seed: str) -> torch.Tensor:
    """The tape's backward from the seed ``one_hot(target)`` (· logit for ``seed="logit"``)."""
    idx = target.long()[:, None]
    value = logits.gather(1, idx) if seed == "logit" else torch.ones_like(idx, dtype=logits.dtype)
    r = torch.zeros_like(logits).scatter_(1, idx, value)

    def lin(layer: _Affine, a: torch.Tensor, rr: torch.Tensor) -> torch.Tensor:
        return layer.epsilon(a, rr, epsilon) if rule == "epsilon" else layer.zplus(a, rr, stabilizer)

    lin.stab = stabilizer  # type: ignore[attr-defined]
    return tape.backward(r, lin)


def _act_of(bn: nn.Module | None) -> nn.Module | None:
    """The activation a timm BatchNormAct2d applies after normalizing (None: identity)."""
    act = getattr(bn, "act", None)
    return None if act is None or isinstance(act, nn.Identity) else act


class _Tape:
    """Forward steps of a network, replayed backwards with the LRP rules."""

    def __init__(self) -> None:
        self.steps: list[tuple] = []
        self.first = True

    # -- forward
    def conv(self, conv: nn.Module, bn: nn.Module | None, a: torch.Tensor) -> torch.Tensor:
        layer = _Conv(conv, bn)
        self.steps.append(("lin", layer, a, self.first))
        self.first = False
        out = layer.forward(a)
        act = _act_of(bn)
        return act(out) if act is not None else out

    def act(self, fn, a: torch.Tensor) -> torch.Tensor:
        return fn(a)  # relevance passes: no step

    def maxpool(self, pool: nn.Module, a: torch.Tensor) -> torch.Tensor:
        self.steps.append(("maxpool", pool, a))
        return pool(a)

    def avgpool(self, pool, a: torch.Tensor) -> torch.Tensor:
        out = pool(a)
        self.steps.append(("avgpool", pool, a, out))
        return out

    def flatten(self, a: torch.Tensor) -> torch.Tensor:
        self.steps.append(("flatten", a.shape))
        return a.flatten(1)

    def residual(self, body, a: torch.Tensor, shortcut=None) -> torch.Tensor:
        """``body(a) + shortcut(a)`` (``shortcut`` None: ``a``), each with its steps on a sub-tape;
        the sum gets the Norm rule."""
        sub = _Tape()
        sub.first = self.first
        out = body(sub, a)
        self.first = sub.first
        short = _Tape()
        short.first = self.first
        idn = a if shortcut is None else shortcut(short, a)
        self.first = short.first
        z = out + idn
        self.steps.append(("residual", sub, short, out, idn, z))
        return z

    def chain(self, leaves: list[nn.Module], a: torch.Tensor) -> torch.Tensor:
        """A plain sequence of leaves: conv(+BN), activations, pools, dropout/identity."""
        i = 0
        while i < len(leaves):
            m = leaves[i]
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                bn = leaves[i + 1] if i + 1 < len(leaves) and isinstance(leaves[i + 1], nn.BatchNorm2d) else None
                a = self.conv(m, bn, a)
                i += 2 if bn is not None else 1
                continue
            if isinstance(m, (nn.ReLU, nn.ReLU6)):
                a = self.act(m, a)
            elif isinstance(m, nn.MaxPool2d):
                a = self.maxpool(m, a)
            elif isinstance(m, (nn.AdaptiveAvgPool2d, nn.AvgPool2d)):
                a = self.avgpool(m, a)
            elif isinstance(m, nn.Flatten):
                a = self.flatten(a)
            elif not isinstance(m, (nn.Dropout, nn.Identity)):
                raise ValueError(f"reference: unsupported leaf {type(m).__name__}")
            i += 1
        return a

    # -- backward
    def backward(self, r: torch.Tensor, lin) -> torch.Tensor:
        for step in reversed(self.steps):
            kind = step[0]
            if kind == "lin":
                _, layer, a, first = step
                r = layer.flat(a, r, lin.stab) if first else lin(layer, a, r)
            elif kind == "maxpool":
                _, pool, a = step
                with torch.enable_grad():
                    h = a.detach().requires_grad_(True)
                    (r,) = torch.autograd.grad(pool(h), h, r)
            elif kind == "avgpool":
                _, pool, a, out = step
                with torch.enable_grad():
                    h = a.detach().requires_grad_(True)
                    (g,) = torch.autograd.grad(pool(h), h, r / stabilize(out, lin.stab))
                r = a * g
            elif kind == "flatten":
                r = r.reshape(step[1])
            elif kind == "residual":
                _, sub, short, out, idn, z = step
                r_out, r_idn = _norm([out, idn], z, r, lin.stab)
                r = sub.backward(r_out, lin) + short.backward(r_idn, lin)
        return r


def _leaves(module: nn.Module) -> list[nn.Module]:
    """Leaves in registration order, a BatchNorm (timm BatchNormAct2d) counted as one leaf."""
    if isinstance(module, nn.BatchNorm2d) or not list(module.children()):
        return [module]
    return [leaf for child in module.children() for leaf in _leaves(child)]


# ------------------------------------------------------------------------------- ResNets
def _blocks(model: nn.Module) -> list[nn.Module]:
    blocks = []
    i = 1
    while hasattr(model, f"layer{i}"):
        blocks += list(getattr(model, f"layer{i}"))
        i += 1
    return blocks


def _resnet_branch(tape: _Tape, block: nn.Module, a: torch.Tensor) -> torch.Tensor:
    """conv1/bn1 -> ReLU -> conv2/bn2 [-> ReLU -> conv3/bn3] of a BasicBlock/Bottleneck."""
    pairs = [(block.conv1, block.bn1), (block.conv2, block.bn2)]
    if hasattr(block, "conv3"):
        pairs.append((block.conv3, block.bn3))
    for k, (conv, bn) in enumerate(pairs):
        a = tape.conv(conv, bn, a)
        if k < len(pairs) - 1:
            a = tape.act(F.relu, a)
    return a


def _resnet_shortcut(block: nn.Module):
    """The tape body of a block's downsample (conv+BN, timm's downsample_avg: AvgPool2d first), or None."""
    ds = getattr(block, "downsample", None)
    if ds is None:
        return None
    mods = [m for m in ds if not isinstance(m, nn.Identity)]
    if len(mods) not in (2, 3):
        raise ValueError(f"unsupported downsample {ds}")
    pool, conv, bn = (None, *mods) if len(mods) == 2 else mods

    def shortcut(t: _Tape, a: torch.Tensor) -> torch.Tensor:
        return t.conv(conv, bn, a if pool is None else t.avgpool(pool, a))  # pool relevance via Norm

    return shortcut


def _trace_resnet(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, _Tape]:
    """Logits and the forward tape of a torchvision/timm-style ResNet."""
    tape = _Tape()
    h = tape.act(F.relu, tape.conv(model.conv1, model.bn1, x))
    h = tape.chain(_leaves(model.maxpool), h)  # max pool (or Identity): relevance routed like the gradient
    for block in _blocks(model):
        h = tape.act(F.relu, tape.residual(lambda t, a, b=block: _resnet_branch(t, b, a), h,
                                           _resnet_shortcut(block)))
    h = tape.flatten(tape.avgpool(nn.AdaptiveAvgPool2d(1), h))
    return tape.conv(model.fc, None, h), tape


def resnet_forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Logits of the merged network (equals ``model.eval()(x)`` up to rounding)."""
    with torch.no_grad():
        return _trace_resnet(model, x)[0]


@torch.no_grad()
def lrp_resnet(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    rule: Literal["epsilon", "zplus"] = "epsilon",
    epsilon: float = 1e-3,
    stabilizer: float = 1e-6,
    seed: Literal["logit", "one"] = "one",
) -> torch.Tensor:
    """Explicit LRP (Flat first conv, ``rule`` on every other conv/linear, Norm on sums/avg pool).

    Args:
        model: torchvision/timm-style ResNet (eval-mode statistics are used; the model is not modified).
        x: ``(B, C, H, W)``; use float64 for a ground truth.
        target: LongTensor ``(B,)``.
        rule: ``"epsilon"`` (LRP-ε with ``epsilon``) or ``"zplus"``.
        stabilizer: ε of the Flat/Norm/z⁺ denominators (zennit default 1e-6).
        seed: ``"logit"`` (one_hot·logit, reldrop seed="logit") or ``"one"`` (plain one-hot, reldrop default).
    Returns:
        relevance ``(B, C, H, W)``.
    """
    logits, tape = _trace_resnet(model, x.to(model.conv1.weight.dtype))
    return _replay(logits, tape, target, rule, epsilon, stabilizer, seed)


# ------------------------------------------------------------------ inverted-residual CNNs and VGG
# timm EfficientNet-Lite / MobileNet (InvertedResidual, DepthwiseSeparableConv, BatchNormAct2d,
# Conv2dSame), torchvision MobileNetV2 and torchvision VGG (with BN).
def _timm_block(tape: _Tape, blk: nn.Module, a: torch.Tensor) -> torch.Tensor:
    name = type(blk).__name__
    if name == "InvertedResidual":
        def body(t: _Tape, h: torch.Tensor) -> torch.Tensor:
            h = t.conv(blk.conv_pw, blk.bn1, h)
            h = t.conv(blk.conv_dw, blk.bn2, h)
            return t.conv(blk.conv_pwl, blk.bn3, h)
    elif name == "DepthwiseSeparableConv":
        def body(t: _Tape, h: torch.Tensor) -> torch.Tensor:
            h = t.conv(blk.conv_dw, blk.bn1, h)
            return t.conv(blk.conv_pw, blk.bn2, h)
    else:
        raise ValueError(f"reference: unsupported timm block {name}")
    for part in ("aa", "se"):
        if not isinstance(getattr(blk, part), nn.Identity):
            raise ValueError(f"reference: block.{part} must be Identity")
    return tape.residual(body, a) if blk.has_skip else body(tape, a)


def _trace_family(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, _Tape]:
    """Logits and the forward tape of a timm EfficientNet, torchvision MobileNetV2 or VGG."""
    tape = _Tape()
    cls = type(model).__name__
    if cls == "EfficientNet":
        h = tape.conv(model.conv_stem, model.bn1, x)
        for stage in model.blocks:
            for blk in stage:
                h = _timm_block(tape, blk, h)
        h = tape.conv(model.conv_head, model.bn2, h)
        h = tape.flatten(tape.avgpool(nn.AdaptiveAvgPool2d(1), h))
        return tape.conv(model.classifier, None, h), tape
    if cls == "MobileNetV2":
        h = x
        for feat in model.features:
            if type(feat).__name__ == "InvertedResidual":
                body = (lambda f: (lambda t, a: t.chain(_leaves(f.conv), a)))(feat)
                h = tape.residual(body, h) if feat.use_res_connect else body(tape, h)
            else:
                h = tape.chain(_leaves(feat), h)
        h = tape.flatten(tape.avgpool(nn.AdaptiveAvgPool2d(1), h))
        return tape.chain(_leaves(model.classifier), h), tape
    if cls == "VGG":
        h = tape.chain(_leaves(model.features), x)
        h = tape.flatten(tape.avgpool(model.avgpool, h))
        return tape.chain(_leaves(model.classifier), h), tape
    raise ValueError(f"reference: unsupported model {cls}")


def family_forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Logits of the merged network (equals ``model.eval()(x)`` up to rounding)."""
    with torch.no_grad():
        return _trace_family(model, x)[0]


@torch.no_grad()
def lrp_family(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    rule: Literal["epsilon", "zplus"] = "epsilon",
    epsilon: float = 1e-3,
    stabilizer: float = 1e-6,
    seed: Literal["logit", "one"] = "one",
) -> torch.Tensor:
    """Explicit LRP of a timm EfficientNet(-Lite)/MobileNet, torchvision MobileNetV2 or VGG (see
    :func:`lrp_resnet` for the arguments; same rules)."""
    logits, tape = _trace_family(model, x)
    return _replay(logits, tape, target, rule, epsilon, stabilizer, seed)
