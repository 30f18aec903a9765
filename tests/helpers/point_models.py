"""Small PointNet++-style models built from the real set-abstraction modules (fast enough for CI).

A uniquely named module: ``from conftest import ...`` picked up whichever conftest.py was imported
first (tests/train/conftest.py when tests/train ran before the point tests)."""
from __future__ import annotations

import torch
import torch.nn as nn

from reldrop.models.pointnet2 import SetAbstraction, SetAbstractionMsg


class TinyPointNet2(nn.Module):
    """SA(32 centroids, r=0.3, 16 neighbours) [or MSG with r=0.2/0.4] → global SA → Linear-BN-ReLU-Linear."""

    def __init__(self, num_classes: int = 4, in_channels: int = 3, msg: bool = False, npoint: int = 32) -> None:
        super().__init__()
        extra = in_channels - 3
        self.in_channels = in_channels
        if msg:
            self.sa1: nn.Module = SetAbstractionMsg(npoint, [0.2, 0.4], [8, 16], extra, [[16, 16], [16, 32]])
            width = 48
        else:
            self.sa1 = SetAbstraction(npoint, 0.3, 16, 3 + extra, [16, 32])
            width = 32
        self.sa2 = SetAbstraction(None, None, None, width + 3, [32, 64], group_all=True)
        self.head = nn.Sequential(nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, num_classes))

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        xyz = points[..., :3]
        feats = points[..., 3:] if self.in_channels > 3 else None
        l1_xyz, l1 = self.sa1(xyz, feats)
        _, l2 = self.sa2(l1_xyz, l1)
        return self.head(l2.reshape(points.shape[0], -1))


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics/affine parameters so that a BN merge matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=g))
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.2 * torch.rand(n, generator=g) - 0.1)
    return model.eval()


def unit_clouds(b: int, n: int, d: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xyz = torch.randn(b, n, 3, generator=g)
    xyz = xyz / xyz.norm(dim=-1).amax(1).view(b, 1, 1)
    if d == 3:
        return xyz
    return torch.cat([xyz, torch.nn.functional.normalize(torch.randn(b, n, d - 3, generator=g), dim=-1)], -1)
