"""Small deterministic ResNets for the attribution tests (torchvision and timm blocks).

Builders return eval-ready models with non-trivial BN statistics (running mean/var, affine
weights), so BN canonization matters. ``resnet18_3x3`` is the project's CIFAR ResNet-18:
torchvision ResNet-18 with ``conv1 = Conv2d(3, 64, 3, 1, 1, bias=False)`` and ``maxpool = Identity``.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torchvision
from torchvision.models.resnet import BasicBlock

__all__ = ["TinyResNet", "tiny_resnet", "randomize_bn", "resnet18_3x3", "timm_resnet18_3x3", "tv_to_timm_state_dict"]


def randomize_bn(model: nn.Module, seed: int = 0, eps: float | None = None) -> nn.Module:
    """Give every BatchNorm random (deterministic) running stats and affine parameters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                m.running_mean.copy_(0.2 * torch.randn(c, generator=g))
                m.running_var.copy_(0.5 + torch.rand(c, generator=g))
                m.weight.copy_(0.5 + torch.rand(c, generator=g))
                m.bias.copy_(0.1 * torch.randn(c, generator=g))
                if eps is not None:
                    m.eps = eps
    return model


class TinyResNet(nn.Module):
    """torchvision-style ResNet (same attribute names) with few channels, for fast exact tests."""

    def __init__(self, block: type = BasicBlock, widths=(8, 16, 32), num_classes: int = 5,
                 maxpool: bool = False, in_ch: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1) if maxpool else nn.Identity()
        inplanes = widths[0]
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            layers = []
            for j in range(2):
                ds = None
                s = stride if j == 0 else 1
                if s != 1 or inplanes != w * block.expansion:
                    ds = nn.Sequential(nn.Conv2d(inplanes, w * block.expansion, 1, s, bias=False),
                                       nn.BatchNorm2d(w * block.expansion))
                layers.append(block(inplanes, w, s, ds))
                inplanes = w * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        i = 1
        while hasattr(self, f"layer{i}"):
            x = getattr(self, f"layer{i}")(x)
            i += 1
        return self.fc(torch.flatten(self.avgpool(x), 1))


def bias_free(model: nn.Module) -> nn.Module:
    """Zero every BN shift (running mean and bias) and every conv/linear bias, in place: with no
    bias anywhere, LRP conserves the target logit exactly (up to the ε absorption)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.zero_()
                m.bias.zero_()
            elif isinstance(m, (nn.Linear, nn.Conv2d)) and m.bias is not None:
                m.bias.zero_()
    return model


def tiny_resnet(block: type = BasicBlock, *, seed: int = 0, dtype=torch.float64, **kw) -> TinyResNet:
    torch.manual_seed(seed)
    return randomize_bn(TinyResNet(block, **kw), seed).to(dtype).eval()


def resnet18_3x3(num_classes: int = 10, *, seed: int = 0, dtype=torch.float32) -> nn.Module:
    torch.manual_seed(seed)
    m = torchvision.models.resnet18(num_classes=num_classes)
    m.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    m.maxpool = nn.Identity()
    return randomize_bn(m, seed).to(dtype).eval()


def timm_resnet18_3x3(num_classes: int = 10, *, dtype=torch.float32) -> nn.Module:
    import timm

    m = timm.create_model("resnet18", pretrained=False, num_classes=num_classes)
    m.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    m.maxpool = nn.Identity()
    return m.to(dtype).eval()


def tv_to_timm_state_dict(tv_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a torchvision ResNet state dict to timm's ResNet key names.

    timm keeps torchvision's names for every tensor of a ResNet: stem ``conv1``/``bn1``, blocks
    ``layer{i}.{j}.conv{k}``/``bn{k}``, shortcut ``layer{i}.{j}.downsample.{0,1}`` and head ``fc``;
    only non-tensor modules differ (``relu`` → ``act1``/``act2``, ``avgpool`` → ``global_pool``).
    So the mapping is the identity on keys, spelled out here and checked by the caller."""
    rename = {"avgpool.": "global_pool."}  # no tensors live there; kept for completeness
    out = {}
    for key, value in tv_state.items():
        for old, new in rename.items():
            if key.startswith(old):
                key = new + key[len(old):]
        out[key] = value
    return out
