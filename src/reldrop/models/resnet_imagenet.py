"""ImageNet-stem ResNets: torchvision (``resnet18`` … ``resnet101``) and timm (``timm_resnet18``,
``timm_resnet50``), always randomly initialized (no download; finetune with
:func:`reldrop.models.checkpoint.load_init`).

timm is optional: it is imported only when a ``timm_*`` model is built. Note that timm's
ResNets use timm's own block classes, so canonizers that match torchvision's blocks do not
apply to them as-is.

Input ``(B, in_channels, H, W)`` → logits ``(B, num_classes)``.
"""
from __future__ import annotations

from typing import Any, Callable

import torch.nn as nn
from torchvision.models import resnet as tv_resnet

from .._checks import check_int
from .registry import register

__all__ = ["torchvision_resnet", "timm_model"]


def torchvision_resnet(arch: str, *, num_classes: int = 1000, in_channels: int = 3, **kwargs: Any) -> nn.Module:
    """``torchvision.models.<arch>(weights=None)``; ``conv1`` rebuilt (7×7/2) when ``in_channels != 3``."""
    check_int("num_classes", num_classes)
    check_int("in_channels", in_channels)
    model = getattr(tv_resnet, arch)(weights=None, num_classes=num_classes, **kwargs)
    if in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    return model


def timm_model(arch: str, *, num_classes: int = 1000, in_channels: int = 3, **kwargs: Any) -> nn.Module:
    """``timm.create_model(arch, pretrained=False, ...)``; raises ImportError naming timm if missing."""
    check_int("num_classes", num_classes)
    check_int("in_channels", in_channels)
    try:
        import timm
    except ImportError as err:  # optional dependency
        raise ImportError(
            f"model 'timm_{arch}' needs the optional package timm: pip install timm"
        ) from err
    return timm.create_model(arch, pretrained=False, num_classes=num_classes, in_chans=in_channels, **kwargs)


def _tv(arch: str) -> Callable[..., nn.Module]:
    def builder(num_classes: int = 1000, in_channels: int = 3, **kwargs: Any) -> nn.Module:
        return torchvision_resnet(arch, num_classes=num_classes, in_channels=in_channels, **kwargs)

    builder.__doc__ = f"torchvision {arch} (ImageNet stem), random init."
    return builder


def _timm(arch: str) -> Callable[..., nn.Module]:
    def builder(num_classes: int = 1000, in_channels: int = 3, **kwargs: Any) -> nn.Module:
        return timm_model(arch, num_classes=num_classes, in_channels=in_channels, **kwargs)

    builder.__doc__ = f"timm {arch} (ImageNet stem), random init; needs timm."
    return builder


for _arch in ("resnet18", "resnet34", "resnet50", "resnet101"):
    register(_arch)(_tv(_arch))
for _arch in ("resnet18", "resnet50"):
    register(f"timm_{_arch}")(_timm(_arch))
