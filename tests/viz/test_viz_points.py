"""Point-cloud figures: Fig. A.1 (dropped red vs kept blue for several beta) and flipping curves."""
from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

from reldrop.data.shapes import generate_shapes
from reldrop.metrics.flipping import PointFlippingResult
from reldrop.viz.pointclouds import plot_dropped_points, plot_flipping_curves, plot_point_relevance


def _colour_fraction(img: np.ndarray, panel: int, panels: int, colour: str) -> int:
    w = img.shape[1] // panels
    part = img[:, panel * w:(panel + 1) * w, :3]
    r, g, b = part[..., 0], part[..., 1], part[..., 2]
    if colour == "red":
        return int(((r > 0.6) & (g < 0.45) & (b < 0.45)).sum())
    return int(((b > 0.55) & (r < 0.4)).sum())


def test_dropped_points_figure_more_red_for_larger_beta(tmp_path):
    pts, _, _ = generate_shapes(1, 512, classes=["torus"], rotate="none", occlusion=0.0)
    rel = pts[0, :, 0] + 1.0  # relevance grows along x
    path = plot_dropped_points(pts[0, :, :3], rel, tmp_path / "figA1.png", title="torus")
    img = mpimg.imread(path)
    red = [_colour_fraction(img, i, 3, "red") for i in range(3)]
    blue = [_colour_fraction(img, i, 3, "blue") for i in range(3)]
    assert red[0] < red[1] < red[2] and blue[0] > blue[1] > blue[2], (red, blue)
    assert red[0] > 0 and blue[2] > 0


def test_dropped_points_rejects_mismatched_relevance(tmp_path):
    with pytest.raises(ValueError, match="relevance"):
        plot_dropped_points(torch.zeros(10, 3), torch.zeros(9), tmp_path / "x.png")


def test_flipping_curves_and_relevance_scatter_write_pngs(tmp_path):
    a = PointFlippingResult("fixed", 32, 1024, torch.rand(20, 33) > 0.3)
    b = PointFlippingResult("fixed", 32, 1024, torch.rand(20, 33) > 0.6)
    path = plot_flipping_curves({"baseline": a, "reldrop": b}, tmp_path / "curves.png", controls={"baseline": a})
    img = mpimg.imread(path)
    assert img.shape[0] > 200 and img.shape[1] > 300 and img[..., :3].std() > 0.05
    p2 = plot_point_relevance(torch.randn(100, 3), torch.randn(100, 3), tmp_path / "rel.png")
    assert p2.stat().st_size > 1000
