"""The ``reldrop demo`` figure: input | relevance | RelDrop-erased | Random-Erasing, one row per sample."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from ._figure import pyplot, save_figure


def to_display(x: torch.Tensor, mean: Sequence[float] | None, std: Sequence[float] | None) -> torch.Tensor:
    """Undo normalization: ``(C, H, W)`` normalized → ``(H, W, C)`` in [0, 1] for ``imshow``."""
    x = x.detach().float()
    if mean is not None and std is not None:
        m = torch.tensor(mean, dtype=x.dtype).view(-1, 1, 1)
        s = torch.tensor(std, dtype=x.dtype).view(-1, 1, 1)
        x = x * s + m
    else:  # unknown normalization: stretch to [0, 1]
        x = (x - x.min()) / (x.max() - x.min()).clamp_min(1e-12)
    return x.clamp(0, 1).permute(1, 2, 0)


def _outline(ax: Any, mask: torch.Tensor, colour: str) -> None:
    """Draw the bounding box of a boolean ``(H, W)`` mask (a block) on ``ax``."""
    import matplotlib.patches as patches

    rows = mask.any(1).nonzero()
    cols = mask.any(0).nonzero()
    if len(rows) == 0:
        return
    top, bottom = int(rows.min()), int(rows.max())
    left, right = int(cols.min()), int(cols.max())
    ax.add_patch(patches.Rectangle((left - 0.5, top - 0.5), right - left + 1, bottom - top + 1,
                                   fill=False, edgecolor=colour, linewidth=2))


def plot_demo_grid(
    path: str | Path,
    x: torch.Tensor,
    relevance: torch.Tensor,
    erased: torch.Tensor,
    mask: torch.Tensor,
    random_erased: torch.Tensor,
    random_mask: torch.Tensor,
    *,
    labels: Sequence[str],
    preds: Sequence[str],
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    method: str = "epsilon_flat",
) -> Path:
    """Save the grid; x/erased ``(B, C, H, W)``, relevance ``(B, C, H, W)``, masks ``(B, H, W)``."""
    plt = pyplot()

    B = x.shape[0]
    fig, axes = plt.subplots(B, 4, figsize=(4 * 2.2, B * 2.3), squeeze=False)
    titles = ["input", f"LRP relevance ({method})", "RelDrop (most relevant)", "Random Erasing"]
    rel2d = relevance.detach().float().sum(1)
    for i in range(B):
        gray = x.shape[1] == 1
        cmap = "gray" if gray else None
        img = to_display(x[i], mean, std)
        axes[i, 0].imshow(img.squeeze(-1) if gray else img, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        axes[i, 0].set_ylabel(f"label {labels[i]}\npred {preds[i]}", fontsize=9)
        lim = float(rel2d[i].abs().max()) or 1.0
        axes[i, 1].imshow(rel2d[i], cmap="bwr", vmin=-lim, vmax=lim, interpolation="nearest")
        centre = divmod(int(rel2d[i].argmax()), rel2d.shape[-1])
        axes[i, 1].plot(centre[1], centre[0], marker="x", color="k", markersize=8)
        for col, (xe, m, colour) in enumerate(((erased, mask, "red"), (random_erased, random_mask, "orange")), start=2):
            e = to_display(xe[i], mean, std)
            axes[i, col].imshow(e.squeeze(-1) if gray else e, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            _outline(axes[i, col], m[i], colour)
        for j in range(4):
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
            if i == 0:
                axes[i, j].set_title(titles[j], fontsize=9)
    fig.suptitle("RelDrop occludes the most relevant region (red = positive relevance, x = argmax)", fontsize=10)
    return save_figure(fig, path, dpi=100)
