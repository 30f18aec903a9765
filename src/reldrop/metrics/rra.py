"""Relevance Rank Accuracy (RRA, Arras et al. 2022; paper App. A.3.2), batched in torch.

For one sample with ground-truth mask GT and K = |GT| pixels, RRA is the fraction of the K
highest-relevance pixels that lie inside GT:  ``|P_top-K ∩ GT| / |GT|``.

Conventions (documented, tested):

* relevance ``(B, C, H, W)`` is summed over C first (signed sum, no ``abs``) -> ``(B, H, W)``;
* ties are broken deterministically by position: among equal relevance values the pixel with
  the smaller row-major index (top-left first) ranks higher (a stable descending sort);
* non-finite relevance never leaks into the score: NaN and -inf rank last, +inf first;
* a sample whose mask is empty has no defined RRA: the ``(B,)`` result holds ``0.0`` there
  (never NaN) and :func:`summarize_rra` / :class:`RRAMeter` skip and count such samples.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .._checks import check_batch_match, check_float_tensor, check_tensor
from ._maps import relevance_and_mask

__all__ = ["relevance_rank_accuracy", "summarize_rra", "RRASummary", "RRAMeter"]


def relevance_rank_accuracy(relevance: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """RRA per sample.

    Args:
        relevance: ``(B, H, W)`` or ``(B, C, H, W)`` float attributions (summed over C).
        mask: ``(B, H, W)`` bool ground-truth mask.

    Returns:
        ``(B,)`` float tensor in [0, 1] on relevance's device; ``0.0`` for empty masks (use
        :func:`summarize_rra` to average while skipping and counting them). Never NaN.
    """
    r, m = relevance_and_mask(relevance, mask)
    b = r.shape[0]
    flat = r.reshape(b, -1).float()
    # NaN -> -inf so it ranks last; the stable sort then orders equal values by position.
    flat = torch.nan_to_num(flat, nan=float("-inf"), posinf=float("inf"), neginf=float("-inf"))
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices  # (B, HW)
    mflat = m.reshape(b, -1)
    k = mflat.sum(dim=1)  # (B,)
    in_mask_sorted = torch.gather(mflat, 1, order)  # (B, HW): is the r-th ranked pixel in GT?
    rank = torch.arange(flat.shape[1], device=flat.device)
    hits = (in_mask_sorted & (rank.unsqueeze(0) < k.unsqueeze(1))).sum(dim=1)
    return hits.to(flat.dtype) / k.clamp_min(1).to(flat.dtype)


@dataclass(frozen=True)
class RRASummary:
    """Mean RRA over the samples with a non-empty mask, and how many were used / skipped."""

    mean: float
    n_valid: int
    n_skipped: int


def summarize_rra(scores: torch.Tensor, mask: torch.Tensor) -> RRASummary:
    """Average ``scores`` (B,) from :func:`relevance_rank_accuracy` over non-empty masks.

    ``mask`` ``(B, H, W)`` bool is the mask used for the scores. ``mean`` is 0.0 when every mask
    is empty (``n_valid == 0`` says so). One host sync.
    """
    s = check_float_tensor("scores", scores, (1,), "(B,)")
    m = check_tensor("mask", mask, (3,), "(B, H, W) bool")
    check_batch_match("scores", s, "mask", m)
    valid = m.reshape(m.shape[0], -1).any(dim=1)
    n_valid = int(valid.sum())
    total = float((s * valid).sum())
    return RRASummary(mean=total / n_valid if n_valid else 0.0, n_valid=n_valid,
                      n_skipped=int(s.shape[0]) - n_valid)


class RRAMeter:
    """Accumulate RRA over many batches on the device; ``compute()`` gives an :class:`RRASummary`.

    ``update`` makes no host sync; ``compute`` makes one.
    """

    def __init__(self) -> None:
        self._sum: torch.Tensor | None = None
        self._valid: torch.Tensor | None = None
        self._count = 0

    def update(self, relevance: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Score one batch (see :func:`relevance_rank_accuracy`); returns the ``(B,)`` scores."""
        scores = relevance_rank_accuracy(relevance, mask)
        valid = mask.reshape(mask.shape[0], -1).any(dim=1)
        s = (scores * valid).sum().double()
        v = valid.sum()
        self._sum = s if self._sum is None else self._sum + s
        self._valid = v if self._valid is None else self._valid + v
        self._count += int(mask.shape[0])
        return scores

    def compute(self) -> RRASummary:
        if self._sum is None or self._valid is None:
            return RRASummary(0.0, 0, 0)
        n_valid = int(self._valid)
        mean = float(self._sum) / n_valid if n_valid else 0.0
        return RRASummary(mean=mean, n_valid=n_valid, n_skipped=self._count - n_valid)
