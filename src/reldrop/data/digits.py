"""scikit-learn's ``digits`` (1 797 real 8×8 handwritten digits, 10 classes): the zero-download default.

Split: deterministic stratified 80/20 (``sklearn.model_selection.train_test_split``, ``random_state``
= ``split_seed``, default 0) -> 1 437 train / 360 test. Pixels 0..16 are scaled to [0, 1] and
normalized with the train split's mean/std (one channel). Train-time augmentation: random shift
by up to ``shift`` pixels (zero padding + random crop, batched; no flip: a mirrored digit is another
symbol). The data ships inside scikit-learn, so ``root`` is ignored.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from .registry import DatasetInfo, register_dataset, reject_unknown_kwargs
from .tensor_dataset import TensorImageDataset, class_balanced_subset
from .transforms import BatchCompose, Normalize, RandomCropFlip

__all__ = ["load_digits_split", "build_digits"]


def load_digits_split(split: str, split_seed: int = 0, test_size: float = 0.2
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Float images ``(N, 1, 8, 8)`` in [0, 1] and labels ``(N,)`` of the stratified ``split``."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None]
    idx_train, idx_test = train_test_split(np.arange(len(x)), test_size=test_size, random_state=split_seed,
                                           stratify=d.target)
    idx = np.sort(idx_train if split == "train" else idx_test)
    return torch.from_numpy(x[idx]), torch.from_numpy(d.target[idx].astype(np.int64))


@register_dataset("digits")
def build_digits(root: Path, split: str, *, train_transform: bool, subset: int | None = None, seed: int = 0,
                 split_seed: int = 0, shift: int = 1, **unknown: Any) -> DatasetInfo:
    """The digits dataset as an in-memory :class:`TensorImageDataset` of ``(1, 8, 8)`` images."""
    reject_unknown_kwargs("digits", unknown, build_digits)
    x_train, _ = load_digits_split("train", split_seed)
    mean, std = (float(x_train.mean()),), (float(x_train.std()),)
    x, y = (x_train, _) if split == "train" else load_digits_split("test", split_seed)
    steps: list = [RandomCropFlip(pad=int(shift), flip=False)] if (train_transform and shift > 0) else []
    ds = TensorImageDataset(x, y, BatchCompose(steps + [Normalize(mean, std)]))
    if subset is not None and split == "train":
        ds = ds.subset(class_balanced_subset(y, int(subset), seed))
    return DatasetInfo(dataset=ds, num_classes=10, class_names=[str(i) for i in range(10)], modality="image",
                       input_shape=(1, 8, 8), mean=mean, std=std)
