"""Placed-tile localisation benchmark: RRA with known ground truth on real CIFAR-10 images.

Each sample is a ``canvas × canvas`` image (default 64×64) whose background is a grid of tiles
taken from images of *other* classes; one image (the "placed" tile, whose class is the label) is
pasted at a uniformly random position. The ground-truth mask is the placed tile's footprint, so
Relevance Rank Accuracy asks: does the model's relevance sit on the object it classifies?

Everything is drawn from a ``torch.Generator`` seeded with ``seed`` (defaults: 0 for the
"train" split, 1 for "test"), vectorized over the whole set: the same pool, size, canvas and
seed always give the same benchmark.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from .._checks import check_tensor

__all__ = ["PlacedTiles", "make_placed_tiles", "load_placed_tiles", "DEFAULT_SEEDS"]

DEFAULT_SEEDS = {"train": 0, "test": 1}


@dataclass
class PlacedTiles:
    """A placed-tile benchmark held in memory.

    Attributes:
        images: ``(M, 3, S, S)`` uint8 canvases.
        masks: ``(M, S, S)`` bool, True on the placed tile.
        labels: ``(M,)`` long, class of the placed tile.
        boxes: ``(M, 4)`` long ``(top, left, height, width)`` of the placed tile.
        source: ``(M,)`` long index of the placed image in the pool.
        class_names: names of the classes.
    """

    images: torch.Tensor
    masks: torch.Tensor
    labels: torch.Tensor
    boxes: torch.Tensor
    source: torch.Tensor
    class_names: list[str]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batches(self, batch_size: int, *, mean=None, std=None, device: torch.device | str = "cpu"
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Yield ``(x, y, mask)``: float images in [0, 1] (normalized with ``mean``/``std`` if given)."""
        for i in range(0, len(self), batch_size):
            x = self.images[i:i + batch_size].to(device).float().div_(255.0)
            if mean is not None and std is not None:
                m = torch.tensor(mean, device=x.device).view(1, -1, 1, 1)
                s = torch.tensor(std, device=x.device).view(1, -1, 1, 1)
                x = (x - m) / s
            yield x, self.labels[i:i + batch_size].to(device), self.masks[i:i + batch_size].to(device)


def make_placed_tiles(pool_images: torch.Tensor, pool_labels: torch.Tensor, *, size: int | None = None,
                      canvas: int = 64, seed: int = 0, class_names: list[str] | None = None) -> PlacedTiles:
    """Build ``size`` canvases (default: one per pool image, each pool image placed once).

    Args:
        pool_images: ``(N, C, h, w)`` images (uint8 or float) to draw tiles from.
        pool_labels: ``(N,)`` long labels; at least two classes must be present.
        size: number of canvases M (``<= N`` draws distinct placed images; ``> N`` repeats).
        canvas: side S of the square canvas, ``>= max(h, w)``; the background grid holds
            ``ceil(S/h) × ceil(S/w)`` tiles cropped to S×S.
        seed: seed of the generator that draws placed images, positions and backgrounds.
    """
    check_tensor("pool_images", pool_images, (4,), "(N, C, h, w)")
    check_tensor("pool_labels", pool_labels, (1,), "(N,) long")
    n, c, h, w = pool_images.shape
    if pool_labels.shape[0] != n:
        raise ValueError(f"pool_labels must have shape ({n},) to match pool_images, got {tuple(pool_labels.shape)}")
    if not isinstance(canvas, int) or canvas < max(h, w):
        raise ValueError(f"canvas must be an int >= the tile size {max(h, w)}, got {canvas!r}")
    labels = pool_labels.long()
    k = int(labels.max()) + 1
    counts = torch.bincount(labels, minlength=k)
    present = (counts > 0).nonzero().squeeze(1)
    if present.numel() < 2:
        raise ValueError("pool_labels must hold at least two classes (backgrounds come from other classes)")
    m = n if size is None else int(size)
    if m < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    g = torch.Generator().manual_seed(int(seed))
    if m <= n:
        placed = torch.randperm(n, generator=g)[:m]
    else:
        placed = torch.randint(0, n, (m,), generator=g)
    y = labels[placed]
    top = torch.randint(0, canvas - h + 1, (m,), generator=g)
    left = torch.randint(0, canvas - w + 1, (m,), generator=g)
    gh, gw = -(-canvas // h), -(-canvas // w)
    # background tiles: a class different from y (uniform over the other present classes), then
    # a uniform image of that class
    order = torch.argsort(labels, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    pos_of = torch.full((k,), -1, dtype=torch.long)
    pos_of[present] = torch.arange(present.numel())
    shift = torch.randint(1, present.numel(), (m, gh, gw), generator=g)
    bg_cls = present[(pos_of[y].view(m, 1, 1) + shift) % present.numel()]
    pick = (torch.rand((m, gh, gw), generator=g) * counts[bg_cls]).long().clamp_max(counts[bg_cls] - 1)
    bg_idx = order[starts[bg_cls] + pick]  # (m, gh, gw)
    tiles = pool_images[bg_idx.reshape(-1)].reshape(m, gh, gw, c, h, w)
    bg = tiles.permute(0, 3, 1, 4, 2, 5).reshape(m, c, gh * h, gw * w)[:, :, :canvas, :canvas]
    yy = torch.arange(canvas).view(1, canvas, 1)
    xx = torch.arange(canvas).view(1, 1, canvas)
    ty, tx = top.view(m, 1, 1), left.view(m, 1, 1)
    mask = (yy >= ty) & (yy < ty + h) & (xx >= tx) & (xx < tx + w)  # (m, S, S)
    rows = (yy - ty).clamp(0, h - 1).expand(m, canvas, canvas)
    cols = (xx - tx).clamp(0, w - 1).expand(m, canvas, canvas)
    src = pool_images[placed]  # (m, c, h, w)
    bidx = torch.arange(m).view(m, 1, 1).expand(m, canvas, canvas)
    fg = src[bidx, :, rows, cols].permute(0, 3, 1, 2)  # (m, c, S, S)
    images = torch.where(mask.unsqueeze(1), fg, bg).contiguous()
    boxes = torch.stack([top, left, torch.full_like(top, h), torch.full_like(top, w)], 1)
    names = class_names if class_names is not None else [str(i) for i in range(k)]
    return PlacedTiles(images, mask, y, boxes, placed, names)


def load_placed_tiles(root: str | Path | None = None, split: str = "test", *, size: int | None = 2000,
                      canvas: int = 64, seed: int | None = None, cache: bool = True,
                      path: str | None = None) -> PlacedTiles:
    """The benchmark on real CIFAR-10 (``<data root>/cifar10``, or ``path`` below the root as a run's
    ``data.kwargs.path``; pickle or ImageFolder layout).

    ``split`` "train" draws from the CIFAR-10 training images (seed 0), "test" from the test
    images (seed 1) unless ``seed`` is given.
    """
    from .cifar import find_cifar, load_cifar_pickle
    from .imagefolder import load_imagefolder_tensor
    from .root import data_root

    if split not in DEFAULT_SEEDS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    base = data_root(root)
    layout, folder = find_cifar(base, 10, path)
    if layout == "pickle":
        images, labels, names = load_cifar_pickle(folder, split, 10)
    else:
        images, labels, names = load_imagefolder_tensor(folder / split, cache=cache)
    return make_placed_tiles(images, labels, size=size, canvas=canvas,
                             seed=DEFAULT_SEEDS[split] if seed is None else seed, class_names=names)
