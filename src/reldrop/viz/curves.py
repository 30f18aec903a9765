"""Line plots: region-perturbation (MoRF/LeRF) curves and the Fig. A.2 analogue (relative
channel-relevance AUC change per layer, ordered by depth)."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import torch

__all__ = ["plot_perturbation_curves", "plot_channel_auc_change"]


from ._figure import pyplot as _plt
from ._figure import save_figure


def plot_perturbation_curves(
    curves: Mapping[str, tuple[Sequence[float] | torch.Tensor, Sequence[float] | torch.Tensor]],
    path: str | Path,
    *,
    ylabel: str = "accuracy",
    xlabel: str = "fraction of patches removed",
    title: str | None = None,
) -> Path:
    """One line per label: ``{label: (x, y)}`` (e.g. fractions and the MoRF accuracy curve).

    Labels containing "lerf" or "random" are drawn dashed / dotted so that orders are told apart;
    labels ``"<model> <ORDER>"`` that share ``<model>`` share a colour.
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    colours: dict[str, str] = {}
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for label, (xs, ys) in curves.items():
        xs = torch.as_tensor(xs, dtype=torch.float64).tolist()
        ys = torch.as_tensor(ys, dtype=torch.float64).tolist()
        low = label.lower()
        style = "--" if "lerf" in low else (":" if "random" in low else "-")
        words = label.split()
        model = " ".join(words[:-1]) if len(words) > 1 else label  # "<model> <ORDER>": one colour per model
        colour = colours.setdefault(model, palette[len(colours) % len(palette)])
        ax.plot(xs, ys, style, label=label, linewidth=1.5, color=colour)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=10)
    return save_figure(fig, path, dpi=120)


def plot_channel_auc_change(
    changes: Mapping[str, Mapping[str, float]],
    path: str | Path,
    *,
    title: str | None = None,
) -> Path:
    """Fig. A.2 analogue: relative AUC change (%) vs the baseline, one line per model.

    ``changes``: ``{model label: {layer name: % change}}`` (from
    :func:`reldrop.metrics.relative_auc_change`, layers in depth order). The x-axis lists the
    layers of the first model in that order.
    """
    plt = _plt()
    if not changes:
        raise ValueError("changes must hold at least one model")
    layers = list(next(iter(changes.values())).keys())
    fig, ax = plt.subplots(figsize=(max(5.0, 0.32 * len(layers) + 2), 3.8))
    for label, ch in changes.items():
        xs = [i for i, n in enumerate(layers) if n in ch]
        ax.plot(xs, [ch[layers[i]] for i in xs], marker="o", markersize=3, label=label)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(layers)))
    ax.set_xticklabels(layers, rotation=70, ha="right", fontsize=7)
    ax.set_xlabel("layer (ordered by depth)")
    ax.set_ylabel("relative AUC change vs baseline (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return save_figure(fig, path, dpi=120)
