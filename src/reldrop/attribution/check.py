"""Conservation checks: does an LRP attribution of a model explain its logit?

On a model without additive shifts (no biases, BN means/shifts, LN/GN shifts, position
embeddings, class tokens, additive attention biases) every LRP rule here is conservative up to
its ε, so ``Σ R / target logit`` must be ≈ 1; a rule-less layer crossed by the plain gradient
shows up as a ratio far from 1 (a residual ``x + y`` without the Norm rule doubles relevance at
every add, a plain gradient through LayerNorm or attention scales it arbitrarily). Zero- or
tiny-initialized gains are re-drawn first so that no branch is silent, and BatchNorm statistics
are calibrated on data, so that the check cannot pass because a branch carries nothing.

* :func:`bias_free_copy` - a deep copy of the model, prepared so that no branch is silent and no
  shift absorbs relevance: zero- or tiny-initialized gains re-drawn (zero-init BN γ, LayerScale
  1e-5, skip-init gains, zero heads), BatchNorm statistics calibrated on ``x``, then every additive
  shift zeroed. The model itself is never changed.
* :func:`conservation_ratio` - ``Σ R / target logit`` per sample (``(B,)``, float64).
* :func:`conservation_ratios` - the same on the bias-free float64 copy and random data of one
  sample's shape, and :func:`train_steps` (SGD on random data), for the tests and
  ``benchmarks/coverage.py``::

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

__all__ = ["bias_free_copy", "conservation_ratio", "conservation_ratios", "train_steps", "is_shift",
           "SHIFT_NAMES", "TINY"]

#: a gain whose largest magnitude is below this is "tiny" (LayerScale 1e-5/1e-6, zero init) and re-drawn
TINY = 1e-2
#: parameter/buffer names (last component) that are additive shifts: the name itself, a name that
#: starts with it or ends with ``_`` + it (and any name containing ``bias``; see :func:`is_shift`)
SHIFT_NAMES = ("bias", "beta", "running_mean", "cls_token", "class_token", "reg_token", "dist_token",
               "register_tokens", "pos_embed", "pos_embedding", "pos_emb", "relative_position_bias_table",
               "attention_biases", "rel_pos", "absolute_pos_embed", "mask_token")
# further shift names: a position embedding anywhere in the name, plural or prefixed tokens
_SHIFT_PATTERN = re.compile(r"pos_embed|(^|_)(cls|dist|reg|mask|class)_tokens?$")
# modules that compute a position encoding (EdgeNeXt's Fourier one): all their tensors are zeroed
_POS_MODULE = re.compile(r"pos(itional)?_?(enc|emb)", re.IGNORECASE)


def is_shift(name: str) -> bool:
    """True when the parameter/buffer called ``name`` (its last component counts) is an additive
    shift: it contains ``bias``, matches one of :data:`SHIFT_NAMES` (equal, as a prefix, or as a
    ``_``-separated suffix), holds ``pos_embed`` or ends in ``cls/dist/reg/mask/class_token(s)``."""
    last = name.rsplit(".", 1)[-1]
    if "bias" in last or _SHIFT_PATTERN.search(last):
        return True
    return any(last.startswith(s) or last.endswith("_" + s) for s in SHIFT_NAMES)


def _redraw_tiny(model: nn.Module, tiny: float, generator: torch.Generator) -> None:
    """Re-draw every floating parameter (not a shift) whose values are all below ``tiny``: 1-d/0-d
    gains from U(0.5, 1.5), weights (≥ 2-d, e.g. a zero head) from N(0, 1/fan_in); drawn in float64."""
    for name, p in model.named_parameters():
        if not p.is_floating_point() or is_shift(name) or p.numel() == 0:
            continue
        if float(p.detach().abs().max()) >= tiny:
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
    """Running statistics = the statistics of ``x`` (cumulative average over one pass of the whole batch)."""
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


@torch.no_grad()
def _zero_shifts(model: nn.Module) -> None:
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if t.is_floating_point() and is_shift(name):
            t.zero_()
    for mod in model.modules():  # position encodings computed by a module: all zero
        if _POS_MODULE.search(type(mod).__name__):
            for t in list(mod.parameters()) + list(mod.buffers()):
                if t.is_floating_point():
                    t.zero_()


def bias_free_copy(model: nn.Module, x: torch.Tensor | None = None, *, tiny: float = TINY, seed: int = 0,
                   dtype: torch.dtype | None = torch.float64) -> nn.Module:
    """A deep copy of ``model`` (eval mode, in ``dtype``; None keeps the model's) without additive shifts.

    1. zero/tiny gains re-drawn (max |value| < ``tiny``, default :data:`TINY`; e.g. timm's zero-init
       last BN γ of a block, LayerScale 1e-5, NFNet's skip-init gain, a zero-initialized head), so
       no branch is silent;
    2. BatchNorm running statistics calibrated on ``x`` ``(B, ...)`` (skipped when ``x`` is None);
    3. every additive shift zeroed (:func:`is_shift`): conv/linear/norm biases, BN running means
       and β, LN/GN shifts, position embeddings (also those a module computes, e.g. EdgeNeXt's
       Fourier encoding), class/distillation/register tokens, additive attention biases (relative
       position bias tables, LeViT's attention biases, BEiT's q/v bias).

    ``model`` is not changed (its parameters, buffers and modes are those of before). float64 by
    default: at a small ε, float32 cancellation in deep nets (large relevance of both signs per
    layer) can break conservation by itself.
    """
    gen = torch.Generator().manual_seed(seed)
    out = copy.deepcopy(model)
    if dtype is not None:
        out = out.to(dtype)
    _redraw_tiny(out, tiny, gen)
    if x is not None:
        _calibrate_bn(out, x.to(next((p.dtype for p in out.parameters() if p.is_floating_point()), x.dtype)))
    _zero_shifts(out)
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


def conservation_ratios(model: nn.Module, input_shape: tuple[int, ...], *, batch: int = 4, method: str | None = None,
                        backend: str = "auto", epsilon: float = 1e-9, seed: int = 0, **method_kwargs: Any
                        ) -> torch.Tensor:
    """:func:`conservation_ratio` on the bias-free float64 copy of ``model`` (:func:`bias_free_copy`,
    BN calibrated on 16 random samples) for ``batch`` random samples of ``input_shape`` (one
    sample's shape, e.g. ``(3, 64, 64)``).

    The target is each sample's largest-magnitude logit (a near-zero logit would make the ratio
    meaningless). ``method``: as :func:`reldrop.attribution.attribute` (None: the registry's
    default); ``epsilon`` is passed where the method takes one. Returns ``(batch,)``; NaN where
    the bias-free copy's logits are all zero (e.g. SqueezeNet after training: a ReLU before its
    pooling head, all its inputs negative without biases) — undefined, not failed.
    """
    gen = torch.Generator().manual_seed(seed)
    calib = torch.randn(16, *input_shape, generator=gen, dtype=torch.float64)
    m = bias_free_copy(model, calib, seed=seed)
    x = torch.randn(batch, *input_shape, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        logits = m(x)
    target = logits.abs().argmax(dim=1)
    if _takes_epsilon(m, method):
        method_kwargs["epsilon"] = epsilon
    return conservation_ratio(m, x, target, method=method, backend=backend, **method_kwargs)


def _takes_epsilon(model: nn.Module, method: str | None) -> bool:
    from .core import resolve_method
    from .presets import get_preset

    return "epsilon" in get_preset(resolve_method(model, method)).kwargs


def train_steps(model: nn.Module, input_shape: tuple[int, ...], num_classes: int, *, steps: int = 30,
                batch: int = 8, lr: float = 0.05, seed: int = 0) -> nn.Module:
    """``steps`` SGD steps (momentum 0.9, cross-entropy) on random data ``(batch, *input_shape)``,
    in place; returns ``model`` (in train mode during the steps, left in eval mode)."""
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
