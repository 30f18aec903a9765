"""Canonizers for point-cloud models (PointNet++ SSG/MSG, PointNet) so that LRP relevance reaches every input point.

Two changes, both undone by ``remove()`` (zennit ``Canonizer`` protocol):

1. **BatchNorm merge** into the preceding Linear/Conv1d/Conv2d (every MLP layer of
   :mod:`reldrop.models.pointnet2` is ``Linear|Conv → BN → ReLU`` in one ``nn.Sequential``), with
   the corrected merge of :mod:`reldrop.attribution.canonize` (zennit 0.5.1 leaves the BN's eps).
2. **Centroids as constants in the local coordinates.** A set abstraction feeds its MLP the
   grouped coordinates *relative to the centroid*, ``xyz[j] - xyz[c]``. Left to the gradient, the
   relevance of that difference goes ``+R`` to the neighbour ``j`` and ``-R`` to the centroid ``c``:
   after a Flat first layer (all relevance of a group positive) each centroid collects minus the
   whole relevance of its ball, and the per-point relevance of the first level sums to ~0 instead
   of the model's output relevance. We treat the centroid in that subtraction as a fixed reference
   frame (``new_xyz.detach()``), the LRP view of a translation: the relevance of a grouped row is
   the relevance of the neighbour point it came from. Centroid coordinates are still relevant
   where they are *inputs* of a later level (``l1_xyz`` grouped by level 2, ``l2_xyz`` by the
   global level) and flow back to the input points chosen as centroids through the gather.

Per-point relevance = sum of a point's ``D`` input features. The gathers (``index_points``) route
relevance only to points that were grouped, so a point in no ball of any sampled centroid gets
exactly 0. Max pooling over a group is winner-take-all (the gradient of ``max``), as usual for LRP.

Entry points used by :func:`reldrop.attribution.canonize.canonizers_for`:
``canonizers_for(model) -> list | None`` (``None``: not a point model), and the classes
:class:`PointNet2Canonizer`, :class:`CentroidDetachCanonizer`.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
from zennit.canonizers import AttributeCanonizer, Canonizer, CompositeCanonizer

from .canonize import SequentialMergeBatchNorm

__all__ = ["PointNet2Canonizer", "CentroidDetachCanonizer", "PointNetCanonizer", "canonizers_for",
           "is_point_model", "input_layers", "POINT_MODEL_MODULES"]

POINT_MODEL_MODULES = ("reldrop.models.pointnet2", "reldrop.models.pointnet")


def _is_sa(module: nn.Module) -> bool:
    return type(module).__module__ == "reldrop.models.pointnet2" and type(module).__name__ in (
        "SetAbstraction", "SetAbstractionMsg")


def _sa_forward(self: nn.Module, xyz: torch.Tensor, features: torch.Tensor | None,
                start: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``SetAbstraction.forward`` with the centroid detached in ``xyz - centre`` (same values)."""
    from ..models import pointnet2 as pn2

    if self.group_all:  # no centring: the original forward is already what LRP needs
        return type(self).forward(self, xyz, features, start)
    fps_idx = pn2.farthest_point_sample(xyz, self.npoint, start)
    new_xyz = pn2.index_points(xyz, fps_idx)
    idx = pn2.ball_query(self.radius, self.nsample, xyz, new_xyz)
    grouped = pn2.index_points(xyz, idx) - new_xyz.detach().unsqueeze(2)
    if features is not None:
        grouped = torch.cat([grouped, pn2.index_points(features, idx)], -1)
    return new_xyz, pn2._mlp_max(self.mlp, grouped, self.layout)


def _sa_msg_forward(self: nn.Module, xyz: torch.Tensor, features: torch.Tensor | None,
                    start: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``SetAbstractionMsg.forward`` with the centroid detached in ``xyz - centre`` (same values)."""
    from ..models import pointnet2 as pn2

    fps_idx = pn2.farthest_point_sample(xyz, self.npoint, start)
    new_xyz = pn2.index_points(xyz, fps_idx)
    with torch.no_grad():
        sqdist = pn2.square_distance(new_xyz.detach(), xyz.detach())
    centre = new_xyz.detach().unsqueeze(2)
    outs = []
    for radius, nsample, mlp in zip(self.radii, self.nsamples, self.mlps):
        idx = pn2.ball_query(radius, nsample, xyz, new_xyz, sqdist)
        grouped = pn2.index_points(xyz, idx) - centre
        if features is not None:
            grouped = torch.cat([pn2.index_points(features, idx), grouped], -1)
        outs.append(pn2._mlp_max(mlp, grouped, self.layout))
    return new_xyz, torch.cat(outs, -1)


class CentroidDetachCanonizer(AttributeCanonizer):
    """Swap each PointNet++ set abstraction's ``forward`` for one that detaches the centroid in the
    local-coordinate subtraction (outputs bit-identical, only the backward differs). Undone on remove."""

    def __init__(self) -> None:
        super().__init__(self._attribute_map)

    @staticmethod
    def _attribute_map(name: str, module: nn.Module) -> dict | None:
        if not _is_sa(module):
            return None
        fn: Callable = _sa_msg_forward if type(module).__name__ == "SetAbstractionMsg" else _sa_forward
        return {"forward": fn.__get__(module)}

    def copy(self) -> "CentroidDetachCanonizer":
        return CentroidDetachCanonizer()


class PointNet2Canonizer(CompositeCanonizer):
    """Canonizer for :class:`reldrop.models.pointnet2.PointNet2Classifier` (SSG and MSG):
    corrected BN merge into every preceding Linear/Conv + centroid detach in the set abstractions."""

    def __init__(self) -> None:
        super().__init__((SequentialMergeBatchNorm(), CentroidDetachCanonizer()))


def _is_tnet_output_user(module: nn.Module) -> bool:
    return type(module).__module__ == "reldrop.models.pointnet" and hasattr(module, "lrp_detach_transform")


class _DetachTransformFlag(Canonizer):
    """Set ``lrp_detach_transform = True`` on PointNet modules that support it (restored on remove)."""

    def __init__(self) -> None:
        super().__init__()
        self.module: nn.Module | None = None
        self.old: bool | None = None

    def apply(self, root_module: nn.Module) -> list[Canonizer]:
        out = []
        for m in root_module.modules():
            if _is_tnet_output_user(m):
                inst = _DetachTransformFlag()
                inst.register(m)
                out.append(inst)
        return out

    def register(self, module: nn.Module) -> None:  # type: ignore[override]
        self.module, self.old = module, bool(module.lrp_detach_transform)
        module.lrp_detach_transform = True

    def remove(self) -> None:
        if self.module is not None and self.old is not None:
            self.module.lrp_detach_transform = self.old

    def copy(self) -> "_DetachTransformFlag":
        return _DetachTransformFlag()


class PointNetCanonizer(CompositeCanonizer):
    """Canonizer for plain PointNet: corrected BN merge; input/feature transforms (T-Nets) treated as
    constants in ``x @ T(x)`` when the model offers the ``lrp_detach_transform`` switch (relevance then
    flows through the transformed points, the LRP treatment of a multiplicative gate)."""

    def __init__(self) -> None:
        super().__init__((SequentialMergeBatchNorm(), _DetachTransformFlag()))


def is_point_model(model: nn.Module) -> bool:
    """True if ``model`` contains modules of :mod:`reldrop.models.pointnet2` / ``pointnet``."""
    return any(type(m).__module__ in POINT_MODEL_MODULES for m in model.modules())


def input_layers(model: nn.Module) -> list[nn.Module]:
    """The layers that read the input points directly: the first layer of every level-1 shared MLP.

    SSG has one (``sa1.mlp[0]``); MSG has one per radius (``sa1.mlps[i][0]``). All of them should
    get the first-layer rule (Flat): a composite that gives Flat only to the first one in module
    order applies z⁺ to the others, and z⁺ loses the relevance of each centroid's own grouped row
    (its local coordinates are exactly 0, so no positive contribution carries it). Empty list for
    a model without a PointNet++ level 1.
    """
    for m in model.modules():
        if _is_sa(m):
            mlps = [m.mlp] if hasattr(m, "mlp") else list(m.mlps)
            return [mlp[0] for mlp in mlps]
    return []


def canonizers_for(model: nn.Module) -> list[Canonizer] | None:
    """Fresh canonizers for a point model, ``None`` for any other model (the caller falls back)."""
    modules = list(model.modules())
    if any(_is_sa(m) for m in modules):
        return [PointNet2Canonizer()]
    if any(type(m).__module__ == "reldrop.models.pointnet" for m in modules):
        return [PointNetCanonizer()]
    return None
