"""``vit_tiny_cifar``: timm's ViT-Tiny (``vit_tiny_patch16_224``) sized for 32×32 images.

``timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=4, ...)``:
an 8×8 grid of 4×4 patches plus a class token (65 tokens), embedding 192, 12 blocks of 3 heads,
MLP 768, class-token head; 5.4 M parameters. Randomly initialized (nothing is downloaded).
Attributed with CP-LRP (:mod:`reldrop.attribution.backends.vit`, the default method for ViTs).

Input ``(B, in_channels, 32, 32)`` (``img_size`` changes it) → logits ``(B, num_classes)``.
"""
from __future__ import annotations

from typing import Any

import torch.nn as nn

from .._checks import check_int
from .registry import register

__all__ = ["vit_tiny_cifar"]


@register("vit_tiny_cifar")
def vit_tiny_cifar(num_classes: int = 10, *, in_channels: int = 3, img_size: int = 32, patch_size: int = 4,
                   global_pool: str = "token", **kwargs: Any) -> nn.Module:
    """timm ViT-Tiny for small images: ``img_size`` 32, ``patch_size`` 4, ``global_pool`` ``"token"``
    (or ``"avg"``); other keyword arguments go to ``timm.create_model`` (e.g. ``drop_path_rate``)."""
    check_int("num_classes", num_classes)
    check_int("in_channels", in_channels)
    check_int("img_size", img_size)
    check_int("patch_size", patch_size)
    if img_size % patch_size:
        raise ValueError(f"img_size ({img_size}) must be a multiple of patch_size ({patch_size})")
    try:
        import timm
    except ImportError as err:  # pragma: no cover - timm is a dependency
        raise ImportError("vit_tiny_cifar needs timm: pip install timm") from err
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=num_classes,
                             in_chans=in_channels, img_size=img_size, patch_size=patch_size,
                             global_pool=global_pool, **kwargs)
