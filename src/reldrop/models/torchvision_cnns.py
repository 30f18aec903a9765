"""torchvision CNNs without residual blocks of the ResNet kind: ``mobilenet_v2``, ``vgg11_bn``, ``vgg16_bn``.

Randomly initialized (``weights=None``); ``pretrained=True`` raises (reldrop never downloads
weights; finetune from a local file with :func:`reldrop.models.load_init`). ``kwargs`` go to the
torchvision constructor (e.g. ``width_mult`` and ``dropout`` for MobileNetV2, ``dropout`` for VGG).
``in_channels != 3`` rebuilds the first conv. Input ``(B, in_channels, H, W)`` → ``(B, num_classes)``;
MobileNetV2 downsamples 32×, VGG 32× followed by a 7×7 adaptive average pool (any H, W >= 32).
"""
from __future__ import annotations

from typing import Any, Callable

import torch.nn as nn
from torchvision import models as tvm

from .._checks import check_int
from .registry import register

__all__ = ["torchvision_cnn"]


def _replace_first_conv(model: nn.Module, in_channels: int) -> None:
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                new = nn.Conv2d(in_channels, child.out_channels, child.kernel_size,  # type: ignore[arg-type]
                                child.stride, child.padding,  # type: ignore[arg-type]
                                child.dilation, child.groups if child.groups == 1 else in_channels,  # type: ignore[arg-type]
                                bias=child.bias is not None)
                nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
                if new.bias is not None:
                    nn.init.zeros_(new.bias)
                setattr(parent, name, new)
                return


def torchvision_cnn(arch: str, *, num_classes: int = 1000, in_channels: int = 3, pretrained: bool = False,
                    **kwargs: Any) -> nn.Module:
    """``torchvision.models.<arch>(weights=None, num_classes=..., **kwargs)``."""
    check_int("num_classes", num_classes)
    check_int("in_channels", in_channels)
    if pretrained:
        raise ValueError(f"{arch}: pretrained=True is not available (reldrop never downloads weights); "
                         "build with pretrained=False and load a local checkpoint with reldrop.models.load_init")
    model = getattr(tvm, arch)(weights=None, num_classes=num_classes, **kwargs)
    if in_channels != 3:
        _replace_first_conv(model, in_channels)
    return model


def _builder(arch: str) -> Callable[..., nn.Module]:
    def builder(num_classes: int = 1000, in_channels: int = 3, pretrained: bool = False, **kwargs: Any) -> nn.Module:
        return torchvision_cnn(arch, num_classes=num_classes, in_channels=in_channels, pretrained=pretrained, **kwargs)

    builder.__doc__ = f"torchvision {arch}, random init (pretrained=True raises: no downloads)."
    return builder


for _arch in ("mobilenet_v2", "vgg11_bn", "vgg16_bn"):
    register(_arch)(_builder(_arch))
