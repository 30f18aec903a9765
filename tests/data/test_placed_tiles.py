"""Placed-tile benchmark: placed tile and mask agree, backgrounds from other classes, determinism."""
from __future__ import annotations

import pytest
import torch

from reldrop.data.placed_tiles import load_placed_tiles, make_placed_tiles


def _pool(n=40, k=4, size=8, seed=0):
    labels = torch.arange(n) % k
    # every pool image is a constant colour that encodes its index -> tiles are identifiable
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, size, size).clone()
    images[:, 1] = (labels * 10).to(torch.uint8).view(n, 1, 1)  # channel 1 encodes the class
    return images, labels


def test_mask_is_exactly_the_placed_tile():
    images, labels = _pool()
    b = make_placed_tiles(images, labels, size=25, canvas=20, seed=3)
    assert b.images.shape == (25, 3, 20, 20) and b.masks.shape == (25, 20, 20)
    assert (b.masks.flatten(1).sum(1) == 64).all()
    for i in range(25):
        top, left, h, w = b.boxes[i].tolist()
        assert 0 <= top <= 12 and 0 <= left <= 12
        inside = b.images[i, :, top:top + h, left:left + w]
        assert torch.equal(inside, images[b.source[i]])
        assert b.masks[i, top:top + h, left:left + w].all()
        assert b.labels[i] == labels[b.source[i]]


def test_background_comes_from_other_classes():
    images, labels = _pool()
    b = make_placed_tiles(images, labels, size=30, canvas=24, seed=0)
    bg_class = b.images[:, 1][~b.masks].view(30, -1) // 10  # channel 1 = 10 * class
    assert (bg_class != b.labels.view(30, 1)).all()
    assert len(bg_class.unique()) > 1


def test_deterministic_and_seed_dependent():
    images, labels = _pool()
    a = make_placed_tiles(images, labels, size=10, canvas=16, seed=5)
    b = make_placed_tiles(images, labels, size=10, canvas=16, seed=5)
    c = make_placed_tiles(images, labels, size=10, canvas=16, seed=6)
    assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks)
    assert not torch.equal(a.images, c.images)
    assert len(set(a.source.tolist())) == 10  # size <= N: distinct placed images


def test_bad_arguments():
    images, labels = _pool()
    with pytest.raises(ValueError, match="canvas"):
        make_placed_tiles(images, labels, canvas=4)
    with pytest.raises(ValueError, match="two classes"):
        make_placed_tiles(images, torch.zeros(40, dtype=torch.long))
    with pytest.raises(ValueError, match="pool_labels"):
        make_placed_tiles(images, labels[:5])


def test_batches_normalize():
    images, labels = _pool()
    b = make_placed_tiles(images, labels, size=5, canvas=16)
    x, y, m = next(b.batches(4, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)))
    assert x.shape == (4, 3, 16, 16) and y.shape == (4,) and m.dtype == torch.bool
    assert torch.allclose(x, (b.images[:4].float() / 255 - 0.5) / 0.5)


@pytest.mark.data
def test_real_cifar10_test_benchmark(cifar10_root):
    b = load_placed_tiles(cifar10_root.parent, "test", size=50, canvas=64)
    assert b.images.shape == (50, 3, 64, 64) and b.images.dtype == torch.uint8
    assert b.class_names[0] == "airplane" and len(b.class_names) == 10
    assert (b.masks.flatten(1).sum(1) == 32 * 32).all()
    again = load_placed_tiles(cifar10_root.parent, "test", size=50, canvas=64)
    assert torch.equal(b.images, again.images)
