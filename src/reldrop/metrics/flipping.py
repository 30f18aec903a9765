"""Point flipping (paper Sec. 4.2.1, Fig. 4): remove the most relevant remaining points step by step.

At every step the ``step_size`` (paper: 32) most relevant points that are still present are set to
the origin (all ``D`` features set to ``value``, default 0, as RelDrop does), and the accuracy of the
model is recorded after each step: ``steps + 1`` values from the untouched cloud (step 0) to the
last step (for N = 1024, step 32: 32 steps until no point is left).

Relevance orders (``mode``):

* ``"fixed"`` (default) - relevance is computed once on the intact cloud and the points are
  removed in that order. This is how Quantus' pixel-flipping/region-perturbation metrics (which
  the paper used) work, and it costs one attribution per batch.
* ``"recompute"`` - relevance is recomputed on the current (partly removed) cloud before every
  step and the top points among the remaining ones are removed: "currently most relevant".
  One attribution per step.
* ``"random"`` - a uniformly random order: the control curve.

Everything is batched: one forward of the whole batch per step (plus one attribution per step in
``"recompute"`` mode); no per-sample Python loops. Relevance is computed for the true label.
The area under the accuracy curve is the trapezoid rule over the normalized steps
``x = k / steps`` in [0, 1] (:func:`reldrop.metrics.perturbation.curve_auc`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, cast

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from .._checks import check_batch_match, check_float_tensor, check_tensor
from ..models.modes import eval_mode
from .perturbation import curve_auc

__all__ = ["FLIP_MODES", "PointFlippingResult", "point_flipping", "point_flipping_dataset",
           "compare_point_flipping", "point_relevance_fn"]

FLIP_MODES = ("fixed", "recompute", "random")

RelevanceFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
RelevanceArg = str | RelevanceFn


@dataclass
class PointFlippingResult:
    """Point-flipping outcome for a set of clouds.

    Attributes:
        mode: "fixed" | "recompute" | "random".
        step_size: points removed per step.
        num_points: N, points per cloud.
        correct: ``(M, steps + 1)`` bool, prediction == label after k steps (k = 0 untouched).
    """

    mode: str
    step_size: int
    num_points: int
    correct: torch.Tensor

    @property
    def steps(self) -> int:
        return self.correct.shape[1] - 1

    @property
    def fractions(self) -> torch.Tensor:
        """``(steps + 1,)`` fraction of the points removed after k steps."""
        k = torch.arange(self.steps + 1, dtype=torch.float64)
        return (k * self.step_size / self.num_points).clamp(max=1.0)

    @property
    def accuracy_curve(self) -> torch.Tensor:
        """``(steps + 1,)`` accuracy over all clouds after k steps."""
        return self.correct.double().mean(dim=0)

    @property
    def auc(self) -> float:
        """Trapezoidal area under :attr:`accuracy_curve` over normalized steps (in [0, 1])."""
        return float(curve_auc(self.accuracy_curve))

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "step_size": self.step_size, "num_points": self.num_points,
                "n": int(self.correct.shape[0]), "fractions": self.fractions.tolist(),
                "accuracy": self.accuracy_curve.tolist(), "auc": self.auc}


def point_relevance_fn(model: nn.Module, relevance: RelevanceArg = "zplus_flat", **kwargs: Any) -> RelevanceFn:
    """A callable ``fn(x (B, N, D), y (B,)) -> R`` for ``relevance``: a method name of
    :mod:`reldrop.attribution` (an ``Attributor`` built once for ``model``; for ``"zplus_flat"`` the
    absolute value, see below) or a callable returned as is."""
    if callable(relevance):
        return relevance
    if isinstance(relevance, str):
        from ..attribution import Attributor  # lazy: metrics does not need zennit unless asked

        att = Attributor(model, relevance, **kwargs)
        if relevance == "zplus_flat":
            # z+ relevance is (target logit) x (a non-negative distribution): for a sample whose
            # target logit is negative every R_i <= 0 and ranking by R would remove the points that
            # contribute *least* first. |R| ranks by contribution whatever the logit's sign.
            return lambda x, y: att(x, y).abs()
        return att
    raise TypeError(f"relevance must be an attribution method name or a callable (x, y) -> R, "
                    f"got {type(relevance).__name__}")


def _point_scores(fn: RelevanceFn, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r = fn(x, y)
    if not isinstance(r, torch.Tensor) or r.shape[:2] != x.shape[:2] or r.dim() not in (2, 3):
        raise ValueError(f"relevance function must return (B, N) or (B, N, D) for points of shape "
                         f"{tuple(x.shape)}, got {getattr(r, 'shape', type(r).__name__)}")
    r = r.detach()
    if r.dim() == 3:
        r = r.sum(dim=2)
    return torch.nan_to_num(r.float(), nan=float("-inf"))


def _check_common(mode: str, step_size: int, steps: int | None, n: int) -> int:
    if mode not in FLIP_MODES:
        raise ValueError(f"mode must be one of {FLIP_MODES}, got {mode!r}")
    if isinstance(step_size, bool) or not isinstance(step_size, int) or step_size < 1:
        raise ValueError(f"step_size must be a positive int, got {step_size!r}")
    full = math.ceil(n / step_size)
    if steps is None:
        return full
    if isinstance(steps, bool) or not isinstance(steps, int) or not 0 <= steps <= full:
        raise ValueError(f"steps must be an int in [0, ceil(N / step_size) = {full}], got {steps!r}")
    return steps


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x).argmax(dim=1)


def point_flipping(model: nn.Module, points: torch.Tensor, labels: torch.Tensor, *,
                   relevance: RelevanceArg = "zplus_flat", mode: str = "fixed", step_size: int = 32,
                   steps: int | None = None, value: float = 0.0,
                   generator: torch.Generator | None = None) -> PointFlippingResult:
    """Point flipping on one batch.

    ``points`` ``(B, N, D)`` float, ``labels`` ``(B,)`` long (the relevance target). ``relevance``:
    attribution method name (default ``"zplus_flat"``, the paper's point-cloud LRP) or a callable
    ``(x, y) -> (B, N) | (B, N, D)`` (e.g. an ``Attributor``). ``steps`` defaults to
    ``ceil(N / step_size)`` (every point removed at the end). ``generator`` drives ``"random"``.
    The model is evaluated in eval mode and left as it was.
    """
    check_float_tensor("points", points, (3,), "(B, N, D) with D >= 3")
    check_tensor("labels", labels, (1,), "(B,)")
    check_batch_match("points", points, "labels", labels)
    b, n, _ = points.shape
    steps = _check_common(mode, step_size, steps, n)
    fn = point_relevance_fn(model, relevance) if mode != "random" else None
    x = points.detach().clone()
    y = labels.to(points.device)
    removed = torch.zeros(b, n, dtype=torch.bool, device=x.device)
    with eval_mode(model):
        correct = [_predict(model, x) == y]
        if mode == "fixed":
            assert fn is not None
            score = _point_scores(fn, x, y)
        elif mode == "random":
            score = torch.rand(b, n, generator=generator, device="cpu").to(x.device)
        for k in range(1, steps + 1):
            if mode == "recompute":
                assert fn is not None
                score = _point_scores(fn, x, y)
            take = min(step_size, n - (k - 1) * step_size)
            idx = score.masked_fill(removed, float("-inf")).topk(take, dim=1).indices
            removed.scatter_(1, idx, True)
            x = torch.where(removed.unsqueeze(-1), torch.full_like(x, value), x)
            correct.append(_predict(model, x) == y)
    return PointFlippingResult(mode, step_size, n, torch.stack(correct, dim=1).cpu())


def _is_item_dataset(data: Any) -> bool:
    """A map-style collection of ``(points (N, D), label)`` items (not of batches, not a loader)."""
    if isinstance(data, DataLoader) or not (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
        return False
    if isinstance(data, Dataset):
        return True
    return len(data) > 0 and torch.as_tensor(data[0][0]).dim() == 2


def point_flipping_dataset(model: nn.Module, data: Dataset | DataLoader | Iterable, *,
                           relevance: RelevanceArg = "zplus_flat", mode: str = "fixed", step_size: int = 32,
                           steps: int | None = None, value: float = 0.0, batch_size: int = 32,
                           device: torch.device | str | None = None, max_samples: int | None = None,
                           seed: int = 0) -> PointFlippingResult:
    """Point flipping over a whole dataset (a ``Dataset`` or list of ``(points (N, D), label)`` items,
    batched here with ``batch_size``) or a loader / iterable of ``(x (B, N, D), y (B,))`` batches.

    The attributor is built once; curves are accumulated over every sample (accuracy over the
    whole set, not averaged per batch). ``max_samples`` stops early (for quick looks).
    """
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    loader: Iterable = (DataLoader(cast(Dataset, data), batch_size=batch_size, shuffle=False)
                        if _is_item_dataset(data) else cast(Iterable, data))
    fn = point_relevance_fn(model, relevance) if mode != "random" else (lambda x, y: x)
    gen = torch.Generator().manual_seed(seed)
    parts: list[torch.Tensor] = []
    seen, n = 0, 0
    for x, y in loader:
        if max_samples is not None and seen >= max_samples:
            break
        if max_samples is not None:
            x, y = x[: max_samples - seen], y[: max_samples - seen]
        res = point_flipping(model, x.to(dev), torch.as_tensor(y).to(dev), relevance=fn, mode=mode,
                             step_size=step_size, steps=steps, value=value, generator=gen)
        parts.append(res.correct)
        seen += x.shape[0]
        n = res.num_points
    if not parts:
        raise ValueError("data must yield at least one (x, y) batch")
    return PointFlippingResult(mode, step_size, n, torch.cat(parts))


def compare_point_flipping(models: Mapping[str, nn.Module], data: Dataset | DataLoader | Iterable,
                           **kwargs: Any) -> dict[str, PointFlippingResult]:
    """:func:`point_flipping_dataset` for several models on the same data: ``{name: result}``."""
    return {name: point_flipping_dataset(m, data, **kwargs) for name, m in models.items()}
