"""Region perturbation: known orders, curve bookkeeping, model-state safety, Quantus cross-check."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

from reldrop.metrics import curve_auc, region_perturbation
from reldrop.metrics.perturbation import patch_order


class PixelSum(nn.Module):
    """Logit of class 1 = sum of the input's first channel; class 0 = constant threshold."""

    def __init__(self, thr: float) -> None:
        super().__init__()
        self.thr = thr
        self.lin = nn.Linear(1, 1)  # so the model has parameters (device lookup) and a mode
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        s = x[:, 0].flatten(1).sum(1)
        return torch.stack([torch.full_like(s, self.thr), s], 1)


def test_patch_order_morf_lerf_known():
    r = torch.zeros(1, 4, 4)
    r[0, 2:, 2:] = 3.0   # patch 3 (bottom right) most relevant
    r[0, :2, 2:] = 2.0   # patch 1
    r[0, 2:, :2] = -1.0  # patch 2 least relevant
    rank, p = patch_order(r, 2, "morf")
    assert p == 4
    assert rank[0, ::2, ::2].tolist() == [[2, 1], [3, 0]]
    rank, _ = patch_order(r, 2, "lerf")
    assert rank[0, ::2, ::2].tolist() == [[1, 2], [0, 3]]


def test_patch_order_ragged_grid_and_random_is_permutation():
    r = torch.randn(2, 5, 7, generator=torch.Generator().manual_seed(0))
    rank, p = patch_order(r, 3, "random", torch.Generator().manual_seed(1))
    assert p == 2 * 3
    for b in range(2):
        assert sorted(rank[b].unique().tolist()) == list(range(6))
    rank2, _ = patch_order(r, 3, "random", torch.Generator().manual_seed(1))
    assert torch.equal(rank, rank2)


def test_morf_removes_evidence_first_one_forward_per_step():
    x = torch.zeros(3, 1, 4, 4)
    x[:, :, :2, :2] = 1.0  # evidence for class 1 in the top-left patch
    y = torch.ones(3, dtype=torch.long)
    model = PixelSum(thr=2.0)
    model.train()
    res = region_perturbation(model, x, y, x.clone(), order="morf", patch_size=2, score="logit")
    assert model.calls == 4 + 1  # one forward of the batch per step
    assert model.training  # mode restored
    assert res.scores.shape == (3, 5) and res.correct.shape == (3, 5)
    assert res.scores[0].tolist() == [4.0, 0.0, 0.0, 0.0, 0.0]
    assert res.accuracy_curve.tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert res.accuracy_auc() == pytest.approx(0.5 / 4)
    lerf = region_perturbation(model, x, y, x.clone(), order="lerf", patch_size=2, score="logit")
    assert lerf.accuracy_curve.tolist() == [1.0, 1.0, 1.0, 1.0, 0.0]
    assert lerf.accuracy_auc() > res.accuracy_auc()
    assert torch.allclose(res.drop, res.scores[:, :1] - res.scores[:, 1:])


def test_fill_value_and_steps():
    x = torch.ones(2, 2, 4, 4)
    y = torch.ones(2, dtype=torch.long)
    model = PixelSum(thr=0.0)
    res = region_perturbation(model, x, y, torch.rand(2, 4, 4), patch_size=4, steps=1,
                              fill=torch.tensor([0.5, 9.0]), score="logit")
    assert res.scores[:, 1].tolist() == [8.0, 8.0]  # 16 pixels of channel 0 filled with 0.5
    with pytest.raises(ValueError, match="steps"):
        region_perturbation(model, x, y, torch.rand(2, 4, 4), patch_size=4, steps=2)
    with pytest.raises(ValueError, match="order"):
        region_perturbation(model, x, y, torch.rand(2, 4, 4), order="best")
    with pytest.raises(ValueError, match="patch_size"):
        region_perturbation(model, x, y, torch.rand(2, 4, 4), patch_size=0)


def test_curve_auc_trapezoid():
    assert float(curve_auc(torch.tensor([1.0, 1.0, 1.0]))) == pytest.approx(1.0)
    assert float(curve_auc(torch.tensor([1.0, 0.0]))) == pytest.approx(0.5)
    assert float(curve_auc(torch.tensor([1.0, 0.5, 0.0, 0.0]))) == pytest.approx((0.75 + 0.25) / 3)


def test_matches_quantus_region_perturbation():
    quantus = pytest.importorskip("quantus", reason="quantus (test extra) not installed")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                          nn.Flatten(), nn.Linear(16, 5)).eval()
    g = torch.Generator().manual_seed(4)
    x = torch.randn(6, 3, 12, 12, generator=g)
    y = torch.randint(0, 5, (6,), generator=g)
    a = torch.randn(6, 1, 12, 12, generator=g)
    for order in ("morf", "lerf"):
        ours = region_perturbation(model, x, y, a, order=order, patch_size=4, fill=0.0)
        metric = quantus.RegionPerturbation(patch_size=4, order=order, regions_evaluation=9,
                                            abs=False, normalise=False, perturb_baseline=0.0,
                                            disable_warnings=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a.numpy(),
                         channel_first=True, softmax=True, device="cpu")
        np.testing.assert_allclose(ours.drop.numpy(), np.asarray(ref, dtype=np.float64), atol=1e-6)
