"""Canonizers for inverted-residual CNNs: timm EfficientNet/MobileNet blocks and torchvision MobileNetV2.

What LRP needs from these networks besides the BN merge (done by
:class:`~reldrop.attribution.canonizers.batchnorm.SequentialMergeBatchNorm`, which treats every BatchNorm,
including timm's ``BatchNormAct2d`` whose activation is a child module, as one leaf; the merged
``BatchNormAct2d`` still applies its activation):

* every residual add becomes a zennit ``Sum`` module, so the composite gives it the Norm rule:
  timm ``InvertedResidual`` / ``DepthwiseSeparableConv`` (``drop_path(x) + shortcut`` when
  ``has_skip``) and torchvision ``InvertedResidual`` (``x + conv(x)`` when ``use_res_connect``);
* torchvision ``MobileNetV2`` pools with ``nn.functional.adaptive_avg_pool2d``, which no rule can
  see (its gradient would spread relevance uniformly over the positions instead of in proportion
  to the activations): the canonized forward uses an ``AdaptiveAvgPool2d`` module (Norm rule).

Forward swaps are zennit ``AttributeCanonizer`` instances: the replaced ``forward`` /
``_forward_impl`` and the added modules are instance attributes removed again on ``remove()``.
Drop-path and dropout are called as in the stock forwards (identities in eval mode, where
attribution runs).
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn as nn
from zennit.canonizers import AttributeCanonizer
from zennit.layer import Sum

__all__ = [
    "TimmInvertedResidualCanonizer",
    "TorchvisionMobileNetCanonizer",
    "is_timm_inverted_residual",
    "is_torchvision_inverted_residual",
    "is_torchvision_mobilenet_v2",
    "inverted_residual_classes",
    "timm_inverted_residual_classes",
]


def timm_inverted_residual_classes() -> tuple[type, ...]:
    """timm's ``DepthwiseSeparableConv``/``InvertedResidual`` classes (empty without timm)."""
    try:
        from timm.models._efficientnet_blocks import DepthwiseSeparableConv, InvertedResidual
    except Exception:  # pragma: no cover - timm absent or changed
        return ()
    return (DepthwiseSeparableConv, InvertedResidual)


def is_timm_inverted_residual(module: nn.Module) -> bool:
    """True for timm ``InvertedResidual`` / ``DepthwiseSeparableConv`` (exact classes; timm not imported otherwise)."""
    if not type(module).__module__.startswith("timm."):
        return False
    return type(module) in timm_inverted_residual_classes()


def inverted_residual_classes() -> tuple[type, ...]:
    """torchvision's MobileNetV2 ``InvertedResidual`` and timm's inverted-residual block classes."""
    from torchvision.models.mobilenetv2 import InvertedResidual

    return (InvertedResidual, *timm_inverted_residual_classes())


def is_torchvision_inverted_residual(module: nn.Module) -> bool:
    """True for ``torchvision.models.mobilenetv2.InvertedResidual`` (exact class)."""
    if not type(module).__module__.startswith("torchvision.models.mobilenetv2"):
        return False
    from torchvision.models.mobilenetv2 import InvertedResidual

    return type(module) is InvertedResidual


def is_torchvision_mobilenet_v2(module: nn.Module) -> bool:
    """True for ``torchvision.models.MobileNetV2`` (exact class)."""
    if not type(module).__module__.startswith("torchvision.models.mobilenetv2"):
        return False
    from torchvision.models.mobilenetv2 import MobileNetV2

    return type(module) is MobileNetV2


def _timm_inverted_residual_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    """timm ``InvertedResidual.forward`` with the residual add done by ``canonizer_sum``."""
    shortcut = x
    if self.conv_s2d is not None:
        x = self.conv_s2d(x)
        x = self.bn_s2d(x)
    x = self.conv_pw(x)
    x = self.bn1(x)
    x = self.conv_dw(x)
    x = self.bn2(x)
    x = self.aa(x)
    x = self.se(x)
    x = self.conv_pwl(x)
    x = self.bn3(x)
    if self.has_skip:
        x = self.canonizer_sum(torch.stack([shortcut, self.drop_path(x)], dim=-1))
    return x


def _timm_depthwise_separable_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    """timm ``DepthwiseSeparableConv.forward`` with the residual add done by ``canonizer_sum``."""
    shortcut = x
    if self.conv_s2d is not None:
        x = self.conv_s2d(x)
        x = self.bn_s2d(x)
    x = self.conv_dw(x)
    x = self.bn1(x)
    x = self.aa(x)
    x = self.se(x)
    x = self.conv_pw(x)
    x = self.bn2(x)
    if self.has_skip:
        x = self.canonizer_sum(torch.stack([shortcut, self.drop_path(x)], dim=-1))
    return x


class TimmInvertedResidualCanonizer(AttributeCanonizer):
    """Residual ``Sum`` for timm ``InvertedResidual`` / ``DepthwiseSeparableConv`` blocks with a skip."""

    def __init__(self) -> None:
        super().__init__(self._attribute_map)

    @staticmethod
    def _attribute_map(name: str, module: nn.Module) -> dict | None:
        if not is_timm_inverted_residual(module) or not getattr(module, "has_skip", False):
            return None
        fn: Callable = (_timm_inverted_residual_forward if type(module).__name__ == "InvertedResidual"
                        else _timm_depthwise_separable_forward)
        return {"forward": fn.__get__(module), "canonizer_sum": Sum()}

    def copy(self) -> "TimmInvertedResidualCanonizer":
        return TimmInvertedResidualCanonizer()


def _tv_inverted_residual_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    """torchvision ``InvertedResidual.forward`` with the residual add done by ``canonizer_sum``."""
    if self.use_res_connect:
        return self.canonizer_sum(torch.stack([x, self.conv(x)], dim=-1))
    return self.conv(x)


def _tv_mobilenet_v2_forward_impl(self: Any, x: torch.Tensor) -> torch.Tensor:
    """torchvision ``MobileNetV2._forward_impl`` with the global pool as a module (Norm rule)."""
    x = self.features(x)
    x = self.canonizer_pool(x)
    x = torch.flatten(x, 1)
    return self.classifier(x)


class TorchvisionMobileNetCanonizer(AttributeCanonizer):
    """Residual ``Sum`` for torchvision ``InvertedResidual`` blocks and a pooling module for ``MobileNetV2``."""

    def __init__(self) -> None:
        super().__init__(self._attribute_map)

    @staticmethod
    def _attribute_map(name: str, module: nn.Module) -> dict | None:
        if is_torchvision_inverted_residual(module) and getattr(module, "use_res_connect", False):
            return {"forward": _tv_inverted_residual_forward.__get__(module), "canonizer_sum": Sum()}
        if is_torchvision_mobilenet_v2(module):
            return {"_forward_impl": _tv_mobilenet_v2_forward_impl.__get__(module),
                    "canonizer_pool": nn.AdaptiveAvgPool2d((1, 1))}
        return None

    def copy(self) -> "TorchvisionMobileNetCanonizer":
        return TorchvisionMobileNetCanonizer()
