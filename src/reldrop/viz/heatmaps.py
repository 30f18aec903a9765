"""Relevance heatmaps: the paper's Fig. 3 analogue (input | heatmap per model, same images).

Colour convention: red = positive relevance, blue = negative, white = 0, on a symmetric scale
``[-max|R|, max|R|]`` per heatmap (``bwr`` colormap); channels are summed first.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn

from ._figure import pyplot, save_figure

__all__ = ["relevance_to_rgb", "plot_heatmap_grid", "heatmap_grid_for_models"]


def _display(x: torch.Tensor, mean: Sequence[float] | None, std: Sequence[float] | None) -> torch.Tensor:
    """``(C, H, W)`` (normalized if mean/std given) -> ``(H, W, C)`` in [0, 1]."""
    x = x.detach().float().cpu()
    if mean is not None and std is not None:
        x = x * torch.tensor(std).view(-1, 1, 1) + torch.tensor(mean).view(-1, 1, 1)
    return x.clamp(0, 1).permute(1, 2, 0)


def relevance_to_rgb(relevance: torch.Tensor) -> torch.Tensor:
    """``(H, W)`` or ``(C, H, W)`` relevance -> ``(H, W, 3)`` RGB in [0, 1] (bwr, symmetric scale)."""
    import matplotlib

    r = relevance.detach().float().cpu()
    if r.dim() == 3:
        r = r.sum(0)
    if r.dim() != 2:
        raise ValueError(f"relevance must have shape (H, W) or (C, H, W), got {tuple(relevance.shape)}")
    r = torch.nan_to_num(r)
    vmax = float(r.abs().max())
    z = (r / vmax + 1) / 2 if vmax > 0 else torch.full_like(r, 0.5)
    rgba = matplotlib.colormaps["bwr"](z.numpy())
    return torch.from_numpy(rgba[..., :3]).float()


def plot_heatmap_grid(
    images: torch.Tensor,
    relevances: Mapping[str, torch.Tensor],
    path: str | Path,
    *,
    row_labels: Sequence[str] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    masks: torch.Tensor | None = None,
    title: str | None = None,
) -> Path:
    """Write a grid: one row per image, columns ``input | <model 1> | <model 2> | ...``.

    Args:
        images: ``(N, C, H, W)`` inputs (normalized with ``mean``/``std`` if given, else in [0, 1]).
        relevances: ``{column title (model name): (N, C, H, W) or (N, H, W) relevance}``.
        path: output PNG.
        row_labels: ``N`` labels shown left of each row (class names).
        masks: optional ``(N, H, W)`` bool ground truth, outlined in green on every panel.
    """
    plt = pyplot()

    n = images.shape[0]
    for name, r in relevances.items():
        if r.shape[0] != n:
            raise ValueError(f"relevances[{name!r}] must hold {n} maps, got shape {tuple(r.shape)}")
    cols = 1 + len(relevances)
    fig, axes = plt.subplots(n, cols, figsize=(1.9 * cols, 1.9 * n + (0.5 if title else 0.2)), squeeze=False)
    for i in range(n):
        panels = [("input", _display(images[i], mean, std))]
        panels += [(name, relevance_to_rgb(r[i])) for name, r in relevances.items()]
        for j, (name, img) in enumerate(panels):
            ax = axes[i][j]
            arr = img.numpy()
            if arr.ndim == 3 and arr.shape[2] == 1:  # grayscale input
                ax.imshow(arr[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            else:
                ax.imshow(arr, interpolation="nearest")
            if masks is not None:
                ax.contour(masks[i].cpu().float().numpy(), levels=[0.5], colors="lime", linewidths=0.8)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=9)
            if j == 0 and row_labels is not None:
                ax.set_ylabel(row_labels[i], fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def heatmap_grid_for_models(
    models: Mapping[str, nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    path: str | Path,
    *,
    class_names: Sequence[str] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    method: str = "epsilon_gamma_box",
    masks: torch.Tensor | None = None,
    title: str | None = None,
    **method_kwargs: Any,
) -> Path:
    """Fig. 3 analogue: relevance of every model for the same images ``x`` (N, C, H, W), label ``y``.

    The relevance is ``reldrop.attribution.attribute(model, x, y, method)``; for the default
    ``epsilon_gamma_box`` the input range comes from ``mean``/``std``.
    """
    from ..attribution import attribute

    kw = dict(method_kwargs)
    if method == "epsilon_gamma_box" and "low" not in kw and mean is not None and std is not None:
        kw.update(mean=mean, std=std)
    rel = {name: attribute(m, x, y, method, **kw) for name, m in models.items()}
    labels = [class_names[int(t)] for t in y] if class_names is not None else None
    return plot_heatmap_grid(x, rel, path, row_labels=labels, mean=mean, std=std, masks=masks, title=title)
