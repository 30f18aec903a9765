"""Point-cloud figures: RelDrop's dropped points (paper Fig. A.1) and point-flipping curves (Fig. 4).

Both functions write a PNG (matplotlib, Agg backend) and return its path.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from .._checks import check_float_tensor, check_tensor

__all__ = ["plot_dropped_points", "plot_dropped_points_for_model", "plot_flipping_curves", "plot_point_relevance"]


from ._figure import pyplot as _plt
from ._figure import save_figure


def _scatter(ax: Any, points: torch.Tensor, colors: Any, title: str, size: float) -> None:
    xyz = points.numpy()
    ax.scatter(xyz[:, 0], xyz[:, 2], xyz[:, 1], c=colors, s=size, depthshade=False, linewidths=0)
    ax.set_title(title, fontsize=10)
    lim = float(abs(xyz).max()) if xyz.size else 1.0
    for setter in (ax.set_xlim, ax.set_ylim, ax.set_zlim):
        setter(-lim, lim)
    ax.set_box_aspect((1, 1, 1))
    ax.set_axis_off()
    ax.view_init(elev=20, azim=-60)


def plot_dropped_points(points: torch.Tensor, relevance: torch.Tensor, path: str | Path, *,
                        alpha: float = 0.5, betas: Sequence[float] = (0.15, 0.5, 0.85), seed: int = 0,
                        title: str | None = None, point_size: float = 4.0) -> Path:
    """Fig. A.1: one 3D scatter per ``beta``, side by side: dropped points red, kept points blue.

    ``points`` ``(N, D)`` (xyz first), ``relevance`` ``(N,)`` or ``(N, D)``. Masks are drawn with
    :func:`reldrop.relevance_point_drop` (``alpha``, each ``beta``, the same uniform draw ``v`` for
    every panel via ``seed``); dropped points are drawn at their original position (RelDrop moves
    them to the origin). Each panel's title gives alpha, beta and the dropped count.
    """
    from ..masks import relevance_point_drop

    check_float_tensor("points", points, (2,), "(N, D) with D >= 3")
    check_tensor("relevance", relevance, (1, 2), "(N,) or (N, D)")
    if relevance.shape[0] != points.shape[0]:
        raise ValueError(f"relevance must have N = {points.shape[0]} rows like points, got {tuple(relevance.shape)}")
    if not betas:
        raise ValueError("betas must hold at least one value")
    pts = points.detach().cpu().float()
    rel = relevance.detach().cpu().float()
    plt = _plt()
    fig = plt.figure(figsize=(4.2 * len(betas), 4.6))
    for i, beta in enumerate(betas):
        gen = torch.Generator().manual_seed(seed)
        _, mask = relevance_point_drop(pts.unsqueeze(0), rel.unsqueeze(0), alpha=alpha, beta=float(beta), generator=gen)
        mask = mask[0]
        colors = ["tab:red" if m else "tab:blue" for m in mask.tolist()]
        ax = fig.add_subplot(1, len(betas), i + 1, projection="3d")
        _scatter(ax, pts[:, :3], colors, f"α={alpha:g}, β={float(beta):g}: {int(mask.sum())}/{len(mask)} dropped",
                 point_size)
    fig.suptitle(title or "RelDrop point dropout (red: dropped, blue: kept)", fontsize=12)
    return save_figure(fig, path)


def plot_dropped_points_for_model(model: "torch.nn.Module", points: torch.Tensor, label: int, path: str | Path, *,
                                  method: str = "zplus_flat", alpha: float = 0.5,
                                  betas: Sequence[float] = (0.15, 0.5, 0.85), seed: int = 0,
                                  title: str | None = None) -> Path:
    """Fig. A.1 for a trained model: relevance of ``points`` ``(N, D)`` for class ``label`` with
    ``method`` (the same attribution RelDrop uses during training), then :func:`plot_dropped_points`."""
    from ..attribution import attribute

    rel = attribute(model, points.unsqueeze(0), torch.tensor([int(label)], device=points.device), method)[0]
    return plot_dropped_points(points, rel.sum(-1), path, alpha=alpha, betas=betas, seed=seed, title=title)


def plot_point_relevance(points: torch.Tensor, relevance: torch.Tensor, path: str | Path, *,
                         title: str | None = None, point_size: float = 4.0) -> Path:
    """One 3D scatter coloured by per-point relevance (``relevance`` ``(N,)`` or ``(N, D)``, summed)."""
    check_float_tensor("points", points, (2,), "(N, D) with D >= 3")
    rel = relevance.detach().cpu().float()
    rel = rel.sum(-1) if rel.dim() == 2 else rel
    plt = _plt()
    fig = plt.figure(figsize=(5, 5))
    ax = fig.add_subplot(1, 1, 1, projection="3d")
    lim = float(rel.abs().max()) or 1.0
    _scatter(ax, points.detach().cpu().float()[:, :3], plt.cm.bwr(((rel / lim + 1) / 2).numpy()), title or "relevance", point_size)
    return save_figure(fig, path, tight=False)


def plot_flipping_curves(results: Mapping[str, Any], path: str | Path, *,
                         title: str = "Point flipping: accuracy vs. removed points",
                         controls: Mapping[str, Any] | None = None) -> Path:
    """Fig. 4: accuracy after each point-flipping step for several models on one plot.

    ``results``: ``{label: PointFlippingResult}`` (or anything with ``fractions``, ``accuracy_curve``
    and ``auc``); the legend shows each AUC. ``controls`` (e.g. the random-order curves) are drawn
    dashed in the same colours, matched by label.
    """
    if not results:
        raise ValueError("results must hold at least one curve")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    colors = {}
    for label, res in results.items():
        line, = ax.plot((100 * res.fractions).tolist(), (100 * res.accuracy_curve).tolist(),
                        marker="o", ms=3, label=f"{label} (AUC {res.auc:.3f})")
        colors[label] = line.get_color()
    for label, res in (controls or {}).items():
        ax.plot((100 * res.fractions).tolist(), (100 * res.accuracy_curve).tolist(),
                ls="--", color=colors.get(label), alpha=0.7,
                label=f"{label}, random order (AUC {res.auc:.3f})")
    ax.set_xlabel("points removed (%)")
    ax.set_ylabel("accuracy (%)")
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=11)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
