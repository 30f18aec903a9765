"""Decoy (shortcut) benchmarks: Decoy-MNIST-style class-coded patches on digits and CIFAR-10.

A *decoy* is a small square patch (``patch_size`` × ``patch_size``; 2×2 on 8×8 digits, 4×4 on
32×32 CIFAR) in a corner of the image (``corner="random"``, the default: one of the four, uniformly
at random per image; or one fixed corner for every image, ``corner="top_left"`` / ``"top_right"`` /
``"bottom_left"`` / ``"bottom_right"``: a shortcut that is easier to use) whose
intensity encodes a class (Ross et al. 2017, Decoy-MNIST): grey value ``(255 − 25·k) / 255`` in
every channel for class k (``colour="gray"``, 10 classes) or the k-th colour of a fixed 10-colour
palette (``colour="palette"``).

* **train** split: each image gets the patch of its own class with probability ``rho`` (default 1:
  a perfect shortcut).
* **test** split, ``decoy_test``:
  ``"random"`` every image gets a patch of a random *other* class (uniform over the K − 1 wrong
  classes: the shortcut now always points to a wrong class); ``"none"`` clean images (identical to
  the plain dataset's test split); ``"same"`` every image gets the patch of its own class, as in
  training (how much the model leans on it shows as the gap to "random").

Corners, the ``rho`` coin and the random classes are drawn from a ``torch.Generator`` seeded with
``decoy_seed`` (train) and ``decoy_seed + 1`` (test), vectorized: the same arguments always give the
same images, independent of the training seed (so runs of different seeds see the same benchmark).

``DatasetInfo.extra`` carries ``decoy_mask`` ``(N, H, W)`` bool (True on the patch; all False
where an image has none), ``decoy_class`` ``(N,)`` long (class encoded by the patch, −1 for none),
``decoy_corner`` ``(N,)`` long (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right, −1 none),
``decoy_test``, ``patch_size`` and ``chance`` (patch area / image area), aligned with the
dataset's item order (after ``subset``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .registry import DatasetInfo, register_dataset, reject_unknown_kwargs
from .tensor_dataset import TensorImageDataset, class_balanced_subset
from .transforms import CIFAR10_MEAN, CIFAR10_STD, BatchCompose, Normalize, RandomCropFlip

__all__ = ["add_decoy", "decoy_colours", "DECOY_TEST_MODES", "CORNERS", "PALETTE"]

DECOY_TEST_MODES = ("random", "none", "same")
#: ``corner=`` names: "random" (uniform per image) or one fixed corner, in the order of ``decoy_corner``
CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")
#: colour="palette": matplotlib's tab10, RGB 0..255
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))


def decoy_colours(num_classes: int, channels: int, colour: str = "gray") -> torch.Tensor:
    """``(K, C)`` float in [0, 1]: the patch value of each class."""
    if num_classes > 10:
        raise ValueError(f"decoy colours are defined for at most 10 classes, got {num_classes}")
    k = torch.arange(num_classes, dtype=torch.float32)
    if colour == "gray":
        return ((255.0 - 25.0 * k) / 255.0).view(-1, 1).expand(num_classes, channels).clone()
    if colour == "palette":
        if channels != 3:
            raise ValueError(f"colour='palette' needs 3-channel images, got {channels} channel(s)")
        return torch.tensor(PALETTE[:num_classes], dtype=torch.float32) / 255.0
    raise ValueError(f"colour must be 'gray' or 'palette', got {colour!r}")


def add_decoy(images: torch.Tensor, labels: torch.Tensor, *, mode: str, patch_size: int, num_classes: int,
              rho: float = 1.0, seed: int = 0, colour: str = "gray", corner: str = "random"
              ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Images with decoy patches, and where they are.

    Args:
        images: ``(N, C, H, W)``, ``uint8`` (0..255) or float in [0, 1]; not modified.
        labels: ``(N,)`` long.
        mode: "train" (own class with probability ``rho``), or a test mode of :data:`DECOY_TEST_MODES`.
        patch_size: side of the square patch, ``1 <= patch_size <= min(H, W)``.
        corner: "random" (one of the four per image) or a name of :data:`CORNERS` (the same for all).

    Returns:
        ``(images, info)``: new images of the input dtype, and ``info`` with ``mask`` ``(N, H, W)``
        bool, ``cls`` ``(N,)`` long (−1: no patch) and ``corner`` ``(N,)`` long (−1: no patch).
    """
    if images.dim() != 4:
        raise ValueError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")
    n, c, h, w = images.shape
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
    if mode not in ("train",) + DECOY_TEST_MODES:
        raise ValueError(f"decoy_test must be one of {', '.join(DECOY_TEST_MODES)}, got {mode!r}")
    if isinstance(patch_size, bool) or not isinstance(patch_size, int) or not 1 <= patch_size <= min(h, w):
        raise ValueError(f"patch_size must be an int in [1, {min(h, w)}], got {patch_size!r}")
    if not 0.0 <= float(rho) <= 1.0:
        raise ValueError(f"rho must be in [0, 1], got {rho!r}")
    if corner != "random" and corner not in CORNERS:
        raise ValueError(f"corner must be 'random' or one of {', '.join(CORNERS)}, got {corner!r}")
    labels = labels.long()
    g = torch.Generator().manual_seed(int(seed))
    where = torch.randint(0, 4, (n,), generator=g)  # drawn in both cases: the other draws stay the same
    if corner != "random":
        where = torch.full_like(where, CORNERS.index(corner))
    coin = torch.rand((n,), generator=g)
    other = torch.randint(1, max(num_classes, 2), (n,), generator=g)
    if mode == "train":
        present, cls = coin < float(rho), labels
    elif mode == "same":
        present, cls = torch.ones(n, dtype=torch.bool), labels
    elif mode == "random":
        present, cls = torch.ones(n, dtype=torch.bool), (labels + other) % num_classes
    else:
        present, cls = torch.zeros(n, dtype=torch.bool), labels
    top = torch.where(where >= 2, h - patch_size, 0).view(n, 1, 1)
    left = torch.where(where % 2 == 1, w - patch_size, 0).view(n, 1, 1)
    yy = torch.arange(h).view(1, h, 1)
    xx = torch.arange(w).view(1, 1, w)
    mask = (yy >= top) & (yy < top + patch_size) & (xx >= left) & (xx < left + patch_size) & present.view(n, 1, 1)
    value = decoy_colours(num_classes, c, colour)[cls]  # (N, C) in [0, 1]
    if images.dtype == torch.uint8:
        value = (value * 255.0).round().to(torch.uint8)
    else:
        value = value.to(images.dtype)
    out = torch.where(mask.unsqueeze(1), value.view(n, c, 1, 1), images)
    cls = torch.where(present, cls, torch.full_like(cls, -1))
    where = torch.where(present, where, torch.full_like(where, -1))
    return out.contiguous(), {"mask": mask, "cls": cls, "corner": where}


def _check_mode(decoy_test: Any) -> str:
    if decoy_test not in DECOY_TEST_MODES:
        raise ValueError(f"decoy_test must be one of {', '.join(DECOY_TEST_MODES)}, got {decoy_test!r}")
    return str(decoy_test)


def _build(images: torch.Tensor, labels: torch.Tensor, split: str, *, transform: Any, num_classes: int,
           class_names: list[str], mean: tuple[float, ...], std: tuple[float, ...], patch_size: int, rho: float,
           decoy_test: str, decoy_seed: int, colour: str, subset: int | None, seed: int, corner: str = "random",
           extra: dict[str, Any] | None = None) -> DatasetInfo:
    mode = "train" if split == "train" else _check_mode(decoy_test)
    if isinstance(patch_size, bool) or not isinstance(patch_size, int):  # 2.5 would draw 2x2 and report 2.5^2
        raise ValueError(f"decoy patch_size must be an int (the patch side in pixels), got {patch_size!r}")
    x, d = add_decoy(images, labels, mode=mode, patch_size=patch_size, num_classes=num_classes, rho=rho,
                     seed=int(decoy_seed) + (0 if split == "train" else 1), colour=colour, corner=corner)
    ds = TensorImageDataset(x, labels, transform)
    if subset is not None and split == "train":
        index = class_balanced_subset(labels, int(subset), seed)
        ds = ds.subset(index)
        d = {k: v[index].clone() for k, v in d.items()}
    h, w = images.shape[-2:]
    info_extra = {"decoy_mask": d["mask"], "decoy_class": d["cls"], "decoy_corner": d["corner"],
                  "decoy_test": mode, "patch_size": int(patch_size), "rho": float(rho), "corner": corner,
                  "chance": patch_size * patch_size / float(h * w), **(extra or {})}
    return DatasetInfo(dataset=ds, num_classes=num_classes, class_names=class_names, modality="image",
                       input_shape=tuple(images.shape[1:]), mean=mean, std=std, extra=info_extra)


@register_dataset("decoy_digits")
def build_decoy_digits(root: Path, split: str, *, train_transform: bool, patch_size: int = 2, rho: float = 1.0,
                       decoy_test: str = "random", decoy_seed: int = 0, colour: str = "gray", corner: str = "random", shift: int = 0,
                       subset: int | None = None, seed: int = 0, split_seed: int = 0, **unknown: Any) -> DatasetInfo:
    """sklearn digits (8×8, 1 437 / 360) with 2×2 decoys; normalized with the clean train split's
    mean/std (so ``decoy_test="none"`` equals the plain ``digits`` test set). ``shift`` (default 0:
    the patch stays in its corner) is the random-shift augmentation of ``digits``."""
    reject_unknown_kwargs("decoy_digits", unknown, build_decoy_digits)
    from .digits import load_digits_split

    x_train, y_train = load_digits_split("train", split_seed)
    mean, std = (float(x_train.mean()),), (float(x_train.std()),)
    x, y = (x_train, y_train) if split == "train" else load_digits_split("test", split_seed)
    steps: list = [RandomCropFlip(pad=int(shift), flip=False)] if (train_transform and shift > 0) else []
    return _build(x, y, split, transform=BatchCompose(steps + [Normalize(mean, std)]), num_classes=10,
                  class_names=[str(i) for i in range(10)], mean=mean, std=std, patch_size=patch_size, rho=rho,
                  decoy_test=decoy_test, decoy_seed=decoy_seed, colour=colour, subset=subset, seed=seed,
                  corner=corner)


@register_dataset("decoy_cifar10")
def build_decoy_cifar10(root: Path, split: str, *, train_transform: bool, patch_size: int = 4, rho: float = 1.0,
                        decoy_test: str = "random", decoy_seed: int = 0, colour: str = "gray", corner: str = "random",
                        augment: bool = False, path: str | None = None, subset: int | None = None, seed: int = 0,
                        cache: bool = True, **unknown: Any) -> DatasetInfo:
    """CIFAR-10 from the data root with 4×4 decoys. ``augment`` (default False, so the patch is never
    cropped away) turns on the usual RandomCrop 32 pad 4 + HFlip."""
    reject_unknown_kwargs("decoy_cifar10", unknown, build_decoy_cifar10)
    from .cifar import load_cifar_split

    images, labels, names, layout, folder = load_cifar_split(root, split, 10, path, cache=cache)
    steps: list = [RandomCropFlip(pad=4, flip=True)] if (train_transform and augment) else []
    return _build(images, labels, split, transform=BatchCompose(steps + [Normalize(CIFAR10_MEAN, CIFAR10_STD)]),
                  num_classes=10, class_names=names, mean=CIFAR10_MEAN, std=CIFAR10_STD, patch_size=patch_size,
                  rho=rho, decoy_test=decoy_test, decoy_seed=decoy_seed, colour=colour, subset=subset, seed=seed,
                  corner=corner, extra={"layout": layout, "folder": str(folder)})
