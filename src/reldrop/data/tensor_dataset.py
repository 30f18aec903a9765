"""An in-memory image dataset whose batches are built and augmented as whole tensors.

Small-image datasets (digits, CIFAR) fit in memory as a ``uint8`` (or float) tensor. Decoding
or transforming them one PIL image at a time in a DataLoader is the slowest part of a CPU
epoch, so the training engine asks them for whole batches via :meth:`get_batch`, which indexes
the stored tensor, moves it to the device and applies a batched transform there.
``dataset[i]`` still works (the ``DatasetInfo`` contract) by calling the same code on one item.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch.utils.data import Dataset

__all__ = ["TensorImageDataset", "class_balanced_subset"]


class TensorImageDataset(Dataset):
    """Images ``(N, C, H, W)`` (``uint8`` in [0, 255] or float in [0, 1]) and labels ``(N,)``.

    ``transform(x, generator) -> x`` is a batched transform on floats in [0, 1] that returns
    normalized images (see :mod:`reldrop.data.transforms`).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor,
                 transform: Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]) -> None:
        if images.dim() != 4:
            raise ValueError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must have shape (N,) = ({images.shape[0]},), got {tuple(labels.shape)}")
        self.images = images
        self.labels = labels.long()
        self.transform = transform

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def get_batch(self, index: torch.Tensor, *, generator: torch.Generator | None = None,
                  device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``(B, C, H, W)`` float32 normalized and labels ``(B,)`` for ``index`` ``(B,)``, on ``device``."""
        x = self.images[index].to(device, non_blocking=True)
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
        y = self.labels[index].to(device, non_blocking=True)
        return self.transform(x, generator), y

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x, y = self.get_batch(torch.tensor([int(i)]))
        return x[0], int(y[0])

    def subset(self, index: torch.Tensor) -> "TensorImageDataset":
        """A new dataset holding only ``index`` (shares nothing mutable with this one)."""
        return TensorImageDataset(self.images[index].clone(), self.labels[index].clone(), self.transform)


def class_balanced_subset(labels: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """Indices of ``n`` samples, as equal per class as the class sizes allow, drawn with ``seed``.

    Classes get ``n // K`` each (the remainder goes to the first classes); a class with fewer
    samples gives all it has and the rest is spread over the others. Returned sorted.
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"data.subset must be a positive int, got {n!r}")
    labels = labels.long()
    if n >= labels.numel():
        return torch.arange(labels.numel())
    g = torch.Generator().manual_seed(int(seed))
    classes = torch.unique(labels)
    pools = [torch.nonzero(labels == c).flatten() for c in classes]
    pools = [p[torch.randperm(p.numel(), generator=g)] for p in pools]
    take = [0] * len(pools)
    remaining = n
    while remaining > 0:
        open_ = [i for i, p in enumerate(pools) if take[i] < p.numel()]
        share, extra = divmod(remaining, len(open_))
        for j, i in enumerate(open_):
            add = min(share + (1 if j < extra else 0), pools[i].numel() - take[i])
            take[i] += add
            remaining -= add
    chosen = torch.cat([p[:t] for p, t in zip(pools, take)])
    return chosen.sort().values
