"""Tiny deterministic members of the modern-CNN families for exact LRP tests (float64 by default).

* ``tiny_effnet``: timm EfficientNet-Lite (``efficientnet_lite0`` with width 0.25, depth 0.5:
  Conv2dSame stem and stride-2 depthwise convs, BatchNormAct2d with ReLU6, a DepthwiseSeparableConv
  and InvertedResidual blocks, some with the residual add).
* ``tiny_mobilenet``: torchvision MobileNetV2 with width 0.25 (ReLU6, residual adds, functional pool).
* ``tiny_vgg``: torchvision ``VGG`` class with a small BN feature stack (max pools) and a small
  classifier in place of the 25088x4096 one (adaptive 7x7 average pool kept).

Every BatchNorm gets random running statistics and affine parameters (``randomize_bn``).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from helpers.resnet_zoo import randomize_bn
from reldrop.models import build

__all__ = ["tiny_effnet", "tiny_mobilenet", "tiny_vgg", "FAMILIES", "family_input"]


def tiny_effnet(seed: int = 0, dtype: torch.dtype = torch.float64, num_classes: int = 5) -> nn.Module:
    torch.manual_seed(seed)
    model = build("efficientnet_lite0", num_classes=num_classes, width_mult=0.25, depth_mult=0.5)
    return randomize_bn(model, seed).to(dtype).eval()


def tiny_mobilenet(seed: int = 0, dtype: torch.dtype = torch.float64, num_classes: int = 5) -> nn.Module:
    torch.manual_seed(seed)
    model = build("mobilenet_v2", num_classes=num_classes, width_mult=0.25)
    return randomize_bn(model, seed).to(dtype).eval()


def tiny_vgg(seed: int = 0, dtype: torch.dtype = torch.float64, num_classes: int = 5) -> nn.Module:
    from torchvision.models.vgg import VGG, make_layers

    torch.manual_seed(seed)
    with torch.device("meta"):  # torchvision's VGG always builds a 25088x4096 classifier first
        model = VGG(make_layers([4, "M", 8, 8, "M", 8, "M"], batch_norm=True), num_classes=num_classes,
                    init_weights=False)
    model.classifier = nn.Sequential(nn.Linear(8 * 7 * 7, 16), nn.ReLU(True), nn.Dropout(),
                                     nn.Linear(16, 16), nn.ReLU(True), nn.Dropout(), nn.Linear(16, num_classes))
    model = model.to_empty(device="cpu")
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.reset_parameters()
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()
                m.reset_parameters()
    return randomize_bn(model, seed).to(dtype).eval()


#: name -> (builder, input side)
FAMILIES = {"effnet": (tiny_effnet, 16), "mobilenet": (tiny_mobilenet, 32), "vgg": (tiny_vgg, 16)}


def family_input(name: str, batch: int = 3, seed: int = 3, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    side = FAMILIES[name][1]
    return torch.randn(batch, 3, side, side, generator=torch.Generator().manual_seed(seed), dtype=dtype)
