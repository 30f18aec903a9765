"""Region perturbation (Samek et al. 2017): MoRF / LeRF / random patch removal curves, batched.

The image is cut into a grid of ``patch_size × patch_size`` patches (the last row/column may be
smaller when the size does not divide H or W). Each patch's relevance is the sum of the
(channel-summed) relevance inside it. Patches are removed in order - most relevant first
("morf"), least relevant first ("lerf") or in a random order ("random") - by setting them to
``fill`` (the dataset mean: 0 in normalized input space). After ``k = 0..S`` removed patches the
model is run once on the whole batch (one forward per step) and we record the target-class
score and whether the prediction is still correct.

Ties in patch relevance are broken by position (row-major, top-left first; a stable sort).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .._checks import check_batch_match, check_float_tensor, check_tensor
from ..models.modes import eval_mode

__all__ = ["region_perturbation", "RegionPerturbationResult", "curve_auc", "ORDERS"]

ORDERS = ("morf", "lerf", "random")


def curve_auc(curve: torch.Tensor) -> torch.Tensor:
    """Trapezoidal area under ``curve`` (..., S+1) sampled at x = k / S, k = 0..S (x in [0, 1]).

    An accuracy curve therefore has an AUC in [0, 1]. A single point (S = 0) returns the point.
    """
    c = curve.double()
    s = c.shape[-1] - 1
    if s <= 0:
        return c[..., 0]
    return ((c[..., 1:] + c[..., :-1]) * 0.5).sum(dim=-1) / s


@dataclass
class RegionPerturbationResult:
    """Curves of one region-perturbation run over a batch.

    Attributes:
        order: "morf" | "lerf" | "random".
        patch_size: side of the square patches.
        num_patches: patches in the grid (P).
        scores: ``(B, S+1)`` target-class score (softmax probability or logit) after k patches.
        correct: ``(B, S+1)`` bool, prediction == label after k patches.
    """

    order: str
    patch_size: int
    num_patches: int
    scores: torch.Tensor
    correct: torch.Tensor

    @property
    def steps(self) -> int:
        return self.scores.shape[1] - 1

    @property
    def fractions(self) -> torch.Tensor:
        """``(S+1,)`` fraction of the image's patches removed at each step."""
        return torch.arange(self.steps + 1, dtype=torch.float64) / self.num_patches

    @property
    def drop(self) -> torch.Tensor:
        """``(B, S)`` score drop ``score_0 - score_k`` for k = 1..S (Quantus' RegionPerturbation output)."""
        return self.scores[:, :1] - self.scores[:, 1:]

    @property
    def accuracy_curve(self) -> torch.Tensor:
        """``(S+1,)`` accuracy of the batch after k removed patches."""
        return self.correct.double().mean(dim=0)

    @property
    def drop_curve(self) -> torch.Tensor:
        """``(S+1,)`` mean score drop (0 at k = 0)."""
        return (self.scores[:, :1] - self.scores).double().mean(dim=0)

    def accuracy_auc(self) -> float:
        """Area under the accuracy curve over x = k/S (in [0, 1]); for MoRF higher = more robust."""
        return float(curve_auc(self.accuracy_curve))

    def drop_auc(self) -> float:
        """Area under the mean score-drop curve over x = k/S."""
        return float(curve_auc(self.drop_curve))

    @staticmethod
    def concat(parts: "list[RegionPerturbationResult]") -> "RegionPerturbationResult":
        """Join the results of several batches (same order, patch size and steps)."""
        if not parts:
            raise ValueError("parts must hold at least one RegionPerturbationResult")
        first = parts[0]
        for p in parts[1:]:
            if (p.order, p.patch_size, p.num_patches, p.steps) != (
                first.order, first.patch_size, first.num_patches, first.steps
            ):
                raise ValueError("parts must share order, patch_size, num_patches and steps")
        return RegionPerturbationResult(
            first.order, first.patch_size, first.num_patches,
            torch.cat([p.scores for p in parts]), torch.cat([p.correct for p in parts]),
        )


def patch_order(relevance: torch.Tensor, patch_size: int, order: str = "morf",
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, int]:
    """Rank the patches of each sample.

    Args:
        relevance: ``(B, H, W)`` or ``(B, C, H, W)`` (summed over C).

    Returns:
        ``(pixel_rank, num_patches)``: ``pixel_rank`` ``(B, H, W)`` long, the removal step
        (0-based) of the patch each pixel belongs to; the number of patches P.
    """
    r = relevance.sum(dim=1) if relevance.dim() == 4 else relevance
    b, h, w = r.shape
    nh, nw = -(-h // patch_size), -(-w // patch_size)
    padded = F.pad(r.float().unsqueeze(1), (0, nw * patch_size - w, 0, nh * patch_size - h))
    sums = F.avg_pool2d(padded, patch_size).reshape(b, -1) * float(patch_size * patch_size)
    sums = torch.nan_to_num(sums, nan=0.0)
    if order == "morf":
        idx = torch.sort(sums, dim=1, descending=True, stable=True).indices
    elif order == "lerf":
        idx = torch.sort(sums, dim=1, descending=False, stable=True).indices
    elif order == "random":
        dev = generator.device if generator is not None else sums.device
        idx = torch.rand(sums.shape, generator=generator, device=dev).to(sums.device).argsort(dim=1)
    else:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    p = nh * nw
    rank = torch.empty_like(idx)
    rank.scatter_(1, idx, torch.arange(p, device=idx.device).expand(b, p))  # inverse permutation
    rows = torch.arange(h, device=r.device) // patch_size
    cols = torch.arange(w, device=r.device) // patch_size
    patch_id = (rows[:, None] * nw + cols[None, :]).reshape(-1)  # (H*W,)
    pixel_rank = rank[:, patch_id].reshape(b, h, w)
    return pixel_rank, p


@torch.no_grad()
def region_perturbation(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    relevance: torch.Tensor,
    *,
    order: str = "morf",
    patch_size: int = 4,
    steps: int | None = None,
    fill: float | torch.Tensor = 0.0,
    score: str = "softmax",
    generator: torch.Generator | None = None,
) -> RegionPerturbationResult:
    """Remove patches in relevance order and record the model's response, one forward per step.

    Args:
        model: classifier ``(B, C, H, W) -> (B, num_classes)``; run in eval mode, its own
            train/eval flags are restored afterwards.
        x: ``(B, C, H, W)`` inputs (normalized).
        y: ``(B,)`` long labels (the target class whose score is tracked).
        relevance: ``(B, H, W)`` or ``(B, C, H, W)`` attributions for ``(x, y)``.
        order: "morf" (most relevant first), "lerf" (least relevant first) or "random".
        patch_size: side of the square patches (>= 1).
        steps: number of patches removed (S); default all patches.
        fill: replacement value, a float or a ``(C,)`` per-channel tensor (dataset mean; 0 in
            normalized space).
        score: "softmax" (target-class probability, as Quantus) or "logit".
        generator: randomness for ``order="random"``.

    Returns:
        :class:`RegionPerturbationResult` with ``(B, S+1)`` scores and correctness.
    """
    x = check_float_tensor("x", x, (4,), "(B, C, H, W)")
    y = check_tensor("y", y, (1,), "(B,) long labels")
    relevance = check_float_tensor("relevance", relevance, (3, 4), "(B, H, W) or (B, C, H, W)")
    check_batch_match("x", x, "y", y)
    check_batch_match("x", x, "relevance", relevance)
    if tuple(relevance.shape[-2:]) != tuple(x.shape[-2:]):
        raise ValueError(f"relevance must match the spatial size {tuple(x.shape[-2:])} of x, "
                         f"got {tuple(relevance.shape)}")
    if not isinstance(patch_size, int) or isinstance(patch_size, bool) or patch_size < 1:
        raise ValueError(f"patch_size must be a positive int, got {patch_size!r}")
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    if score not in ("softmax", "logit"):
        raise ValueError(f"score must be 'softmax' or 'logit', got {score!r}")
    pixel_rank, p = patch_order(relevance.to(x.device), patch_size, order, generator)
    if steps is None:
        steps = p
    if not isinstance(steps, int) or isinstance(steps, bool) or not (0 <= steps <= p):
        raise ValueError(f"steps must be an int in [0, {p}] (the number of patches), got {steps!r}")
    if isinstance(fill, torch.Tensor):
        fill_t = fill.to(device=x.device, dtype=x.dtype).reshape(1, -1, 1, 1)
        if fill_t.shape[1] not in (1, x.shape[1]):
            raise ValueError(f"fill must be a float or a ({x.shape[1]},) tensor, got shape {tuple(fill.shape)}")
    else:
        fill_t = torch.tensor(float(fill), device=x.device, dtype=x.dtype)
    y = y.to(x.device)
    pr = pixel_rank.unsqueeze(1)  # (B, 1, H, W)
    scores, correct = [], []
    with eval_mode(model):
        for k in range(steps + 1):
            xk = torch.where(pr < k, fill_t, x) if k else x
            out = model(xk)
            s = out.softmax(dim=1) if score == "softmax" else out
            scores.append(s.gather(1, y[:, None]).squeeze(1))
            correct.append(out.argmax(dim=1) == y)
    return RegionPerturbationResult(order, patch_size, p, torch.stack(scores, 1), torch.stack(correct, 1))
