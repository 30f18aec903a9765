"""Canonizers for point-cloud models (PointNet++ SSG/MSG, PointNet) so that LRP relevance reaches every input point.

Two changes, both undone by ``remove()`` (zennit ``Canonizer`` protocol):

1. **BatchNorm merge** into the preceding Linear/Conv1d/Conv2d (every MLP layer of
   :mod:`reldrop.models.pointnet2` is ``Linear|Conv → BN → ReLU`` in one ``nn.Sequential``), with
   the corrected merge of :mod:`reldrop.attribution.canonizers.batchnorm` (zennit 0.5.1 leaves the BN's eps).
2. **Centroids as constants in the local coordinates.** A set abstraction feeds its MLP the
   grouped coordinates *relative to the centroid*, ``xyz[j] - xyz[c]``. Left to the gradient, the
   relevance of that difference goes ``+R`` to the neighbour ``j`` and ``-R`` to the centroid ``c``:
   after a Flat first layer (all relevance of a group positive) each centroid collects minus the
   whole relevance of its ball, and the per-point relevance of the first level sums to ~0 instead
   of the model's output relevance. We treat the centroid in that subtraction as a fixed reference
   frame (``new_xyz.detach()``, via the set abstractions' ``detach_centre`` switch), the LRP view of a translation: the relevance of a grouped row is
   the relevance of the neighbour point it came from. Centroid coordinates are still relevant
   where they are *inputs* of a later level (``l1_xyz`` grouped by level 2, ``l2_xyz`` by the
   global level) and flow back to the input points chosen as centroids through the gather.

Per-point relevance = sum of a point's ``D`` input features. The gathers (``index_points``) route
relevance only to points that were grouped, so a point in no ball of any sampled centroid gets
exactly 0. Max pooling over a group is winner-take-all (the gradient of ``max``), as usual for LRP.

For plain PointNet (:mod:`reldrop.models.pointnet`) the BN merge applies as well, and its optional
T-Nets' transforms are held constant in ``x @ T(x)`` (:class:`TransformDetachCanonizer`).

Entry points: :func:`claims` / :func:`factory`, the provider :mod:`reldrop.attribution.canonizers`
registers; ``canonizers_for(model) -> list | None`` (``None``: not a point model); :func:`input_layers`
names the layers that should get the first-layer (Flat) rule.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from zennit.canonizers import AttributeCanonizer, Canonizer, CompositeCanonizer

from ...models import pointnet as _pointnet
from ...models import pointnet2 as _pointnet2
from .batchnorm import SequentialMergeBatchNorm, register_each

__all__ = ["PointNet2Canonizer", "CentroidDetachCanonizer", "PointNetCanonizer", "TransformDetachCanonizer",
           "canonizers_for", "claims", "factory", "input_layers"]


def _is_sa(module: nn.Module) -> bool:
    return isinstance(module, (_pointnet2.SetAbstraction, _pointnet2.SetAbstractionMsg))


class _SetAttribute(Canonizer):
    """Set ``module.<name> = value`` and put the old value back on :meth:`remove`."""

    def __init__(self, name: str = "", value: object = None) -> None:
        super().__init__()
        self.name, self.value = name, value
        self.module: nn.Module | None = None
        self.old: object = None

    def apply(self, root_module: nn.Module) -> list[Canonizer]:  # pragma: no cover - used via register
        return []

    def register(self, module: nn.Module) -> None:
        self.module, self.old = module, getattr(module, self.name)
        setattr(module, self.name, self.value)

    def remove(self) -> None:
        if self.module is not None:
            setattr(self.module, self.name, self.old)
            self.module = None

    def copy(self) -> "_SetAttribute":
        return _SetAttribute(self.name, self.value)


class CentroidDetachCanonizer(Canonizer):
    """Make every PointNet++ set abstraction detach the centroid in ``xyz - centre`` (outputs identical,
    only the backward differs): sets the model's ``detach_centre`` switch to True (restored on remove).
    Every set abstraction of :mod:`reldrop.models.pointnet2` has that switch."""

    def apply(self, root_module: nn.Module) -> list[Canonizer]:
        return register_each((_SetAttribute("detach_centre", True), (m,)) for m in root_module.modules()
                             if _is_sa(m) and hasattr(m, "detach_centre"))

    def register(self) -> None:
        """Nothing to do: the instances returned by :meth:`apply` hold the changes."""

    def remove(self) -> None:
        """Nothing to do: the instances returned by :meth:`apply` are removed individually."""

    def copy(self) -> "CentroidDetachCanonizer":
        return CentroidDetachCanonizer()


class PointNet2Canonizer(CompositeCanonizer):
    """Canonizer for :class:`reldrop.models.pointnet2.PointNet2Classifier` (SSG and MSG):
    corrected BN merge into every preceding Linear/Conv + centroid detach in the set abstractions."""

    def __init__(self) -> None:
        super().__init__((SequentialMergeBatchNorm(), CentroidDetachCanonizer()))


def _is_pointnet(module: nn.Module) -> bool:
    return isinstance(module, _pointnet.PointNetClassifier)


class _EpsilonBmm(torch.autograd.Function):
    """``x @ T`` (``x (B, N, k)``, ``T (B, k, k)`` constant) whose backward is the LRP-ε rule of that
    linear map: ``R_x[i] = x[i] * sum_j T[i, j] R[j] / (z[j] + eps*sign(z[j]))`` (conserves R per point)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, trans: torch.Tensor, eps: float) -> torch.Tensor:  # noqa: ANN001
        z = torch.bmm(x, trans)
        ctx.save_for_backward(x, trans, z)
        ctx.eps = eps
        return z

    @staticmethod
    def backward(ctx, rel: torch.Tensor):  # noqa: ANN001, ANN205
        x, trans, z = ctx.saved_tensors
        denom = z + ctx.eps * torch.where(z >= 0, torch.ones_like(z), -torch.ones_like(z))
        return x * torch.bmm(rel / denom, trans.transpose(1, 2)), None, None


def _pointnet_forward(self: Any, points: torch.Tensor) -> torch.Tensor:
    """``PointNetClassifier.forward`` with the T-Net transforms held constant in ``x @ T(x)`` (same values)."""
    b, n, d = points.shape
    x = points
    if self.stn is not None:
        trans = self.stn(points).detach()
        xyz = _EpsilonBmm.apply(points[..., :3], trans, 1e-6)
        x = torch.cat([xyz, points[..., 3:]], -1) if d > 3 else xyz
    h = self.mlp1(x.reshape(b * n, d))
    if self.fstn is not None:
        ftrans = self.fstn(h.view(b, n, -1)).detach()
        h = _EpsilonBmm.apply(h.view(b, n, -1), ftrans, 1e-6).reshape(b * n, -1)
    h = self.mlp2(h).view(b, n, -1).max(1)[0]
    return self.fc(self.head(h))


class TransformDetachCanonizer(AttributeCanonizer):
    """Swap a PointNet's ``forward`` for one that treats its T-Net transforms as constants in
    ``x @ T(x)`` (only when it has T-Nets; outputs identical): that product is then a per-cloud
    linear layer with weights ``T``, and relevance crosses it by the LRP-ε rule (ε = 1e-6), which
    keeps each point's relevance with that point. The T-Nets get no relevance (the usual LRP
    treatment of a multiplicative gate). A plain gradient through ``x @ T`` would not conserve it."""

    def __init__(self) -> None:
        super().__init__(self._attribute_map)

    @staticmethod
    def _attribute_map(name: str, module: nn.Module) -> dict | None:
        if _is_pointnet(module) and (module.stn is not None or module.fstn is not None):
            return {"forward": _pointnet_forward.__get__(module)}
        return None

    def copy(self) -> "TransformDetachCanonizer":
        return TransformDetachCanonizer()


class PointNetCanonizer(CompositeCanonizer):
    """Canonizer for :class:`reldrop.models.pointnet.PointNetClassifier`: corrected BN merge into every
    preceding Linear, T-Net transforms held constant (see :class:`TransformDetachCanonizer`)."""

    def __init__(self) -> None:
        super().__init__((SequentialMergeBatchNorm(), TransformDetachCanonizer()))


def input_layers(model: nn.Module) -> list[nn.Module]:
    """The layers that read the input points directly: the first layer of every level-1 shared MLP.

    SSG has one (``sa1.mlp[0]``); MSG has one per radius (``sa1.mlps[i][0]``); PointNet ``mlp1[0]``. All of them should
    get the first-layer rule (Flat): a composite that gives Flat only to the first one in module
    order applies z⁺ to the others, and z⁺ loses the relevance of each centroid's own grouped row
    (its local coordinates are exactly 0, so no positive contribution carries it). Empty list for
    a model without a PointNet++ level 1.
    """
    for module in model.modules():
        m: Any = module  # a set abstraction or a PointNet: their MLPs are nn.Sequential
        if _is_sa(m):
            mlps = [m.mlp] if hasattr(m, "mlp") else list(m.mlps)
            return [mlp[0] for mlp in mlps]
        if _is_pointnet(m):  # not the input T-Net's first layer: it gets no relevance
            return [m.mlp1[0]]
    return []


def canonizers_for(model: nn.Module) -> list[Canonizer] | None:
    """Fresh canonizers for a point model, ``None`` for any other model (the caller falls back)."""
    modules = list(model.modules())
    if any(_is_sa(m) for m in modules):
        return [PointNet2Canonizer()]
    if any(_is_pointnet(m) for m in modules):
        return [PointNetCanonizer()]
    return None


def claims(model: nn.Module) -> bool:
    """True for a model holding a PointNet++ set abstraction or a PointNet classifier."""
    return any(_is_sa(m) or _is_pointnet(m) for m in model.modules())


def factory(model: nn.Module) -> list[Canonizer]:
    """Fresh canonizers for a model :func:`claims` accepts."""
    return canonizers_for(model) or []
