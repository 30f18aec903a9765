"""Figures (matplotlib, Agg): relevance heatmap grids, perturbation curves, channel-AUC plots, training curves.

Submodules are imported on use so that ``import reldrop.viz`` stays light.
"""
from __future__ import annotations

from typing import Any

_LAZY = {
    "relevance_to_rgb": "heatmaps",
    "plot_heatmap_grid": "heatmaps",
    "heatmap_grid_for_models": "heatmaps",
    "plot_perturbation_curves": "curves",
    "plot_channel_auc_change": "curves",
    "plot_curves": "curves",
    "moving_average": "curves",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if _LAZY.get(name) == "heatmaps":
        from . import heatmaps

        return getattr(heatmaps, name)
    if _LAZY.get(name) == "curves":
        from . import curves

        return getattr(curves, name)
    raise AttributeError(f"module 'reldrop.viz' has no attribute {name!r}")
