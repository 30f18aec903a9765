"""Conservation checks: does an LRP attribution of a model explain its logit?

On a model without additive shifts (no biases, BN means/shifts, LN/GN shifts, position
embeddings, class tokens, additive attention biases) every LRP rule here is conservative up to
its ε, so ``Σ R / target logit`` must be ≈ 1; a rule-less layer crossed by the plain gradient
shows up as a ratio far from 1 (a residual ``x + y`` without the Norm rule doubles relevance at
every add). Two functions:

* :func:`bias_free_copy` - a deep copy of the model, prepared so that no branch is silent and no
  shift absorbs relevance: zero- or tiny-initialized gains re-drawn (zero-init BN γ, LayerScale
  1e-5, skip-init gains, zero heads), BatchNorm statistics calibrated on ``x``, then every additive
  shift zeroed. The model itself is never changed.
* :func:`conservation_ratio` - ``Σ R / target logit`` per sample (``(B,)``, float64).
"""
from __future__ import annotations

import copy
import re
from typing import Any

import torch
import torch.nn as nn

__all__ = ["bias_free_copy", "conservation_ratio", "is_shift", "TINY"]

#: a gain whose largest magnitude is below this is "tiny" (LayerScale 1e-5/1e-6, zero init) and re-drawn
TINY = 1e-3
# names (last component) of parameters/buffers that add to the signal
_SHIFT_NAMES = re.compile(r"(^|_)(bias|beta)$|bias_table$|^attention_biases$|_biases$|pos_embed|pos_embedding"
                          r"|(^|_)(cls|dist|reg|mask|class)_tokens?$|^running_mean$|^q_bias$|^v_bias$|^k_bias$")


def is_shift(name: str) -> bool:
    """True when the parameter/buffer called ``name`` (last component) is an additive shift."""
    return bool(_SHIFT_NAMES.search(name.rsplit(".", 1)[-1]))


def _redraw_tiny(model: nn.Module, generator: torch.Generator) -> None:
    """Re-draw every floating parameter (not a shift) whose values are all tiny: 1-d/0-d gains
    from U(0.5, 1.5), weights (≥ 2-d) from N(0, 1/fan_in)."""
    for name, p in model.named_parameters():
        if not p.is_floating_point() or is_shift(name) or p.numel() == 0:
            continue
        if float(p.detach().abs().max()) >= TINY:
            continue
        if p.dim() <= 1:
            new = 0.5 + torch.rand(p.shape, generator=generator, dtype=torch.float64)
        else:
            fan_in = p[0].numel()
            new = torch.randn(p.shape, generator=generator, dtype=torch.float64) / fan_in ** 0.5
        p.data = new.to(dtype=p.dtype, device=p.device)


def _batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            and m.running_mean is not None and m.running_var is not None]


@torch.no_grad()
def _calibrate_bn(model: nn.Module, x: torch.Tensor) -> None:
    """Running statistics = the statistics of ``x`` (cumulative average over one pass)."""
    bns = _batchnorms(model)
    if not bns:
        return
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    model(x)
    for bn, m in zip(bns, momenta):
        bn.momentum = m


def bias_free_copy(model: nn.Module, x: torch.Tensor | None = None, *, seed: int = 0,
                   dtype: torch.dtype | None = torch.float64) -> nn.Module:
    """A deep copy of ``model`` (eval mode, in ``dtype``; None keeps the model's) without additive shifts.

    1. zero/tiny gains re-drawn (:data:`TINY`; e.g. timm's zero-init last BN γ of a block,
       LayerScale 1e-5, NFNet's skip-init gain, a zero-initialized head), so no branch is silent;
    2. BatchNorm running statistics calibrated on ``x`` ``(B, ...)`` (skipped when ``x`` is None);
    3. every additive shift zeroed (:func:`is_shift`): conv/linear/norm biases, BN running means
       and β, LN/GN shifts, position embeddings, class/distillation/register tokens, additive
       attention biases (relative position bias tables, LeViT's attention biases, BEiT's q/v bias).

    ``model`` is not changed (its parameters, buffers and modes are those of before). float64 by
    default: at a small ε, float32 cancellation in deep nets (large relevance of both signs per
    layer) can break conservation by itself.
    """
    gen = torch.Generator().manual_seed(seed)
    out = copy.deepcopy(model)
    if dtype is not None:
        out = out.to(dtype)
    _redraw_tiny(out, gen)
    if x is not None:
        _calibrate_bn(out, x.to(next((p.dtype for p in out.parameters() if p.is_floating_point()), x.dtype)))
    with torch.no_grad():
        for name, t in list(out.named_parameters()) + list(out.named_buffers()):
            if t.is_floating_point() and is_shift(name):
                t.zero_()
    return out.eval()


def conservation_ratio(model: nn.Module, x: torch.Tensor, y: torch.Tensor | str = "predicted",
                       **attr_kwargs: Any) -> torch.Tensor:
    """``Σ R / target logit`` per sample, ``(B,)`` float64: ``R`` from
    :func:`reldrop.attribution.attribute` with ``seed="logit"`` (``attr_kwargs``: ``method``,
    ``backend``, the method's options such as ``epsilon``). ``y``: class indices ``(B,)`` or
    ``"predicted"``. Meaningful on a model without additive shifts (:func:`bias_free_copy`)."""
    from . import attribute
    from .state import preserve_model_state

    attr_kwargs.setdefault("seed", "logit")
    x = x.to(next((p.dtype for p in model.parameters() if p.is_floating_point()), x.dtype))
    with preserve_model_state(model), torch.no_grad():
        model.eval()
        logits = model(x)
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
    target = logits.argmax(1) if isinstance(y, str) else y
    rel = attribute(model, x, target, **attr_kwargs)
    value = logits.gather(1, target[:, None]).squeeze(1).double()
    total = rel.double().flatten(1).sum(1)
    if attr_kwargs["seed"] == "one_hot":
        return total
    return total / value
