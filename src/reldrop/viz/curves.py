"""Line plots: region-perturbation (MoRF/LeRF) curves, the Fig. A.2 analogue (relative
channel-relevance AUC change per layer, ordered by depth) and the training curves of
``reldrop compare`` (Fig. 2 analogue)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

__all__ = ["plot_perturbation_curves", "plot_channel_auc_change", "plot_curves", "moving_average"]


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


def moving_average(y: Sequence[float], window: int = 5) -> np.ndarray:
    """Centred moving average over ``window`` points (shrinks at both ends; no lag, same length as ``y``)."""
    a = np.asarray(y, dtype=float)
    if a.size == 0:
        return a
    c = np.cumsum(np.insert(a, 0, 0.0))
    i = np.arange(a.size)
    lo = np.maximum(i - (window - 1) // 2, 0)
    hi = np.minimum(i + window // 2 + 1, a.size)
    return (c[hi] - c[lo]) / (hi - lo)


def plot_curves(runs: Sequence[Mapping[str, Any]], path: str | Path, *, window: int = 5,
                title: str | None = None) -> Path:
    """Fig. 2 analogue: train (left) and test (right) accuracy per epoch, one colour per variant.

    Band: mean ± std over seeds per epoch (when a variant has several seeds). Runs of at least
    ``2 * window`` epochs: thin line the mean, thick line its centred ``window``-epoch moving
    average; shorter runs (a moving average would flatten them): thick line with markers = the mean.
    """
    plt = _plt()
    by: dict[str, list[list[dict[str, Any]]]] = {}
    for r in runs:
        if r["metrics"]:
            by.setdefault(r["variant"], []).append(r["metrics"])
    cmap = plt.get_cmap("tab10" if len(by) <= 10 else "tab20")
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), sharex=True)
    smoothed = False
    for i, (name, seed_rows) in enumerate(by.items()):
        n = min(len(m) for m in seed_rows)
        epochs = np.asarray([m["epoch"] for m in seed_rows[0][:n]])
        smooth = n >= 2 * window
        smoothed |= smooth
        for ax, key in zip(axes, ("train_acc", "test_acc")):
            per_seed = np.asarray([[m[key] for m in rows[:n]] for rows in seed_rows], dtype=float)
            mean = per_seed.mean(axis=0)
            color = cmap(i % cmap.N)
            label = f"{name} (n={len(seed_rows)})"
            if len(seed_rows) > 1:
                sd = per_seed.std(axis=0, ddof=1)
                ax.fill_between(epochs, mean - sd, mean + sd, color=color, alpha=0.15, lw=0)
            if smooth:
                ax.plot(epochs, mean, color=color, lw=0.8, alpha=0.45)
                ax.plot(epochs, moving_average(mean, window), color=color, lw=2.4, label=label)
            else:
                ax.plot(epochs, mean, color=color, lw=2.0, marker="o", ms=4, label=label)
    for ax, label in zip(axes, ("train accuracy (%)", "test accuracy (%)")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[0].set_title("train (augmented batches)")
    axes[1].set_title("test")
    axes[1].legend(loc="lower right", fontsize=9)
    if title:
        how = (f"thin: mean over seeds, thick: centred {window}-epoch moving average" if smoothed
               else "line: mean over seeds")
        fig.suptitle(title + f"  —  {how}, band: ± std over seeds", fontsize=10)
    return save_figure(fig, path, dpi=120)
