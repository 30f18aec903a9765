"""The embedded generated-shapes dataset."""
from __future__ import annotations

import pytest
import torch

from reldrop.data import build_dataset
from reldrop.data.shapes import SHAPE_CLASSES, generate_shapes


def test_classes_determinism_and_geometry():
    assert len(SHAPE_CLASSES) >= 10
    p, y, names = generate_shapes(4, 256, seed=1)
    p2, y2, _ = generate_shapes(4, 256, seed=1)
    p3, _, _ = generate_shapes(4, 256, seed=2)
    assert torch.equal(p, p2) and torch.equal(y, y2) and not torch.allclose(p, p3)
    assert p.shape == (4 * len(names), 256, 6) and names == list(SHAPE_CLASSES)
    assert torch.bincount(y).tolist() == [4] * len(names)
    assert torch.allclose(p[..., :3].norm(dim=-1).amax(1), torch.ones(len(p)))
    assert torch.allclose(p[..., :3].mean(1), torch.zeros(len(p), 3), atol=1e-5)
    assert torch.allclose(p[..., 3:].norm(dim=-1), torch.ones(len(p), 256), atol=1e-4)


def test_sphere_normals_are_radial_and_disc_is_flat_without_augmentation():
    p, _, _ = generate_shapes(3, 2000, classes=["sphere", "disc"], rotate="none", aniso=(1.0, 1.0),
                              noise=(0.0, 0.0), occlusion=0.0)
    sphere, disc = p[:3], p[3:]
    # centring at the sample mean moves the centre slightly, so compare directions
    cos = torch.nn.functional.cosine_similarity(sphere[..., :3], sphere[..., 3:], dim=-1)
    assert cos.min() > 0.95 and cos.mean() > 0.999
    assert disc[..., 2].abs().max() < 1e-5 and torch.allclose(disc[..., 5].abs(), torch.ones(3, 2000))


def test_occlusion_removes_a_cap_and_refills_with_duplicates():
    full, _, _ = generate_shapes(8, 300, classes=["sphere"], noise=(0.0, 0.0), occlusion=0.0)
    occl, _, _ = generate_shapes(8, 300, classes=["sphere"], noise=(0.0, 0.0), occlusion=1.0)
    uniq_full = [len(torch.unique(c[:, :3], dim=0)) for c in full]
    uniq_occl = [len(torch.unique(c[:, :3], dim=0)) for c in occl]
    assert all(u == 300 for u in uniq_full)
    assert all(0.6 * 300 <= u <= 0.91 * 300 for u in uniq_occl)


def test_registered_dataset_splits_differ_and_normals_optional():
    tr = build_dataset("shapes", ".", "train", num_per_class=3, npoints=128)
    te = build_dataset("shapes", ".", "test", num_per_class=3, npoints=128, use_normals=True)
    assert tr.modality == "points" and tr.input_shape == (128, 3) and te.input_shape == (128, 6)
    assert tr.num_classes == len(SHAPE_CLASSES) and len(tr.dataset) == 3 * len(SHAPE_CLASSES)
    assert not torch.allclose(tr.dataset.points, te.dataset.points[..., :3])
    x, y = te.dataset[5]
    assert x.shape == (128, 6) and isinstance(y, int)
    with pytest.raises(ValueError, match="classes"):
        generate_shapes(2, 10, classes=["banana"])
