"""ImageNet-S PNG loader on fixture files written here."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from reldrop.data.segmasks import (ImageNetSegmentation, class_mask, load_categories,
                                   read_segmentation_ids)


def _write_mask(path, ids):
    rgb = np.zeros((*ids.shape, 3), dtype=np.uint8)
    rgb[..., 0] = ids % 256
    rgb[..., 1] = ids // 256
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path)


def test_ids_decode_r_plus_256g(tmp_path):
    ids = np.array([[0, 1, 255], [256, 919, 1000]], dtype=np.int64)
    _write_mask(tmp_path / "m.png", ids)
    out = read_segmentation_ids(tmp_path / "m.png")
    assert out.tolist() == ids.tolist()
    assert class_mask(out, 919).tolist() == [[False] * 3, [False, True, False]]


def test_dominant_class_when_no_category():
    ids = torch.tensor([[0, 5, 5], [1000, 7, 1000]])
    assert class_mask(ids).tolist() == [[False, True, True], [False, False, False]]
    assert not class_mask(torch.tensor([[0, 1000]])).any()


def test_dataset_pairs_images_masks_and_labels(tmp_path):
    (tmp_path / "cats.txt").write_text("n02\nn01\n")
    cats = load_categories(tmp_path / "cats.txt")
    assert cats == {"n02": 1, "n01": 2}
    h, w = 40, 60
    ids = np.zeros((h, w), dtype=np.int64)
    ids[10:30, 20:50] = 2       # the image's own class (n01 -> id 2)
    ids[0:5, 0:5] = 1           # another category present in the image
    _write_mask(tmp_path / "masks" / "n01" / "a.png", ids)
    img = np.zeros((h, w, 3), dtype=np.uint8)
    img[10:30, 20:50] = 255
    (tmp_path / "images" / "n01").mkdir(parents=True)
    Image.fromarray(img).save(tmp_path / "images" / "n01" / "a.JPEG", quality=95)
    wnids = ["n00", "n01", "n02"]
    ds = ImageNetSegmentation(tmp_path / "images", tmp_path / "masks", class_wnids=wnids,
                              categories=cats, image_size=28, mean=(0, 0, 0), std=(1, 1, 1))
    assert len(ds) == 1
    x, label, m = ds[0]
    assert label == 1 and x.shape == (3, 28, 28) and m.shape == (28, 28) and m.dtype == torch.bool
    # the mask (own class only, id 1 excluded) lines up with the bright object after resize+crop
    assert m.any() and not m[:2, :2].any()
    assert float(x[0][m].mean()) > 0.9 and float(x[0][~m].mean()) < 0.2


def test_missing_image_is_an_error(tmp_path):
    _write_mask(tmp_path / "masks" / "n01" / "a.png", np.ones((4, 4), dtype=np.int64))
    (tmp_path / "images").mkdir()
    with pytest.raises(FileNotFoundError, match="no image"):
        ImageNetSegmentation(tmp_path / "images", tmp_path / "masks")
