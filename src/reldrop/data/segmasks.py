"""ImageNet-S-style segmentation masks as ground truth for Relevance Rank Accuracy.

ImageNet-S (Gao et al., 2022) stores each validation mask as an RGB PNG whose pixel value
``R + 256·G`` is the category id: 0 = background, 1..919 = the ImageNet-S categories (listed,
one wnid per line, in ``ImageNetS_categories_im919.txt``: id = line number, 1-based), 1000 =
"ignore". The RRA ground truth of an image is the set of pixels of *its own* class.

Layout read by :class:`ImageNetSegmentation`::

    <mask_root>/<wnid>/<name>.png     (the segmentation PNGs)
    <image_root>/<wnid>/<name>.JPEG   (the matching validation images; .jpg/.png also accepted)
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["read_segmentation_ids", "class_mask", "load_categories", "ImageNetSegmentation", "IGNORE_ID"]

IGNORE_ID = 1000
_IMAGE_EXT = (".JPEG", ".jpeg", ".jpg", ".JPG", ".png", ".PNG")


def read_segmentation_ids(path: str | os.PathLike[str]) -> torch.Tensor:
    """Category ids ``(H, W)`` long of an ImageNet-S PNG (``R + 256·G``)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.int64)
    except FileNotFoundError:
        raise FileNotFoundError(f"segmentation mask not found: {path}") from None
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as err:
        raise ValueError(f"corrupt, oversized or unreadable segmentation PNG: {path} ({err})") from err
    return torch.from_numpy(arr[..., 0] + 256 * arr[..., 1])


def class_mask(ids: torch.Tensor, class_id: int | None = None) -> torch.Tensor:
    """Bool mask ``(H, W)`` of the pixels of ``class_id``.

    ``class_id=None`` picks the most frequent foreground id (not 0, not 1000) - for masks whose
    category is not known from a categories file; an image with no foreground gives an empty mask.
    """
    if class_id is not None:
        return ids == int(class_id)
    fg = ids[(ids != 0) & (ids != IGNORE_ID)]
    if fg.numel() == 0:
        return torch.zeros_like(ids, dtype=torch.bool)
    return ids == int(torch.bincount(fg).argmax())


def load_categories(path: str | os.PathLike[str]) -> dict[str, int]:
    """``{wnid: category id}`` from an ImageNet-S categories file (one wnid per line, id = line, 1-based)."""
    lines = [ln.strip() for ln in Path(path).read_text().splitlines() if ln.strip()]
    return {wnid.split()[0]: i + 1 for i, wnid in enumerate(lines)}


class ImageNetSegmentation(Dataset):
    """``(image, label, mask)`` triples for RRA on ImageNet-S-style data.

    Args:
        image_root: folder of ``<wnid>/<name>.JPEG`` images.
        mask_root: folder of ``<wnid>/<name>.png`` segmentation PNGs.
        class_wnids: the classifier's wnids in output order (for ImageNet-1k: the 1000 sorted
            wnids); ``label`` is the index of the image's wnid there. Default: sorted mask folders.
        categories: ``{wnid: id}`` (see :func:`load_categories`); default: the dominant foreground id.
        image_size: images are resized (shorter side ``image_size * 256/224``) and centre-cropped
            to ``image_size``; masks get the same geometry with nearest-neighbour resampling.
        mean, std: normalization of the returned image.

    Item: ``image`` ``(3, S, S)`` float normalized, ``label`` int, ``mask`` ``(S, S)`` bool.
    """

    def __init__(self, image_root: str | os.PathLike[str], mask_root: str | os.PathLike[str], *,
                 class_wnids: Sequence[str] | None = None, categories: dict[str, int] | None = None,
                 image_size: int = 224, mean: Sequence[float] = (0.485, 0.456, 0.406),
                 std: Sequence[float] = (0.229, 0.224, 0.225)) -> None:
        self.image_root, self.mask_root = Path(image_root), Path(mask_root)
        if not self.mask_root.is_dir():
            raise FileNotFoundError(f"mask folder not found: {self.mask_root} (expected <wnid>/<name>.png)")
        wnids = sorted(d.name for d in self.mask_root.iterdir() if d.is_dir())
        self.class_wnids = list(class_wnids) if class_wnids is not None else wnids
        index = {w: i for i, w in enumerate(self.class_wnids)}
        self.categories = categories
        self.samples: list[tuple[Path, Path, int, str]] = []
        for wnid in wnids:
            if wnid not in index:
                raise ValueError(f"mask folder {wnid!r} is not among class_wnids")
            for f in sorted((self.mask_root / wnid).glob("*.png")):
                img = next((self.image_root / wnid / (f.stem + e) for e in _IMAGE_EXT
                            if (self.image_root / wnid / (f.stem + e)).is_file()), None)
                if img is None:
                    raise FileNotFoundError(f"no image for mask {f} under {self.image_root / wnid}")
                self.samples.append((img, f, index[wnid], wnid))
        if not self.samples:
            raise FileNotFoundError(f"no segmentation PNGs found under {self.mask_root}/<wnid>/")
        self.image_size = int(image_size)
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.samples)

    def _geometry(self, t: torch.Tensor, nearest: bool) -> torch.Tensor:
        import torchvision.transforms.v2.functional as TF
        from torchvision.transforms import InterpolationMode

        mode = InterpolationMode.NEAREST if nearest else InterpolationMode.BILINEAR
        resize = round(self.image_size * 256 / 224)
        t = TF.resize(t, [resize], interpolation=mode, antialias=not nearest)
        return TF.center_crop(t, [self.image_size, self.image_size])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        from .imagefolder import load_image

        img_path, mask_path, label, wnid = self.samples[i]
        img = torch.from_numpy(np.asarray(load_image(img_path), dtype=np.uint8).copy()).permute(2, 0, 1)
        ids = read_segmentation_ids(mask_path)
        if tuple(ids.shape) != tuple(img.shape[1:]):
            raise ValueError(f"mask {mask_path} has size {tuple(ids.shape)}, image {img_path} {tuple(img.shape[1:])}")
        cid = None if self.categories is None else self.categories.get(wnid)
        if self.categories is not None and cid is None:
            raise ValueError(f"wnid {wnid!r} of {mask_path} is not in the categories file")
        mask = class_mask(ids, cid)
        x = self._geometry(img.float() / 255.0, nearest=False)
        m = self._geometry(mask[None].to(torch.uint8), nearest=True)[0].bool()
        return (x - self.mean) / self.std, label, m
