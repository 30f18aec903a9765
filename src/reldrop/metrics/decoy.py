"""Relevance on the decoy: how much of a model's explanation sits on a shortcut patch.

For relevance ``R`` ``(B, C, H, W)`` (summed over C to ``R2d``, signed) and the decoy mask ``M``
``(B, H, W)`` bool, per sample::

    share = Σ max(R2d, 0) · M / Σ max(R2d, 0)

the share of the *positive* relevance (evidence for the explained class) that lies on the patch.
A model that ignores the patch scores ≈ 0; one that decides by the patch alone ≈ 1; pixels drawn
at random would score the patch's area share (``|M| / HW``: 6.25 % for 2×2 on 8×8, 1.56 % for
4×4 on 32×32). Samples without positive relevance or without a patch have no share: ``valid`` is
False there and :func:`summarize_decoy_share` skips and counts them. The rank-based companion is
RRA against the patch mask (:func:`reldrop.metrics.relevance_rank_accuracy`).
"""
from __future__ import annotations

import torch

from ._maps import relevance_and_mask

__all__ = ["decoy_relevance_share", "summarize_decoy_share"]


def decoy_relevance_share(relevance: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample share of positive relevance inside ``mask``.

    Args:
        relevance: ``(B, H, W)`` or ``(B, C, H, W)`` float (summed over C, signed, before clipping).
        mask: ``(B, H, W)`` bool decoy mask.

    Returns:
        ``(share, valid)``: ``(B,)`` float in [0, 1] (0 where undefined, never NaN) and ``(B,)`` bool
        (the sample has a patch and some positive relevance). Non-finite relevance counts as 0.
    """
    r, m = relevance_and_mask(relevance, mask)
    pos = torch.nan_to_num(r.float(), nan=0.0, posinf=0.0, neginf=0.0).clamp_min(0.0).flatten(1)
    mflat = m.flatten(1)
    total = pos.sum(1)
    inside = (pos * mflat).sum(1)
    valid = (total > 0) & mflat.any(1)
    share = torch.where(valid, inside / total.clamp_min(torch.finfo(pos.dtype).tiny), torch.zeros_like(total))
    return share, valid


def summarize_decoy_share(share: torch.Tensor, valid: torch.Tensor) -> dict[str, float | int]:
    """``{"mean", "n_valid", "n_skipped"}``: mean share over the valid samples (0.0 if none)."""
    n_valid = int(valid.sum())
    mean = float((share * valid).sum()) / n_valid if n_valid else 0.0
    return {"mean": mean, "n_valid": n_valid, "n_skipped": int(valid.numel()) - n_valid}
