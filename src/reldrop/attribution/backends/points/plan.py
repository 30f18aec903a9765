"""The structure of a point model the fast point backend reproduces: reldrop's PointNet++
(``layout="rows"``, SSG/MSG) and PointNet, read from the exact classes and stock modules of
:mod:`reldrop.models` (anything else raises :class:`Unsupported`, and ``auto`` uses zennit)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch.nn as nn

from ...rules import Unsupported

__all__ = ["Dense", "Branch", "SetAbs", "TNetPlan", "parse_point_model"]


@dataclass
class Dense:
    """One ``Linear`` (+ its BatchNorm) (+ ReLU) of a shared MLP or head."""

    linear: nn.Linear
    bn: nn.Module | None
    relu: bool


@dataclass
class Branch:
    """One shared MLP of a set abstraction (MSG: one per radius) and its grouping."""

    layers: list[Dense]
    radius: float | None
    nsample: int | None
    xyz_first: bool  # grouped channels [xyz - centre, features] (SSG) or [features, xyz - centre] (MSG)


@dataclass
class SetAbs:
    npoint: int | None  # None: group_all
    branches: list[Branch]
    msg: bool


def _exact(module: Any, cls: type) -> bool:
    return type(module) is cls and "forward" not in vars(module)


def _bn_ok(bn: nn.Module) -> bool:
    return (isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm2d)) and "forward" not in vars(bn)
            and bn.running_mean is not None and bn.running_var is not None)


def _parse_seq(seq: Any, allow_dropout: bool = False) -> list[Dense]:
    """``[Linear, BN, ReLU?, Dropout*] * n`` → layers; raises :class:`Unsupported` otherwise."""
    if not _exact(seq, nn.Sequential):
        raise Unsupported(f"expected an nn.Sequential MLP, got {type(seq).__name__}")
    mods = list(seq)
    out: list[Dense] = []
    i = 0
    while i < len(mods):
        lin = mods[i]
        if not _exact(lin, nn.Linear):
            raise Unsupported(f"expected nn.Linear in the MLP, got {type(lin).__name__} "
                              "(the fast point backend handles layout='rows' only)")
        if i + 1 >= len(mods) or not _bn_ok(mods[i + 1]):
            raise Unsupported("every Linear of the MLP must be followed by a BatchNorm with running stats")
        bn = mods[i + 1]
        i += 2
        relu = i < len(mods) and _exact(mods[i], nn.ReLU)
        i += int(relu)
        while allow_dropout and i < len(mods) and _exact(mods[i], nn.Dropout):
            i += 1  # eval mode: identity
        out.append(Dense(lin, bn, relu))
    if not out:
        raise Unsupported("empty MLP")
    if not all(layer.relu for layer in out[:-1]):  # z⁺ below assumes ReLU outputs (>= 0) inside the MLP
        raise Unsupported("every Linear but the last must be followed by a ReLU")
    return out


def _needs_relu(layers: list[Dense], what: str) -> list[Dense]:
    if not layers[-1].relu:
        raise Unsupported(f"{what} must end with a ReLU")
    return layers


def _parse_pointnet2(model: Any) -> tuple[list[SetAbs], list[Dense], nn.Linear]:
    from ....models import pointnet2 as pn2

    if getattr(model, "layout", None) != "rows":
        raise Unsupported("layout='conv2d' PointNet++ is handled by the zennit backend")
    levels: list[SetAbs] = []
    for name in ("sa1", "sa2", "sa3"):
        sa = getattr(model, name)
        if _exact(sa, pn2.SetAbstraction):
            if sa.layout != "rows":
                raise Unsupported("layout='conv2d' set abstraction")
            branch = Branch(_needs_relu(_parse_seq(sa.mlp), name), sa.radius, sa.nsample, True)
            levels.append(SetAbs(None if sa.group_all else sa.npoint, [branch], False))
        elif _exact(sa, pn2.SetAbstractionMsg):
            if sa.layout != "rows":
                raise Unsupported("layout='conv2d' set abstraction")
            branches = [Branch(_needs_relu(_parse_seq(m), name), r, k, False)
                        for r, k, m in zip(sa.radii, sa.nsamples, sa.mlps)]
            levels.append(SetAbs(sa.npoint, branches, True))
        else:
            raise Unsupported(f"{name} is a {type(sa).__name__}, not a stock set abstraction")
    if levels[0].npoint is None or levels[1].npoint is None or levels[2].npoint is not None:
        raise Unsupported("expected two sampling levels and a group-all level")
    head = _needs_relu(_parse_seq(model.head, allow_dropout=True), "head")
    if not _exact(model.fc, nn.Linear):
        raise Unsupported("fc must be an nn.Linear")
    return levels, head, model.fc


@dataclass
class TNetPlan:
    mlp: list[Dense]
    head: list[Dense]
    fc: nn.Linear
    k: int


def _parse_tnet(tnet: Any) -> TNetPlan | None:
    from ....models.pointnet import TNet as ModelTNet

    if tnet is None:
        return None
    if not _exact(tnet, ModelTNet) or not _exact(tnet.fc, nn.Linear):
        raise Unsupported("T-Net is not the stock reldrop.models.pointnet.TNet")
    return TNetPlan(_parse_seq(tnet.mlp), _parse_seq(tnet.head), tnet.fc, tnet.k)


def parse_point_model(model: Any) -> tuple[str, Any]:
    from ....models.pointnet import PointNetClassifier
    from ....models.pointnet2 import PointNet2Classifier

    if _exact(model, PointNet2Classifier):
        return "pointnet2", _parse_pointnet2(model)
    if _exact(model, PointNetClassifier):
        mlp1, mlp2 = _parse_seq(model.mlp1), _parse_seq(model.mlp2)
        if len(mlp1) != 1:
            raise Unsupported("PointNet mlp1 must be one layer (the input layer)")
        head = _needs_relu(_parse_seq(model.head, allow_dropout=True), "head")
        if not _exact(model.fc, nn.Linear):
            raise Unsupported("fc must be an nn.Linear")
        return "pointnet", (_parse_tnet(model.stn), mlp1[0], _parse_tnet(model.fstn), mlp2, head, model.fc)
    raise Unsupported(f"{type(model).__name__} is not a PointNet++/PointNet classifier of reldrop.models")
