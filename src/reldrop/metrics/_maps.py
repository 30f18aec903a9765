"""The input checks shared by the metrics that score a relevance map against a pixel mask (RRA, decoy share)."""
from __future__ import annotations

import torch

from .._checks import check_batch_match, check_float_tensor, check_tensor

__all__ = ["relevance_and_mask"]


def relevance_and_mask(relevance: object, mask: object) -> tuple[torch.Tensor, torch.Tensor]:
    """``(R2d, M)``: relevance ``(B, H, W)`` or ``(B, C, H, W)`` (summed over C, signed) and the bool
    mask ``(B, H, W)``, checked: float relevance, bool mask of the same shape, same batch and device."""
    r = check_float_tensor("relevance", relevance, (3, 4), "(B, H, W) or (B, C, H, W)")
    m = check_tensor("mask", mask, (3,), "(B, H, W) bool")
    if m.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor of shape (B, H, W), got dtype {m.dtype}")
    if r.dim() == 4:
        r = r.sum(dim=1)
    check_batch_match("relevance", r, "mask", m)
    if r.shape != m.shape:
        raise ValueError(
            f"mask must have shape (B, H, W) = {tuple(r.shape)} to match relevance, got {tuple(m.shape)}"
        )
    if m.device != r.device:
        raise ValueError(f"mask must be on the device of relevance ({r.device}), got {m.device}")
    return r, m
