"""ImageNet-R/A class-subset mapping on fixture wnid folders; ImageNet-O OOD metrics."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from PIL import Image

from reldrop.data.imagefolder import scan_imagefolder
from reldrop.metrics.zeroshot import list_wnids, max_softmax, ood_detection, subset_accuracy, subset_indices


class ColourToClass(nn.Module):
    """A '1000-class' model: the logit of class k is high when the image's red value is k/999."""

    def __init__(self, n=1000):
        super().__init__()
        self.register_buffer("centres", torch.arange(n).float() / (n - 1))
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        r = x[:, 0].flatten(1).mean(1, keepdim=True)
        return -1e4 * (r - self.centres).abs()


def test_subset_mapping_on_fixture_folders(tmp_path):
    # a 1000-class model over fake wnids; the subset dataset holds 3 of them, named by wnid
    model_wnids = [f"n{i:08d}" for i in range(1000)]
    subset = ["n00000998", "n00000007", "n00000500"]
    for w in subset:
        (tmp_path / w).mkdir()
        k = int(w[1:])
        Image.new("RGB", (4, 4), (round(255 * k / 999), 0, 0)).save(tmp_path / w / "a.png")
    files, labels, classes = scan_imagefolder(tmp_path)
    assert classes == list_wnids(tmp_path) == sorted(subset)
    idx = subset_indices(model_wnids, classes)
    assert idx.tolist() == [7, 500, 998]
    import numpy as np
    x = torch.stack([torch.from_numpy(np.asarray(Image.open(f), dtype=np.float32) / 255).permute(2, 0, 1)
                     for f in files])
    y = torch.tensor(labels)
    model = ColourToClass()
    assert subset_accuracy(model, [(x, y)], idx) == {"accuracy": 1.0, "n": 3}
    wrong = subset_indices(model_wnids, list(reversed(classes)))  # a wrong mapping must fail
    assert subset_accuracy(model, [(x, y)], wrong)["accuracy"] < 1.0


def test_subset_restriction_ignores_other_classes():
    logits = torch.tensor([[10.0, 1.0, 2.0, 0.0]])  # overall argmax 0 is outside the subset
    class Fixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.p = nn.Parameter(torch.zeros(1))
        def forward(self, x):
            return logits.expand(x.shape[0], -1)
    acc = subset_accuracy(Fixed(), [(torch.zeros(1, 1), torch.tensor([1]))], torch.tensor([1, 2]))
    assert acc["accuracy"] == 1.0  # among columns (1, 2) the argmax is column 2 -> subset label 1
    with pytest.raises(ValueError, match="subset_wnids"):
        subset_indices(["a", "b"], ["c"])


def test_ood_detection_known_values():
    perfect = ood_detection(torch.tensor([0.9, 0.8, 0.95]), torch.tensor([0.3, 0.2]))
    assert perfect["auroc"] == 1.0 and perfect["aupr"] == 1.0
    inverted = ood_detection(torch.tensor([0.1, 0.2]), torch.tensor([0.9, 0.8]))
    assert inverted["auroc"] == 0.0
    # one of two OOD ranked above one of two in-dist: AUROC = 3/4
    mixed = ood_detection(torch.tensor([0.9, 0.5]), torch.tensor([0.6, 0.1]))
    assert mixed["auroc"] == pytest.approx(0.75)


def test_max_softmax_shape_and_range():
    torch.manual_seed(0)
    model = nn.Linear(5, 7)
    s = max_softmax(model, [torch.randn(4, 5), (torch.randn(3, 5), torch.zeros(3))])
    assert s.shape == (7,) and (s >= 1 / 7).all() and (s <= 1).all()
