"""Real ModelNet10 from the shared data folder (skipped when absent)."""
from __future__ import annotations

import torch

from reldrop.data import build_dataset

CLASSES = ["bathtub", "bed", "chair", "desk", "dresser", "monitor", "night_stand", "sofa", "table", "toilet"]


def test_modelnet10_counts_and_normalization(modelnet10_root, tmp_path, monkeypatch):
    monkeypatch.setenv("RELDROP_CACHE_DIR", str(tmp_path))
    train = build_dataset("modelnet10", modelnet10_root, "train", cache=False)
    test = build_dataset("modelnet10", modelnet10_root.parent, "test", cache=False)  # data root works too
    assert len(train.dataset) == 3991 and len(test.dataset) == 908
    assert train.class_names == CLASSES and test.num_classes == 10
    assert sum(test.extra["class_counts"]) == 908 and min(test.extra["class_counts"]) > 0
    for i in (0, 500, 907):
        x, y = test.dataset[i]
        assert x.shape == (1024, 3) and x.dtype == torch.float32 and 0 <= y < 10
        assert torch.allclose(x.mean(0), torch.zeros(3), atol=1e-5)
        assert abs(float(x.norm(dim=1).max()) - 1.0) < 1e-5
