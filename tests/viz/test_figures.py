"""Figures: colour convention of heatmaps, grid layout, curve plots write readable PNGs."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from reldrop.viz import (heatmap_grid_for_models, plot_channel_auc_change, plot_heatmap_grid,
                         plot_perturbation_curves, relevance_to_rgb)


def test_red_positive_blue_negative_white_zero_symmetric():
    r = torch.tensor([[2.0, -2.0, 0.0, 1.0]])
    rgb = relevance_to_rgb(r)
    assert rgb.shape == (1, 4, 3)
    red, blue, white, half = rgb[0]
    assert red[0] > 0.9 and red[1] < 0.1 and red[2] < 0.1
    assert blue[2] > 0.9 and blue[0] < 0.1 and blue[1] < 0.1
    assert (white > 0.95).all()
    assert half[0] > 0.95 and 0.4 < half[1] < 0.6  # +1 of +-2 is half-saturated red
    # symmetric scale: a map with only a small negative value is still fully blue at its min
    assert relevance_to_rgb(torch.tensor([[-0.01, 0.0]]))[0, 0, 2] > 0.9
    assert torch.allclose(relevance_to_rgb(torch.zeros(2, 3, 3)), torch.ones(3, 3, 3), atol=0.02)


def _size(path):
    with Image.open(path) as im:
        return im.size


def test_grid_layout_scales_with_rows_and_models(tmp_path):
    x = torch.rand(2, 3, 8, 8)
    r = {"A": torch.randn(2, 3, 8, 8), "B": torch.randn(2, 8, 8)}
    p1 = plot_heatmap_grid(x, r, tmp_path / "g.png", row_labels=["cat", "dog"],
                           masks=torch.ones(2, 8, 8, dtype=torch.bool))
    p2 = plot_heatmap_grid(torch.rand(4, 3, 8, 8), {"A": torch.randn(4, 8, 8)}, tmp_path / "g2.png")
    (w1, h1), (w2, h2) = _size(p1), _size(p2)
    assert w1 > w2 and h2 > h1  # 3 columns vs 2; 4 rows vs 2
    with pytest.raises(ValueError, match="relevances"):
        plot_heatmap_grid(x, {"A": torch.randn(3, 8, 8)}, tmp_path / "bad.png")


def test_grid_for_models_uses_attribution(tmp_path):
    torch.manual_seed(0)
    nets = {"m1": nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                nn.Flatten(), nn.Linear(4, 3))}
    p = heatmap_grid_for_models(nets, torch.rand(2, 3, 8, 8), torch.tensor([0, 2]), tmp_path / "f3.png",
                                class_names=["a", "b", "c"], mean=(0.5,) * 3, std=(0.25,) * 3)
    assert p.is_file() and _size(p)[0] > 100


def test_curves_write_png(tmp_path):
    fr = torch.linspace(0, 1, 5)
    p = plot_perturbation_curves({"base MoRF": (fr, [1, .6, .4, .2, .1]), "base LeRF": (fr, [1, .9, .8, .5, .1])},
                                 tmp_path / "c.png", title="t")
    q = plot_channel_auc_change({"RE": {"l1": -3.0, "l2": 2.0}, "RelDrop": {"l1": 1.0, "l2": 5.0}},
                                tmp_path / "a.png")
    arr = np.asarray(Image.open(p))
    assert arr.std() > 5  # not a blank image
    assert q.is_file()
    with pytest.raises(ValueError, match="changes"):
        plot_channel_auc_change({}, tmp_path / "b.png")
