"""ResNet canonizers: BN merge + a zennit ``Sum`` module for every residual add (so the composite
can attach the Norm rule to it).

* :class:`TorchvisionResNetCanonizer` - BN merge + zennit's torchvision BasicBlock/Bottleneck
  forward swap (``identity + out`` → ``Sum``).
* :class:`TimmResNetCanonizer` - the same for ``timm.models.resnet`` BasicBlock/Bottleneck, whose
  ``x += shortcut`` zennit does not see (the official RelDrop code left it unhandled). Merges
  conv1/bn1, conv2/bn2 (, conv3/bn3) and the downsample conv/BN of each block by name.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn as nn
from zennit.canonizers import AttributeCanonizer, Canonizer, CompositeCanonizer
from zennit.core import collect_leaves
from zennit.layer import Sum
from zennit.torchvision import ResNetBasicBlockCanonizer, ResNetBottleneckCanonizer
from zennit.types import Linear as _LinearType

from .batchnorm import SequentialMergeBatchNorm, merge_pairs, mergeable_bn, sequential_pairs

__all__ = [
    "TorchvisionResNetCanonizer",
    "TimmResNetCanonizer",
    "TimmResNetMergeBatchNorm",
    "TimmBasicBlockCanonizer",
    "TimmBottleneckCanonizer",
    "is_timm_resnet_block",
    "is_torchvision_resnet_block",
    "resnet_block_classes",
    "timm_resnet_block_classes",
]


def resnet_block_classes() -> tuple[type, ...]:
    """torchvision's and (when timm is installed) timm's ResNet ``BasicBlock``/``Bottleneck`` classes."""
    from torchvision.models.resnet import BasicBlock, Bottleneck

    return (BasicBlock, Bottleneck, *timm_resnet_block_classes())


def is_torchvision_resnet_block(module: nn.Module) -> bool:
    """True for ``torchvision.models.resnet.BasicBlock``/``Bottleneck`` instances."""
    mod = type(module).__module__
    if not mod.startswith("torchvision.models.resnet"):
        return False
    from torchvision.models.resnet import BasicBlock, Bottleneck

    return isinstance(module, (BasicBlock, Bottleneck))


def timm_resnet_block_classes() -> tuple[type, ...]:
    """timm's ResNet ``BasicBlock``/``Bottleneck`` classes (empty without timm)."""
    try:
        from timm.models.resnet import BasicBlock, Bottleneck
    except Exception:  # pragma: no cover - timm absent or changed
        return ()
    return (BasicBlock, Bottleneck)


def is_timm_resnet_block(module: nn.Module) -> bool:
    """True for ``timm.models.resnet.BasicBlock``/``Bottleneck`` instances (timm is not imported otherwise)."""
    if not type(module).__module__.startswith("timm."):
        return False
    classes = timm_resnet_block_classes()
    return bool(classes) and isinstance(module, classes)


def _timm_residual_tail(self: Any, shortcut: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The end both timm ResNet blocks share: SE, drop-path, downsampled shortcut, and the residual
    add done by the ``canonizer_sum`` module (before the last activation)."""
    if self.se is not None:
        x = self.se(x)
    if self.drop_path is not None:
        x = self.drop_path(x)
    if self.downsample is not None:
        shortcut = self.downsample(shortcut)
    return self.canonizer_sum(torch.stack([shortcut, x], dim=-1))


def _timm_basic_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    """timm BasicBlock forward with the residual add done by the ``canonizer_sum`` module."""
    shortcut = x
    x = self.conv1(x)
    x = self.bn1(x)
    x = self.drop_block(x)
    x = self.act1(x)
    x = self.aa(x)
    x = self.conv2(x)
    x = self.bn2(x)
    return self.act2(_timm_residual_tail(self, shortcut, x))


def _timm_bottleneck_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    """timm Bottleneck forward with the residual add done by the ``canonizer_sum`` module."""
    shortcut = x
    x = self.conv1(x)
    x = self.bn1(x)
    x = self.act1(x)
    x = self.conv2(x)
    x = self.bn2(x)
    x = self.drop_block(x)
    x = self.act2(x)
    x = self.aa(x)
    x = self.conv3(x)
    x = self.bn3(x)
    return self.act3(_timm_residual_tail(self, shortcut, x))


class _TimmBlockCanonizer(AttributeCanonizer):
    """Swap a timm ResNet block's forward for one whose residual add is a zennit ``Sum`` module."""

    class_name = ""
    forward_fn: Callable[..., torch.Tensor]

    def __init__(self) -> None:
        super().__init__(self._attribute_map)

    def _attribute_map(self, name: str, module: nn.Module) -> dict | None:
        if is_timm_resnet_block(module) and type(module).__name__ == self.class_name:
            return {"forward": type(self).forward_fn.__get__(module), "canonizer_sum": Sum()}
        return None

    def copy(self) -> "_TimmBlockCanonizer":
        return type(self)()


class TimmBasicBlockCanonizer(_TimmBlockCanonizer):
    """Residual ``Sum`` for ``timm.models.resnet.BasicBlock`` (forward swap only, no BN merge)."""

    class_name = "BasicBlock"
    forward_fn = staticmethod(_timm_basic_forward)


class TimmBottleneckCanonizer(_TimmBlockCanonizer):
    """Residual ``Sum`` for ``timm.models.resnet.Bottleneck`` (forward swap only, no BN merge)."""

    class_name = "Bottleneck"
    forward_fn = staticmethod(_timm_bottleneck_forward)


def _downsample_pair(downsample: nn.Module | None) -> tuple[nn.Module, nn.Module] | None:
    """The (conv, BN) pair of a timm downsample (``Sequential(conv, bn)`` or ``(pool, conv, bn)``)."""
    if downsample is None:
        return None
    leaves = list(collect_leaves(downsample))
    for prev, leaf in zip(leaves, leaves[1:]):
        if isinstance(prev, _LinearType) and mergeable_bn(leaf):
            return prev, leaf
    return None


class TimmResNetMergeBatchNorm(Canonizer):
    """BN merge for timm ResNets: conv1/bn1, conv2/bn2(, conv3/bn3) and the downsample conv/BN of
    every timm BasicBlock/Bottleneck by name, then every remaining conv→BN pair in leaf order
    (the stem). Each BN is merged at most once."""

    def __init__(self) -> None:
        super().__init__()
        self._pairs: dict[int, list[tuple[str, str]] | None] = {}  # data-flow pairs per root (traced once)

    def apply(self, root_module: nn.Module) -> list[Canonizer]:
        pairs: list[tuple[Any, Any]] = []
        claimed: set[int] = set()
        for module in root_module.modules():
            if not is_timm_resnet_block(module):
                continue
            for conv_name, bn_name in (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")):
                conv, bn = getattr(module, conv_name, None), getattr(module, bn_name, None)
                if conv is not None and mergeable_bn(bn) and id(bn) not in claimed:
                    pairs.append((conv, bn))
                    claimed.add(id(bn))
            pair = _downsample_pair(getattr(module, "downsample", None))
            if pair is not None and id(pair[1]) not in claimed:
                pairs.append(pair)
                claimed.add(id(pair[1]))
        pairs += sequential_pairs(root_module, claimed, self._pairs)
        return merge_pairs(pairs)

    def register(self) -> None:
        """Nothing to do (see :meth:`apply`)."""

    def remove(self) -> None:
        """Nothing to do (see :meth:`apply`)."""

    def copy(self) -> "TimmResNetMergeBatchNorm":
        return TimmResNetMergeBatchNorm()


class TimmResNetCanonizer(CompositeCanonizer):
    """Canonizer for ``timm.models.resnet`` models: corrected BN merge (blocks by name, stem in
    sequence) and a zennit ``Sum`` module for every residual add, so the Norm rule applies."""

    def __init__(self) -> None:
        super().__init__((TimmResNetMergeBatchNorm(), TimmBasicBlockCanonizer(), TimmBottleneckCanonizer()))


class TorchvisionResNetCanonizer(CompositeCanonizer):
    """zennit's ``ResNetCanonizer`` with the corrected BN merge (``eps`` reset too)."""

    def __init__(self) -> None:
        super().__init__((SequentialMergeBatchNorm(), ResNetBottleneckCanonizer(), ResNetBasicBlockCanonizer()))
