"""Image transforms: batched tensor augmentation for in-memory datasets and PIL pipelines for ImageNet.

Batched transforms work on a whole batch ``(B, C, H, W)`` at once, on the batch's device, drawing
their random parameters from an explicit ``torch.Generator`` (CPU), so training is reproducible
and resumable. Pixel values enter as floats in ``[0, 1]``; :class:`Normalize` maps them to
zero mean / unit std per channel, so the erasing fill value ``0`` equals the dataset mean.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

__all__ = [
    "CIFAR10_MEAN", "CIFAR10_STD", "CIFAR100_MEAN", "CIFAR100_STD", "IMAGENET_MEAN", "IMAGENET_STD",
    "Normalize", "RandomCropFlip", "Resize", "BatchCompose", "imagenet_train_transform", "imagenet_eval_transform",
]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

BatchTransform = Callable[[torch.Tensor, "torch.Generator | None"], torch.Tensor]


class Normalize:
    """``(x - mean) / std`` per channel for a batch ``(B, C, H, W)`` of floats in ``[0, 1]``."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ValueError(f"mean and std must have the same length and std > 0, got {mean!r}, {std!r}")
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if x.shape[1] != len(self.mean):
            raise ValueError(f"x must have {len(self.mean)} channels (B, C, H, W), got shape {tuple(x.shape)}")
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean}, std={self.std})"


class RandomCropFlip:
    """Batched ``RandomCrop(size, padding=pad)`` (zero padding, like torchvision) + horizontal flip.

    One gather for the whole batch ``(B, C, H, W)``; crop offsets and flips are drawn from
    ``generator`` on the CPU and moved to the batch's device. ``flip=False`` disables the flip
    (e.g. digits, where a mirrored 3 is not a 3).
    """

    def __init__(self, pad: int = 4, flip: bool = True) -> None:
        if not isinstance(pad, int) or pad < 0:
            raise ValueError(f"pad must be a non-negative int, got {pad!r}")
        self.pad = pad
        self.flip = bool(flip)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        b, _, h, w = x.shape
        if self.pad > 0:
            ox = torch.randint(0, 2 * self.pad + 1, (b,), generator=generator)
            oy = torch.randint(0, 2 * self.pad + 1, (b,), generator=generator)
        if self.flip:
            flips = torch.rand(b, generator=generator) < 0.5
        if self.pad > 0:
            xp = torch.nn.functional.pad(x, (self.pad,) * 4)
            dev = x.device
            rows = (oy.to(dev)[:, None] + torch.arange(h, device=dev)[None, :])  # (B, H)
            cols = (ox.to(dev)[:, None] + torch.arange(w, device=dev)[None, :])  # (B, W)
            bi = torch.arange(b, device=dev)[:, None, None]
            # advanced indexing -> (B, H, W, C)
            x = xp.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
        if self.flip:
            x = torch.where(flips.to(x.device).view(-1, 1, 1, 1), x.flip(-1), x)
        return x.contiguous()

    def __repr__(self) -> str:
        return f"RandomCropFlip(pad={self.pad}, flip={self.flip})"


class Resize:
    """Batched bilinear resize of ``(B, C, H, W)`` to ``(B, C, size, size)`` (deterministic).

    For upsampling small images to the resolution a pretrained network expects (CIFAR 32×32 →
    64×64 for EfficientNet-Lite0); ``align_corners=False``, antialiasing when shrinking.
    """

    def __init__(self, size: int) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive int, got {size!r}")
        self.size = size

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if x.shape[-2:] == (self.size, self.size):
            return x
        shrink = x.shape[-2] > self.size or x.shape[-1] > self.size
        return torch.nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear",
                                               align_corners=False, antialias=shrink)

    def __repr__(self) -> str:
        return f"Resize({self.size})"


class BatchCompose:
    """Apply batched transforms in order: ``x = t(x, generator)`` for each ``t``."""

    def __init__(self, transforms: Sequence[BatchTransform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        for t in self.transforms:
            x = t(x, generator)
        return x

    def __repr__(self) -> str:
        return "BatchCompose(" + ", ".join(repr(t) for t in self.transforms) + ")"


def imagenet_train_transform(size: int = 224, mean: Sequence[float] = IMAGENET_MEAN,
                             std: Sequence[float] = IMAGENET_STD) -> Callable:
    """PIL -> normalized tensor ``(3, size, size)``: RandomResizedCrop + HFlip (torchvision)."""
    from torchvision import transforms as T

    return T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ToTensor(),
                      T.Normalize(mean, std)])


def imagenet_eval_transform(size: int = 224, mean: Sequence[float] = IMAGENET_MEAN,
                            std: Sequence[float] = IMAGENET_STD) -> Callable:
    """PIL -> normalized tensor ``(3, size, size)``: Resize(size / 0.875) + CenterCrop(size)."""
    from torchvision import transforms as T

    return T.Compose([T.Resize(int(round(size / 0.875))), T.CenterCrop(size), T.ToTensor(),
                      T.Normalize(mean, std)])
