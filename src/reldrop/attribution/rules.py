"""Small pieces every attribution backend shares (written once): the ``Unsupported`` signal, the
output-relevance seeds and the BatchNorm arithmetic of merging a BN into the layer before it."""
from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["Unsupported", "SEEDS", "check_seed", "bn_scale", "fold_batchnorm"]

#: output relevance of the LRP presets: ``one_hot(target)`` (default) or ``one_hot(target) * logit``
SEEDS = ("one_hot", "logit")


class Unsupported(Exception):
    """The model is not one this backend reproduces exactly (the caller falls back or names it)."""


def check_seed(seed: object) -> str:
    """``seed`` when it is one of :data:`SEEDS`, else ValueError naming them."""
    if seed not in SEEDS:
        raise ValueError(f"seed must be one of {', '.join(SEEDS)}, got {seed!r}")
    return seed  # type: ignore[return-value]


def bn_scale(bn: nn.Module) -> torch.Tensor:
    """``gamma / sqrt(running_var + eps)`` per channel ``(C,)`` (``1 / sqrt(...)`` without affine weight);
    the same arithmetic as zennit's ``MergeBatchNorm``."""
    denominator = (bn.running_var + bn.eps) ** 0.5
    return bn.weight / denominator if bn.weight is not None else 1.0 / denominator


def fold_batchnorm(weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.Module, *, out_dim: int = 0
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
