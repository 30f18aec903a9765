"""Channel-relevance AUC per layer (paper App. A.5.1, Fig. A.2).

For every chosen layer (default: every ``nn.Conv2d``, in forward order = depth), the LRP
relevance arriving at the layer's output is summed over space: one relevance score per channel
and sample ``(B, C)``. Per sample, the scores (by default their positive part, see :func:`channel_auc`) are sorted in
descending order and divided by the first (maximum) one; the AUC of that curve over x = i/(C-1) in [0, 1] (trapezoid) is 1 when all
channels share the relevance equally and ≈ 0 when one channel holds it all. A lower AUC means
the decision rests on fewer channels ("concepts"). Samples whose largest channel relevance is
not positive have no defined curve: they are skipped and counted.

The relevance is the visualization composite of the paper (``epsilon_gamma_box``: ZBox on the
first layer, γ = 0.25 on convs, ε on dense layers, BN merged by :mod:`reldrop.attribution`'s
canonizers), computed with the zennit backend (its rules hand every intermediate tensor its
relevance as gradient; a tensor hook on each layer's output reads it).
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import torch
import torch.nn as nn

__all__ = ["channel_relevance", "channel_auc", "layer_channel_auc", "relative_auc_change"]


def channel_auc(scores: torch.Tensor, mode: str = "positive") -> tuple[torch.Tensor, torch.Tensor]:
    """AUC of the sorted, max-normalized channel relevance.

    Args:
        scores: ``(B, C)`` (or ``(C,)``) per-channel relevance, C >= 2.
        mode: how signed channel relevance enters the curve: "positive" (default; negative
            relevance counts as 0, so the curve and the AUC lie in [0, 1]), "absolute" (|R|,
            also in [0, 1]) or "signed" (as is: the curve may dip below 0).

    Returns:
        ``(auc, valid)``: ``(B,)`` float64 AUC (0.0 where invalid) and ``(B,)`` bool, False where
        the largest score is not positive (no defined curve).
    """
    s = scores.unsqueeze(0) if scores.dim() == 1 else scores
    if s.dim() != 2 or s.shape[1] < 2:
        raise ValueError(f"scores must have shape (B, C) with C >= 2, got {tuple(scores.shape)}")
    s = s.double()
    if mode == "positive":
        s = s.clamp_min(0)
    elif mode == "absolute":
        s = s.abs()
    elif mode != "signed":
        raise ValueError(f"mode must be 'positive', 'absolute' or 'signed', got {mode!r}")
    s = torch.sort(s, dim=1, descending=True).values
    top = s[:, :1]
    valid = (top[:, 0] > 0) & torch.isfinite(s).all(dim=1)
    curve = s / torch.where(valid[:, None], top, torch.ones_like(top))
    auc = ((curve[:, 1:] + curve[:, :-1]) * 0.5).sum(dim=1) / (s.shape[1] - 1)
    return torch.where(valid, auc, torch.zeros_like(auc)), valid


def _default_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.out_channels > 1]


def channel_relevance(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    layers: Sequence[str] | None = None,
    method: str = "epsilon_gamma_box",
    attributor: Any = None,
    **method_kwargs: Any,
) -> dict[str, torch.Tensor]:
    """Per-layer per-channel relevance ``{layer name: (B, C)}`` in forward (depth) order.

    Args:
        model: the classifier (left unchanged).
        x: ``(B, C, H, W)`` normalized inputs; y: ``(B,)`` long target labels.
        layers: module names (``model.named_modules()``) whose output relevance is read;
            default all ``nn.Conv2d`` with more than one output channel.
        method: attribution preset (default the paper's visualization composite); for
            ``epsilon_gamma_box`` pass ``mean=``/``std=`` (or ``low=``/``high=``).
        attributor: a prebuilt ``reldrop.attribution.Attributor`` (zennit backend) to reuse.
    """
    from ..attribution import Attributor, unwrap_model

    net = unwrap_model(model)
    named = dict(net.named_modules())
    if layers is None:
        chosen = _default_layers(net)
    else:
        missing = [n for n in layers if n not in named]
        if missing:
            raise ValueError(f"layers not found in the model: {missing}")
        chosen = [(n, named[n]) for n in layers]
    if not chosen:
        raise ValueError("no layers to read: the model has no nn.Conv2d; pass layers=[...]")
    att = attributor if attributor is not None else Attributor(net, method, backend="zennit", **method_kwargs)
    if getattr(att, "backend", "zennit") != "zennit":
        raise ValueError("channel_relevance needs an Attributor with backend='zennit'")
    grads: dict[str, torch.Tensor] = {}
    order: list[str] = []

    def make_hook(name: str):
        def fwd(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            if not isinstance(output, torch.Tensor) or not output.requires_grad:
                return
            if name not in order:
                order.append(name)

            def grab(g: torch.Tensor) -> None:
                grads[name] = g.detach().flatten(2).sum(dim=2) if g.dim() > 2 else g.detach()

            output.register_hook(grab)
        return fwd

    handles = [m.register_forward_hook(make_hook(n)) for n, m in chosen]
    try:
        att(x, y)
    finally:
        for h in handles:
            h.remove()
    return {n: grads[n] for n in order if n in grads}


def layer_channel_auc(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    layers: Sequence[str] | None = None,
    device: torch.device | str | None = None,
    method: str = "epsilon_gamma_box",
    mode: str = "positive",
    **method_kwargs: Any,
) -> dict[str, dict[str, float]]:
    """Mean channel-relevance AUC per layer over ``batches`` of ``(x, y)``.

    Returns ``{layer: {"auc": mean over valid samples, "n_valid": int, "n_skipped": int,
    "channels": C}}`` in depth order.
    """
    from ..attribution import Attributor, unwrap_model

    net = unwrap_model(model)
    dev = torch.device(device) if device is not None else next(net.parameters()).device
    att = Attributor(net, method, backend="zennit", **method_kwargs)
    sums: dict[str, torch.Tensor] = {}
    valid_n: dict[str, torch.Tensor] = {}
    total = 0
    channels: dict[str, int] = {}
    for x, y in batches:
        rel = channel_relevance(net, x.to(dev), y.to(dev), layers=layers, attributor=att)
        for name, scores in rel.items():
            auc, valid = channel_auc(scores, mode)
            sums[name] = sums.get(name, 0) + auc.sum()
            valid_n[name] = valid_n.get(name, 0) + valid.sum()
            channels[name] = int(scores.shape[1])
        total += int(y.shape[0])
    out: dict[str, dict[str, float]] = {}
    for name in sums:
        nv = int(valid_n[name])
        out[name] = {"auc": float(sums[name]) / nv if nv else 0.0, "n_valid": nv,
                     "n_skipped": total - nv, "channels": channels[name]}
    return out


def relative_auc_change(auc_b: dict[str, Any], auc_a: dict[str, Any]) -> dict[str, float]:
    """Relative AUC change of model B over baseline A per layer, in percent: ``100·(B − A)/A``.

    Accepts the output of :func:`layer_channel_auc` (or plain ``{layer: auc}``); layers present
    in both, in A's (depth) order.
    """
    def val(v: Any) -> float:
        return float(v["auc"]) if isinstance(v, dict) else float(v)

    out = {}
    for name, va in auc_a.items():
        if name in auc_b and val(va) != 0:
            out[name] = 100.0 * (val(auc_b[name]) - val(va)) / val(va)
    return out
