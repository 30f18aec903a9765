"""Relevance-driven point dropout for point clouds (paper Sec. 3.2, Eq. 8-9, Alg. A.2).

Point ``i`` is dropped iff ``alpha * v_i + (1 - alpha) * Rnorm_i >= 1 - beta`` with
``v ~ U(0, 1)^N`` and ``Rnorm = (R - min R) / (max R - min R)`` per sample; ``alpha = 1`` is pure
random dropout (a ``beta`` fraction in expectation), ``alpha = 0`` pure relevance (exactly the
points with ``Rnorm >= 1 - beta``). The building blocks :func:`normalize_relevance_points` and
:func:`point_drop_mask` are exported for reuse (e.g. the same rule per pixel or patch of an image).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from .._checks import check_batch_match, check_finite, check_float_tensor, check_probability, parse_fill_value
from ._draw import cached_constant

__all__ = ["relevance_point_drop", "normalize_relevance_points", "point_drop_mask"]


def normalize_relevance_points(relevance: Tensor) -> tuple[Tensor, Tensor]:
    """Paper Eq. 8 per sample: ``Rnorm = (R - min R) / (max R - min R)`` in [0, 1].

    ``relevance``: ``(B, N)``, or ``(B, N, D)`` summed over ``D`` (the per-coordinate relevance of a
    point). Half precision is computed in float32. Returns ``(rnorm (B, N), degenerate (B,) bool)``;
    a constant sample (``max == min``, e.g. all zero) is ``degenerate`` and gets ``Rnorm = 0``
    instead of NaN.
    """
    r = relevance.float() if relevance.dtype in (torch.float16, torch.bfloat16) else relevance
    if r.dim() == 3:
        r = r.sum(dim=2)
    lo, hi = torch.aminmax(r, dim=1, keepdim=True)
    span = hi - lo
    degenerate = span == 0
    rnorm = (r - lo) / torch.where(degenerate, torch.ones_like(span), span)
    return rnorm, degenerate.squeeze(1)


def point_drop_mask(rnorm: Tensor, degenerate: Tensor, v: Tensor, alpha: float, beta: float) -> Tensor:
    """Eq. 9: bool ``(B, N)``, True = drop: ``alpha * v + (1 - alpha) * rnorm >= 1 - beta``.

    For ``degenerate`` samples (constant relevance) the decision uses ``v`` alone
    (``v >= 1 - beta``): pure random dropout of a ``beta`` fraction in expectation, whatever
    ``alpha`` is — relevance that does not rank the points cannot guide the drop.
    """
    score = alpha * v + (1.0 - alpha) * rnorm
    score = torch.where(degenerate[:, None], v, score)
    return score >= 1.0 - beta


def _parse_point_value(value: object, features: int) -> tuple[str, Any]:
    """``("scalar", float)`` or ``("feature", [features floats])``."""
    form = f"a float or a sequence of {features} floats (one per point feature)"
    kind, v = parse_fill_value("value", value, features, form)
    return ("feature" if kind == "sequence" else kind), v


def relevance_point_drop(
    points: Tensor,
    relevance: Tensor,
    *,
    alpha: float = 0.5,
    beta: float = 0.15,
    value: float | Sequence[float] | Tensor = 0.0,
    generator: torch.Generator | None = None,
    inplace: bool = False,
    stats: dict | None = None,
) -> tuple[Tensor, Tensor]:
    """RelDrop for point clouds: drop relevant points, mixed with random ones (Eq. 8-9, Alg. A.2).

    Args:
        points: ``(B, N, D)`` floating point, finite, ``B, N >= 1``, ``D >= 3`` (xyz first; extra
            features such as normals are dropped along with the point).
        relevance: ``(B, N)`` or ``(B, N, D)`` (summed over ``D``), floating point, finite, on
            ``points``' device.
        alpha: share of randomness in the decision, in [0, 1] (1 = pure random, 0 = pure relevance).
        beta: controls the fraction of dropped points, in [0, 1] (with ``alpha = 1`` exactly a
            ``beta`` fraction in expectation).
        value: what a dropped point becomes, all ``D`` features: a float (paper: 0, the origin)
            or a sequence of ``D`` floats.
        generator: source of ``v ~ U(0, 1)^(B x N)`` (drawn on the generator's device, float32,
            then moved to ``points``' device; default: the default generator of that device).
        inplace: write into ``points``; otherwise ``points`` and ``relevance`` are never modified.
        stats: optional dict, cleared and filled with ``fallback`` (``(B,)`` bool), ``num_fallback`` (int)
            and ``num_dropped`` (``(B,)`` long).

    Degenerate relevance (constant per sample, e.g. all zero) never gives NaN: that sample is
    dropped purely at random (``v >= 1 - beta``) and counted in ``stats["num_fallback"]``.
    Note the paper's ``>=``: with ``alpha = 0`` and ``beta = 0`` the most relevant point(s)
    (``Rnorm = 1``) are still dropped.

    Returns:
        ``(points_out, mask)``: ``points_out`` ``(B, N, D)`` like ``points``; ``mask`` ``(B, N)``
        bool, True = dropped (the paper's ``M = 0``).
    """
    form = "(B, N, D) with D >= 3"
    points = check_float_tensor("points", points, (3,), form)
    B, N, D = points.shape
    if B == 0:
        raise ValueError("points must have a non-empty batch: shape (B, N, D) with B >= 1, got B = 0")
    if N == 0:
        raise ValueError("points must hold at least one point: shape (B, N, D) with N >= 1, got N = 0")
    if D < 3:
        raise ValueError(f"points must have shape {form}, got {tuple(points.shape)}")
    rform = f"(B, N) = {(B, N)} or (B, N, D) = {(B, N, D)}"
    relevance = check_float_tensor("relevance", relevance, (2, 3), rform)
    check_batch_match("points", points, "relevance", relevance)
    if tuple(relevance.shape) not in ((B, N), (B, N, D)):
        raise ValueError(f"relevance must have shape {rform}, got {tuple(relevance.shape)}")
    if relevance.device != points.device:
        raise ValueError(f"relevance must be on points' device ({points.device}), got {relevance.device}")
    alpha = check_probability("alpha", alpha)
    beta = check_probability("beta", beta)
    kind, fill = _parse_point_value(value, D)
    if not bool(torch.isfinite(torch.tensor(fill, dtype=points.dtype)).all()):
        raise ValueError(f"value must be representable in points' dtype {points.dtype}, got {value!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if not isinstance(inplace, bool):
        raise TypeError(f"inplace must be a bool, got {type(inplace).__name__}")
    if stats is not None and not isinstance(stats, dict):
        raise TypeError(f"stats must be a dict (filled in place) or None, got {type(stats).__name__}")
    # aminmax propagates NaN and shows +-inf: one read per tensor, one host sync for both
    ok = torch.stack([torch.isfinite(t) for t in (*torch.aminmax(points), *torch.aminmax(relevance))]).tolist()
    if not all(ok[:2]):
        check_finite("points", points)
    if not all(ok[2:]):
        check_finite("relevance", relevance)

    draw_device = generator.device if generator is not None else points.device
    v = torch.rand((B, N), generator=generator, device=draw_device).to(points.device)
    rnorm, degenerate = normalize_relevance_points(relevance)
    mask = point_drop_mask(rnorm, degenerate, v.to(rnorm.dtype), alpha, beta)

    m = mask[:, :, None]
    if kind == "scalar":
        out = points.masked_fill_(m, fill) if inplace else points.masked_fill(m, fill)
    else:
        f = cached_constant(tuple(fill), points.dtype, points.device)
        out = points.copy_(torch.where(m, f, points)) if inplace else torch.where(m, f, points)
    if stats is not None:
        stats.clear()
        stats.update(
            fallback=degenerate,
            num_fallback=int(degenerate.sum()),
            num_dropped=mask.sum(dim=1),
        )
    return out, mask
