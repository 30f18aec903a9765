"""ResNets for 32×32 inputs (CIFAR): a 3×3 stride-1 stem and no max-pool.

Two families, both built from torchvision's block classes
(:class:`torchvision.models.resnet.BasicBlock` / ``Bottleneck``) so that zennit's
``ResNetCanonizer`` (which matches those classes) applies unchanged:

* ``resnet18_cifar`` … ``resnet101_cifar``: torchvision's :class:`~torchvision.models.resnet.ResNet`
  (widths 64/128/256/512) with ``conv1 = Conv2d(in_channels, 64, 3, 1, 1, bias=False)`` and
  ``maxpool = nn.Identity()``.
* ``resnet8_cifar`` … ``resnet56_cifar``: the small CIFAR ResNets of He et al. (2016, Sec. 4.2):
  three stages of widths 16/32/64 (times ``width/16``), ``n`` BasicBlocks per stage (depth 6n+2),
  projection shortcuts (1×1 conv + BN, torchvision's "option B"). ``resnet20_cifar`` has ≈0.27 M
  parameters and trains usefully on two CPU cores.

Every builder takes ``num_classes`` and ``in_channels`` (default 3); input ``(B, C, H, W)``,
output logits ``(B, num_classes)``.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from .._checks import check_int
from .registry import register

__all__ = ["cifar_resnet", "SmallResNet"]


def cifar_resnet(
    block: type[BasicBlock] | type[Bottleneck],
    layers: list[int],
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    **kwargs: object,
) -> ResNet:
    """torchvision ResNet with the CIFAR stem: 3×3 stride-1 ``conv1`` and ``maxpool = Identity``.

    ``kwargs`` go to :class:`torchvision.models.resnet.ResNet` (e.g. ``zero_init_residual``).
    """
    check_int("num_classes", num_classes)
    check_int("in_channels", in_channels)
    model = ResNet(block, layers, num_classes=num_classes, **kwargs)
    model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    return model


def _make(block: type[BasicBlock] | type[Bottleneck], layers: list[int]) -> Callable[..., ResNet]:
    def builder(num_classes: int = 10, in_channels: int = 3, **kwargs: object) -> ResNet:
        return cifar_resnet(block, layers, num_classes=num_classes, in_channels=in_channels, **kwargs)

    return builder


resnet18_cifar = register("resnet18_cifar")(_make(BasicBlock, [2, 2, 2, 2]))
resnet34_cifar = register("resnet34_cifar")(_make(BasicBlock, [3, 4, 6, 3]))
resnet50_cifar = register("resnet50_cifar")(_make(Bottleneck, [3, 4, 6, 3]))
resnet101_cifar = register("resnet101_cifar")(_make(Bottleneck, [3, 4, 23, 3]))


class SmallResNet(nn.Module):
    """He et al.'s CIFAR ResNet (depth 6n+2) made of torchvision ``BasicBlock`` modules.

    Attribute names follow torchvision (``conv1, bn1, relu, layer1..3, avgpool, fc``) and
    modules are registered in forward order, so zennit's ``ResNetCanonizer`` and a generic
    sequential BN-merge both apply.

    Args:
        blocks_per_stage: ``n``, BasicBlocks per stage (3 → ResNet-20).
        num_classes: output logits.
        in_channels: input channels.
        width: channels of the first stage (16 in the paper); stages use width, 2·width, 4·width.
    Shapes: input ``(B, in_channels, H, W)`` → logits ``(B, num_classes)``.
    """

    def __init__(self, blocks_per_stage: int, num_classes: int = 10, in_channels: int = 3, width: int = 16) -> None:
        super().__init__()
        check_int("blocks_per_stage", blocks_per_stage)
        check_int("num_classes", num_classes)
        check_int("in_channels", in_channels)
        check_int("width", width)
        self.inplanes = width
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(width, blocks_per_stage, stride=1)
        self.layer2 = self._make_layer(2 * width, blocks_per_stage, stride=2)
        self.layer3 = self._make_layer(4 * width, blocks_per_stage, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(4 * width, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (B, C, H, W)`` → logits ``(B, num_classes)``."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def _make_small(n: int) -> Callable[..., SmallResNet]:
    def builder(num_classes: int = 10, in_channels: int = 3, width: int = 16) -> SmallResNet:
        return SmallResNet(n, num_classes=num_classes, in_channels=in_channels, width=width)

    builder.__doc__ = f"ResNet-{6 * n + 2} for CIFAR (widths width/2·width/4·width, {n} blocks per stage)."
    return builder


resnet8_cifar = register("resnet8_cifar")(_make_small(1))
resnet14_cifar = register("resnet14_cifar")(_make_small(2))
resnet20_cifar = register("resnet20_cifar")(_make_small(3))
resnet32_cifar = register("resnet32_cifar")(_make_small(5))
resnet44_cifar = register("resnet44_cifar")(_make_small(7))
resnet56_cifar = register("resnet56_cifar")(_make_small(9))

