"""``pointnet``: the plain PointNet classifier (Qi et al., 2017a), the cheap point-cloud model.

Layout (widths and dropout as the widely used PyTorch PointNet, ``pointnet_cls``)::

    [input T-Net]  shared MLP D→64 (Linear-BN-ReLU)  [feature T-Net]  64→128 (Linear-BN-ReLU)
    128→1024 (Linear-BN, no ReLU, as in the reference)  max over points
    head: 1024→512 (Linear-BN-ReLU-Dropout 0.4)  512→256 (Linear-BN-ReLU-Dropout 0.4)  fc 256→classes

* The shared MLP is channels-last: points ``(B, N, C)`` are viewed as rows ``(B·N, C)`` and each
  layer is ``nn.Linear`` + ``nn.BatchNorm1d`` (= a 1×1 Conv1d + BN, fewer layout copies).
* The T-Nets are **off by default** (``tnet=False``, ``feature_tnet=False``): they cost ~2× the
  compute and parameters and matter little for classification accuracy. With ``tnet=True`` a
  3×3 transform is predicted from all D channels and applied to xyz (normals/extra features
  are passed through, as in the reference); ``feature_tnet=True`` adds a 64×64 feature transform,
  kept in ``model.feature_transform`` after each forward so a training loop can add
  :func:`transform_regularizer` (weight 0.001 in the reference).
* Dropout sits after the ReLU of the second head layer (the reference puts it between Linear
  and BN), so that every Linear is directly followed by its BatchNorm for BN-merge canonizers.
* Returns logits ``(B, num_classes)``.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .._checks import check_int, check_point_cloud
from .pointnet2 import narrow_input_linear
from .registry import register

__all__ = ["PointNetClassifier", "TNet", "transform_regularizer"]


def _rows_mlp(widths: list[int], last_relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = []
    for j in range(len(widths) - 1):
        layers += [narrow_input_linear(widths[j], widths[j + 1]), nn.BatchNorm1d(widths[j + 1])]
        if last_relu or j < len(widths) - 2:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class TNet(nn.Module):
    """Predicts a ``k×k`` transform from points ``(B, N, in_channels)`` → ``(B, k, k)`` (identity + Δ)."""

    def __init__(self, in_channels: int, k: int) -> None:
        super().__init__()
        self.k = k
        self.mlp = _rows_mlp([in_channels, 64, 128, 1024])
        self.head = _rows_mlp([1024, 512, 256])
        self.fc = nn.Linear(256, k * k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        f = self.mlp(x.reshape(B * N, C)).view(B, N, -1).max(1)[0]
        delta = self.fc(self.head(f)).view(B, self.k, self.k)
        return delta + torch.eye(self.k, dtype=x.dtype, device=x.device)


def transform_regularizer(trans: torch.Tensor) -> torch.Tensor:
    """Orthogonality penalty ``mean_b ||T Tᵀ − I||_F`` for transforms ``(B, k, k)`` → scalar."""
    eye = torch.eye(trans.shape[-1], dtype=trans.dtype, device=trans.device)
    return torch.linalg.matrix_norm(trans @ trans.transpose(1, 2) - eye).mean()


class PointNetClassifier(nn.Module):
    """PointNet classifier; see the module docstring. ``points (B, N, D)`` → logits ``(B, num_classes)``.

    Attributes: ``stn`` (optional input T-Net), ``mlp1``, ``fstn`` (optional feature T-Net),
    ``mlp2``, ``head`` (Linear-BN-ReLU-Dropout ×2), ``fc`` (the classifier).
    """

    def __init__(
        self,
        num_classes: int = 40,
        in_channels: int = 3,
        *,
        tnet: bool = False,
        feature_tnet: bool = False,
        dropout: float = 0.4,
    ) -> None:
        super().__init__()
        check_int("num_classes", num_classes)
        check_int("in_channels", in_channels, minimum=3)
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.in_channels = in_channels
        self.stn = TNet(in_channels, 3) if tnet else None
        self.mlp1 = _rows_mlp([in_channels, 64])
        self.fstn = TNet(64, 64) if feature_tnet else None
        self.mlp2 = _rows_mlp([64, 128, 1024], last_relu=False)
        self.head = nn.Sequential(
            nn.Linear(1024, 512),
            nn.BatchNorm1d(512),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(512, 256),
            nn.BatchNorm1d(256),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )
        self.fc = nn.Linear(256, num_classes)
        self.feature_transform: torch.Tensor | None = None

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """``points (B, N, D)`` → logits ``(B, num_classes)``."""
        check_point_cloud("points", points, self.in_channels)
        B, N, D = points.shape
        x = points
        if self.stn is not None:
            trans = self.stn(points)
            xyz = torch.bmm(points[..., :3], trans)
            x = torch.cat([xyz, points[..., 3:]], -1) if D > 3 else xyz
        h = self.mlp1(x.reshape(B * N, D))
        if self.fstn is not None:
            ftrans = self.fstn(h.view(B, N, -1))
            self.feature_transform = ftrans
            h = torch.bmm(h.view(B, N, -1), ftrans).reshape(B * N, -1)
        h = self.mlp2(h).view(B, N, -1).max(1)[0]
        return self.fc(self.head(h))


@register("pointnet")
def pointnet(num_classes: int = 40, in_channels: int = 3, **kwargs: object) -> PointNetClassifier:
    """Plain PointNet classifier (no T-Nets by default; ``tnet=True`` / ``feature_tnet=True`` add them)."""
    return PointNetClassifier(num_classes, in_channels, **kwargs)  # type: ignore[arg-type]
