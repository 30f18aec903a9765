"""Builders from a config: the augmentation a config's ``aug`` section names."""
from __future__ import annotations

import pytest
import torch

import reldrop
from reldrop.augment import RandomErasing
from reldrop.train.factory import build_augmentation


def test_build_augmentation_wiring() -> None:
    from reldrop.train.config import DEFAULTS

    model = reldrop.models.build("small_cnn", num_classes=10, in_channels=1, width=4)
    aug_cfg = dict(DEFAULTS["aug"])
    assert build_augmentation(dict(aug_cfg, name="none"), model, "image") is None
    re = build_augmentation(dict(aug_cfg, name="re", p=1.0), model, "image", generator=torch.Generator().manual_seed(0))
    assert isinstance(re, RandomErasing)
    x = torch.randn(8, 1, 8, 8) + 5.0
    out = re(x, torch.zeros(8, dtype=torch.long))
    erased = out == 0.0
    assert erased.flatten(1).any(1).all() and torch.equal(out[~erased], x[~erased])  # fill = 0 = the mean
    rd = build_augmentation(dict(aug_cfg, name="reldrop", p=0.25, scale=[0.1, 0.2]), model, "image")
    assert isinstance(rd, reldrop.RelDrop)
    assert rd.p == 0.25 and rd.scale == (0.1, 0.2) and rd.method == "epsilon_flat"
    assert rd.method_kwargs.get("epsilon") == 1e-3
    pts = build_augmentation(dict(aug_cfg, name="random", beta=0.3), model, "points")
    assert isinstance(pts, reldrop.RelDrop) and pts.alpha == 1.0 and pts.beta == 0.3
    pts2 = build_augmentation(dict(aug_cfg, name="reldrop", alpha=0.5, beta=0.15, method="zplus_flat"), model, "points")
    assert pts2.alpha == 0.5 and pts2.modality == "points" and pts2.method == "zplus_flat"
    with pytest.raises(ValueError, match="point clouds"):
        build_augmentation(dict(aug_cfg, name="re"), model, "points")
