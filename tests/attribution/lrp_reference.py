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

__all__ = ["merge_bn", "stabilize", "lrp_resnet", "resnet_forward"]


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


def _blocks(model: nn.Module) -> list[nn.Module]:
    blocks = []
    i = 1
    while hasattr(model, f"layer{i}"):
        blocks += list(getattr(model, f"layer{i}"))
        i += 1
    return blocks


def _downsample(block: nn.Module) -> tuple[nn.Module | None, _Affine | None]:
    """(pre-pool or None, merged conv) of a block's downsample, or (None, None)."""
    ds = getattr(block, "downsample", None)
    if ds is None:
        return None, None
    mods = [m for m in ds if not isinstance(m, nn.Identity)]
    if len(mods) == 2:
        return None, _Affine(mods[0], mods[1])
    if len(mods) == 3:  # timm downsample_avg: (AvgPool2d, conv, bn) - pool relevance via Norm
        return mods[0], _Affine(mods[1], mods[2])
    raise ValueError(f"unsupported downsample {ds}")


def resnet_forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Logits of the merged network (equals ``model.eval()(x)`` up to rounding)."""
    return _run(model, x)[0]


def _run(model: nn.Module, x: torch.Tensor):
    stem = _Affine(model.conv1, model.bn1)
    h = F.relu(stem.forward(x))
    trace = {"stem": (stem, x), "stem_out": h}
    a = model.maxpool(h)
    layers = []
    for block in _blocks(model):
        convs = [_Affine(block.conv1, block.bn1), _Affine(block.conv2, block.bn2)]
        if hasattr(block, "conv3"):
            convs.append(_Affine(block.conv3, block.bn3))
        acts = [a]
        out = a
        for k, conv in enumerate(convs):
            out = conv.forward(out)
            if k < len(convs) - 1:
                out = F.relu(out)
                acts.append(out)
        pool, ds = _downsample(block)
        if ds is None:
            idn, ds_in = a, None
        else:
            ds_in = pool(a) if pool is not None else a
            idn = ds.forward(ds_in)
        z = out + idn
        layers.append((convs, acts, out, pool, ds, ds_in, idn, z))
        a = F.relu(z)
    pooled = a.mean(dim=(2, 3))
    fc = _Affine(model.fc, None)
    logits = fc.forward(pooled)
    trace.update(layers=layers, last=a, pooled=pooled, fc=fc)
    return logits, trace


def _norm(parts: list[torch.Tensor], total: torch.Tensor, r: torch.Tensor, stab: float) -> list[torch.Tensor]:
    s = r / stabilize(total, stab)
    return [p * s for p in parts]


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
    x = x.to(model.conv1.weight.dtype)
    logits, tr = _run(model, x)
    idx = target.long()[:, None]
    value = logits.gather(1, idx) if seed == "logit" else torch.ones_like(idx, dtype=logits.dtype)
    r = torch.zeros_like(logits).scatter_(1, idx, value)

    def lin(layer: _Affine, a: torch.Tensor, rr: torch.Tensor) -> torch.Tensor:
        return layer.epsilon(a, rr, epsilon) if rule == "epsilon" else layer.zplus(a, rr, stabilizer)

    r = lin(tr["fc"], tr["pooled"], r)
    last = tr["last"]
    (r,) = _norm([last / (last.shape[2] * last.shape[3])], tr["pooled"][:, :, None, None], r[:, :, None, None], stabilizer)
    for convs, acts, out, pool, ds, ds_in, idn, z in reversed(tr["layers"]):
        r_out, r_idn = _norm([out, idn], z, r, stabilizer)  # ReLU after the sum: pass
        for conv, a in zip(reversed(convs), reversed(acts)):
            r_out = lin(conv, a, r_out)  # ReLUs inside the branch: pass
        if ds is None:
            r = r_out + r_idn
        else:
            r_ds = lin(ds, ds_in, r_idn)
            if pool is not None:
                a_in = acts[0]
                with torch.enable_grad():
                    a_req = a_in.detach().requires_grad_(True)
                    pooled = pool(a_req)
                    (g,) = torch.autograd.grad(pooled, a_req, r_ds / stabilize(pooled.detach(), stabilizer))
                r_ds = a_in * g
            r = r_out + r_ds
    # max pool (or Identity): route relevance like the gradient
    stem_out = tr["stem_out"]
    if not isinstance(model.maxpool, nn.Identity):
        with torch.enable_grad():
            h = stem_out.detach().requires_grad_(True)
            (r,) = torch.autograd.grad(model.maxpool(h), h, r)
    stem, x0 = tr["stem"]
    return stem.flat(x0, r, stabilizer)
