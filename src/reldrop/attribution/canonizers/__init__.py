"""Canonization for LRP, and the registry that picks the canonizers of a model.

Canonizers rewrite a model *temporarily* (zennit ``Canonizer`` protocol: ``apply(root)`` returns
instances, each undone by ``remove()``) so that every BN directly after a conv/linear is merged
into it and every residual ``a + b`` goes through a :class:`zennit.layer.Sum` module. One module per
model family:

* :mod:`.batchnorm` - the corrected BN merge (:class:`MergeBatchNorm`, :class:`SequentialMergeBatchNorm`);
* :mod:`.resnet` - torchvision and timm ResNets;
* :mod:`.mobile` - inverted-residual networks (timm EfficientNet/MobileNet, torchvision MobileNetV2);
* :mod:`.points` - reldrop's PointNet++ / PointNet (registered here as a provider).

:func:`canonizers_for` picks the canonizers for a model. All canonizers are created once (per
:class:`~reldrop.attribution.Attributor`); ``apply`` runs at each attribution call and every change
is undone afterwards.
"""
from __future__ import annotations

from typing import Callable

import torch.nn as nn
from zennit.canonizers import Canonizer
from zennit.torchvision import ResNetBasicBlockCanonizer, ResNetBottleneckCanonizer

from . import points as _points
from .batchnorm import MergeBatchNorm, SequentialMergeBatchNorm, merge_leaves
from .mobile import (
    TimmInvertedResidualCanonizer,
    TorchvisionMobileNetCanonizer,
    is_timm_inverted_residual,
    is_torchvision_inverted_residual,
    is_torchvision_mobilenet_v2,
)
from .resnet import (
    TimmBasicBlockCanonizer,
    TimmBottleneckCanonizer,
    TimmResNetCanonizer,
    TimmResNetMergeBatchNorm,
    TorchvisionResNetCanonizer,
    is_timm_resnet_block,
    is_torchvision_resnet_block,
)

__all__ = [
    "MergeBatchNorm",
    "SequentialMergeBatchNorm",
    "TorchvisionResNetCanonizer",
    "TimmResNetCanonizer",
    "TimmBasicBlockCanonizer",
    "TimmBottleneckCanonizer",
    "canonizers_for",
    "register_canonizer",
    "merge_leaves",
]

_PROVIDERS: list[tuple[Callable[[nn.Module], bool], Callable[[nn.Module], list[Canonizer]], str]] = []


def register_canonizer(
    predicate: Callable[[nn.Module], bool],
    factory: Callable[[nn.Module], list[Canonizer]],
    name: str = "",
) -> None:
    """Register a model-specific canonizer: if ``predicate(model)`` is true, :func:`canonizers_for`
    returns ``factory(model)`` (fresh canonizer instances). Later registrations win."""
    if not callable(predicate) or not callable(factory):
        raise TypeError("predicate and factory must be callables taking the model")
    _PROVIDERS.insert(0, (predicate, factory, name))


def canonizers_for(model: nn.Module) -> list[Canonizer]:
    """Fresh canonizer instances for ``model`` (create once per model, apply per call).

    Order: providers added with :func:`register_canonizer` (the latest first; the built-in one of
    :mod:`.points` claims reldrop's PointNet++/PointNet); :class:`TorchvisionResNetCanonizer` if the model
    holds torchvision ResNet blocks; :class:`TimmResNetCanonizer` if it holds timm ResNet blocks;
    otherwise the generic :class:`SequentialMergeBatchNorm` (a no-op for models without BN), plus
    the residual-``Sum`` canonizers of :mod:`.mobile` for timm EfficientNet/MobileNet
    blocks and torchvision MobileNetV2.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for predicate, factory, _name in _PROVIDERS:
        if predicate(model):
            return list(factory(model))
    modules = list(model.modules())
    has_tv = any(is_torchvision_resnet_block(m) for m in modules)
    has_timm = any(is_timm_resnet_block(m) for m in modules)
    if has_tv and has_timm:  # pragma: no cover - exotic mix
        return [TimmResNetMergeBatchNorm(), TimmBasicBlockCanonizer(), TimmBottleneckCanonizer(),
                ResNetBottleneckCanonizer(), ResNetBasicBlockCanonizer()]
    if has_tv:
        return [TorchvisionResNetCanonizer()]
    if has_timm:
        return [TimmResNetCanonizer()]
    extra: list[Canonizer] = []
    if any(is_timm_inverted_residual(m) for m in modules):
        extra.append(TimmInvertedResidualCanonizer())
    if any(is_torchvision_inverted_residual(m) or is_torchvision_mobilenet_v2(m) for m in modules):
        extra.append(TorchvisionMobileNetCanonizer())
    return [SequentialMergeBatchNorm(), *extra]


# the built-in provider: reldrop's PointNet++/PointNet (providers a user registers later still win)
register_canonizer(_points.claims, _points.factory, name="reldrop points")
