"""``small_cnn``: a tiny conv net for the 8×8 sklearn digits demo (works for any input ≥ 2×2).

Layout (modules registered in forward order so a sequential BN-merge canonizer pairs them)::

    conv3x3(in, w) - BN - ReLU - conv3x3(w, 2w) - BN - ReLU - maxpool 2 - adaptive avgpool 4×4
    - flatten - linear(2w·16, num_classes)

For 8×8 digits the adaptive pool is the identity (4×4 after the max-pool). ``width`` defaults
to 32 (≈ 0.04 M parameters for 10 classes). Input ``(B, in_channels, H, W)`` → logits
``(B, num_classes)``.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .._checks import check_int
from .registry import register

__all__ = ["SmallCNN"]


class SmallCNN(nn.Module):
    """conv-BN-ReLU ×2, pool, linear (see module docstring)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 32) -> None:
        super().__init__()
        check_int("num_classes", num_classes)
        check_int("in_channels", in_channels)
        check_int("width", width)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, 3, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d((4, 4)),
            nn.Flatten(1),
        )
        self.fc = nn.Linear(2 * width * 16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (B, C, H, W)`` → logits ``(B, num_classes)``."""
        return self.fc(self.features(x))


@register("small_cnn")
def small_cnn(num_classes: int = 10, in_channels: int = 3, width: int = 32) -> SmallCNN:
    """Tiny conv net for the digits demo; pass ``in_channels=1`` for digits."""
    return SmallCNN(num_classes=num_classes, in_channels=in_channels, width=width)
