"""Bias-free conservation: the check that catches an op without a proper LRP rule.

With every additive shift of a model set to zero (biases, BatchNorm means and β, LayerNorm /
GroupNorm shifts, position embeddings, class/register tokens, additive attention biases), LRP
with a small ε must return input relevance summing to the target logit (``seed="logit"``):
an op whose relevance is not conserved (a residual add without the Norm rule doubles it, a
plain gradient through LayerNorm or attention scales it arbitrarily) shows up as Σ R / logit far
from 1. Zero- or tiny-initialized gains (zero-init BN γ of residual blocks, LayerScale 1e-5,
zero heads) are re-drawn first so that no branch is silent, and BatchNorm statistics are
calibrated on data, so that the check cannot pass because a branch carries nothing.

Used by the tests and by ``benchmarks/coverage.py``::

    from reldrop.attribution.backends.graph.check import conservation_ratios, train_steps
    ratios = conservation_ratios(model, (3, 64, 64))           # at init, float64 copy
    train_steps(model, (3, 64, 64), num_classes=10, steps=30)  # SGD on random data, in place
    ratios = conservation_ratios(model, (3, 64, 64))
"""
from __future__ import annotations

import copy
import re
from typing import Any

import torch
import torch.nn as nn

__all__ = ["bias_free_copy", "conservation_ratios", "train_steps", "SHIFT_NAMES", "is_shift"]

#: parameter/buffer names (last component) that are additive shifts
SHIFT_NAMES = ("bias", "beta", "running_mean", "cls_token", "class_token", "reg_token", "dist_token",
               "register_tokens", "pos_embed", "pos_embedding", "pos_emb", "relative_position_bias_table",
               "attention_biases", "rel_pos", "absolute_pos_embed", "mask_token")


_POS_MODULE = re.compile(r"pos(itional)?_?(enc|emb)", re.IGNORECASE)


def is_shift(name: str) -> bool:
    """True for a parameter/buffer name that is an additive shift (see :data:`SHIFT_NAMES`)."""
    last = name.rsplit(".", 1)[-1]
    return any(last == s or last.startswith(s) or last.endswith("_" + s) for s in SHIFT_NAMES) or "bias" in last


def _redraw_tiny(model: nn.Module, threshold: float, generator: torch.Generator) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not p.is_floating_point() or is_shift(name) or p.numel() == 0:
                continue
            if float(p.abs().max()) >= threshold:
                continue
            if p.dim() >= 2:  # a zero-initialized weight (e.g. a head): fan-in scaled normal
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype) / fan_in ** 0.5)
            else:  # a zero/tiny gain (BN γ, LayerScale): uniform in [0.5, 1.5]
                p.copy_(0.5 + torch.rand(p.shape, generator=generator, dtype=p.dtype))


def _calibrate_bn(model: nn.Module, x: torch.Tensor) -> None:
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns:
        return
    saved = {m: m.momentum for m in bns}
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        for chunk in x.split(max(2, x.shape[0] // 2)):
            if chunk.shape[0] > 1:
                model(chunk)
    for m, mom in saved.items():
        m.momentum = mom
    model.eval()


def bias_free_copy(model: nn.Module, calib: torch.Tensor, *, tiny: float = 1e-2, seed: int = 0,
                   dtype: torch.dtype = torch.float64) -> nn.Module:
    """A copy of ``model`` (in ``dtype``, eval mode) with tiny gains re-drawn (max |value| < ``tiny``),
    BatchNorm statistics calibrated on ``calib`` ``(N, ...)`` and every additive shift set to 0."""
    m = copy.deepcopy(model).to(dtype)
    gen = torch.Generator().manual_seed(seed)
    _redraw_tiny(m, tiny, gen)
    _calibrate_bn(m, calib.to(dtype))
    with torch.no_grad():
        for name, t in list(m.named_parameters()) + list(m.named_buffers()):
            if t.is_floating_point() and is_shift(name):
                t.zero_()
        for mod in m.modules():  # position encodings computed by a module (EdgeNeXt's Fourier one): all zero
            if _POS_MODULE.search(type(mod).__name__):
                for t in list(mod.parameters()) + list(mod.buffers()):
                    if t.is_floating_point():
                        t.zero_()
    return m.eval()


def conservation_ratios(model: nn.Module, input_shape: tuple[int, ...], *, batch: int = 4, method: str | None = None,
                        backend: str = "auto", epsilon: float = 1e-9, seed: int = 0, **method_kwargs: Any
                        ) -> torch.Tensor:
    """Σ R / target logit per sample on the bias-free float64 copy of ``model`` (see module docstring).

    ``input_shape``: one sample's shape, e.g. ``(3, 64, 64)``. The target is each sample's
    largest-magnitude logit (a near-zero logit would make the ratio meaningless). ``method``: as
    :func:`reldrop.attribution.attribute` (None: the registry's default). Returns ``(batch,)``;
    NaN where the bias-free copy's logits are all zero (e.g. SqueezeNet after training: a ReLU
    before its pooling head, all its inputs negative without biases) — undefined, not failed.
    """
    from ...core import Attributor

    gen = torch.Generator().manual_seed(seed)
    calib = torch.randn(16, *input_shape, generator=gen, dtype=torch.float64)
    m = bias_free_copy(model, calib, seed=seed)
    x = torch.randn(batch, *input_shape, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        logits = m(x)
    target = logits.abs().argmax(dim=1)
    kwargs = dict(method_kwargs)
    attributor = Attributor(m, method, backend=backend, seed="logit", **kwargs, **(
        {"epsilon": epsilon} if _takes_epsilon(m, method) else {}))
    r = attributor(x, target)
    z = logits.gather(1, target[:, None])[:, 0]
    return r.flatten(1).sum(1) / z


def _takes_epsilon(model: nn.Module, method: str | None) -> bool:
    from ...core import resolve_method
    from ...presets import get_preset

    return "epsilon" in get_preset(resolve_method(model, method)).kwargs


def train_steps(model: nn.Module, input_shape: tuple[int, ...], num_classes: int, *, steps: int = 30,
                batch: int = 8, lr: float = 0.05, seed: int = 0) -> nn.Module:
    """``steps`` SGD steps (momentum 0.9, cross-entropy) on random data, in place; returns ``model``
    (in train mode during the steps, left in eval mode)."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    for _ in range(steps):
        x = torch.randn(batch, *input_shape, generator=gen, dtype=dtype)
        y = torch.randint(0, num_classes, (batch,), generator=gen)
        out = model(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        loss = nn.functional.cross_entropy(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    return model
