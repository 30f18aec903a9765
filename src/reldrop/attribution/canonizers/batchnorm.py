"""Canonization for LRP: merge batch norms into the preceding conv/linear layer, expose residual sums.

LRP is not implementation invariant: a conv followed by a BatchNorm is two linear maps, and the
ε/z⁺ rules applied to each separately differ from the rule applied to the single merged layer.
Canonization rewrites the model *temporarily* (zennit ``Canonizer`` protocol: ``apply(root)``
returns instances, each undone by ``remove()``) so that

* every BN directly after a conv/linear is merged into it (the BN becomes the identity), and
* every residual ``a + b`` goes through a :class:`zennit.layer.Sum` module, so the composite can
  attach the Norm (proportional split) rule to it.

What is here:

* :class:`MergeBatchNorm` - zennit's merge with its 0.5.1 bug fixed: zennit resets the BN to
  mean 0 / var 1 / weight 1 / bias 0 but leaves ``eps``, so the "identity" BN still divides by
  ``sqrt(1 + eps)`` (up to a few % of max|R| on a ResNet-18). We also set ``eps = 0`` and restore
  it on ``remove()``. It also skips BNs without running statistics (they are not affine in eval).
* :class:`SequentialMergeBatchNorm` - merges every BN that directly follows a conv/linear in
  leaf (registration) order, a BN with child modules (timm ``BatchNormAct2d``) counting as one
  leaf; the generic canonizer for plain conv→BN chains (small CNNs, VGG, MobileNet/EfficientNet
  with depthwise/grouped convs, PointNet/PointNet++ Conv1d/Conv2d+BN pairs).
* :class:`TorchvisionResNetCanonizer` - BN merge + zennit's torchvision BasicBlock/Bottleneck
  forward swap (``identity + out`` → ``Sum``).
* :class:`TimmResNetCanonizer` - the same for ``timm.models.resnet`` BasicBlock/Bottleneck, whose
  ``x += shortcut`` zennit does not see (the official RelDrop code left it unhandled). Merges
  conv1/bn1, conv2/bn2 (, conv3/bn3) and the downsample conv/BN of each block by name.
* :func:`canonizers_for` - pick the canonizers for a model (registered providers, among them the
  point-cloud canonizers that :mod:`.canonize_points` registers, torchvision/timm ResNets,
  inverted-residual networks (:mod:`.canonize_mobile`), generic fallback).

All canonizers are created once (per :class:`~reldrop.attribution.Attributor`); ``apply`` runs at
each attribution call and every change is undone afterwards.
"""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch
import torch.nn as nn
from zennit.canonizers import AttributeCanonizer, Canonizer, CompositeCanonizer
from zennit.core import collect_leaves
from zennit.layer import Sum
from zennit.torchvision import ResNetBasicBlockCanonizer, ResNetBottleneckCanonizer
from zennit.types import BatchNorm as _BatchNormType
from zennit.types import ConvolutionTranspose as _ConvTransposeType
from zennit.types import Linear as _LinearType

from ._shared import bn_scale
from .canonize_mobile import (TimmInvertedResidualCanonizer, TorchvisionMobileNetCanonizer,
                              is_timm_inverted_residual, is_torchvision_inverted_residual,
                              is_torchvision_mobilenet_v2)

__all__ = [
    "MergeBatchNorm",
    "SequentialMergeBatchNorm",
    "TorchvisionResNetCanonizer",
    "TimmResNetCanonizer",
    "TimmBasicBlockCanonizer",
    "TimmBottleneckCanonizer",
    "canonizers_for",
    "register_canonizer",
    "is_timm_resnet_block",
    "is_torchvision_resnet_block",
    "merge_leaves",
    "resnet_block_classes",
    "timm_resnet_block_classes",
]


def _mergeable_bn(bn: nn.Module) -> bool:
    """A BN can be merged when it uses running statistics in eval mode (else it is not affine)."""
    return (
        isinstance(bn, _BatchNormType)
        and getattr(bn, "running_mean", None) is not None
        and getattr(bn, "running_var", None) is not None
    )


class MergeBatchNorm(Canonizer):
    """Merge one BN into the linear layer(s) feeding it; the BN becomes the exact identity.

    Corrected version of ``zennit.canonizers.MergeBatchNorm`` (0.5.1): besides mean/var/weight/bias
    it also sets ``eps = 0`` (restored on :meth:`remove`), so the reduced BN computes ``x`` exactly
    instead of ``x / sqrt(1 + eps)``. BNs with ``affine=False`` are supported. The merge computes
    ``W' = W · γ/sqrt(σ² + ε)`` and ``b' = (b − μ) · γ/sqrt(σ² + ε) + β`` without autograd; all
    original tensors are kept and put back (``.data`` swaps, never in-place writes), so parameters
    and buffers are bit-identical after :meth:`remove`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.linears: list[nn.Module] = []
        self.batch_norm: nn.Module | None = None
        self.linear_params: list[tuple[torch.Tensor, torch.Tensor | None]] = []
        self.batch_norm_params: dict[str, torch.Tensor] = {}
        self.batch_norm_eps: float | None = None

    def apply(self, root_module: nn.Module) -> list[Canonizer]:  # pragma: no cover - abstract use
        return []

    def register(self, linears: Sequence[nn.Module], batch_norm: nn.Module) -> None:  # type: ignore[override]
        """Store the originals of ``linears`` and ``batch_norm`` and merge the BN into them."""
        self.linears = list(linears)
        self.batch_norm = batch_norm
        self.linear_params = [(lin.weight.data, getattr(lin.bias, "data", None)) for lin in self.linears]
        self.batch_norm_params = {
            key: getattr(batch_norm, key).data
            for key in ("weight", "bias", "running_mean", "running_var")
            if getattr(batch_norm, key, None) is not None
        }
        self.batch_norm_eps = batch_norm.eps
        try:
            with torch.no_grad():
                self._merge()
        except BaseException:
            self.remove()
            raise

    def _merge(self) -> None:
        bn = self.batch_norm
        assert bn is not None
        mean, var = bn.running_mean, bn.running_var
        scale = bn_scale(bn)  # same arithmetic as zennit
        shift = bn.bias if bn.bias is not None else torch.zeros_like(mean)
        for module in self.linears:
            weight = module.weight.data
            if module.bias is None:
                out = getattr(module, "out_channels", None) or getattr(module, "out_features", None)
                if out is None:
                    out = weight.shape[1 if isinstance(module, _ConvTransposeType) else 0]
                module.bias = nn.Parameter(torch.zeros(out, dtype=weight.dtype, device=weight.device),
                                           requires_grad=False)
            bias = module.bias.data
            if isinstance(module, _ConvTransposeType):
                index = (None, slice(None), *((None,) * (weight.ndim - 2)))
            else:
                index = (slice(None), *((None,) * (weight.ndim - 1)))
            module.weight.data = weight * scale[index]
            module.bias.data = (bias - mean) * scale + shift
        # reduce the BN to the exact identity: (x - 0) / sqrt(1 + 0) * 1 + 0
        bn.running_mean.data = torch.zeros_like(mean)
        bn.running_var.data = torch.ones_like(var)
        if bn.weight is not None:
            bn.weight.data = torch.ones_like(bn.weight.data)
        if bn.bias is not None:
            bn.bias.data = torch.zeros_like(bn.bias.data)
        bn.eps = 0.0

    def remove(self) -> None:
        """Put back the original tensors of the linear layers and the BN, and the BN's ``eps``."""
        for module, (weight, bias) in zip(self.linears, self.linear_params):
            module.weight.data = weight
            if bias is None:
                module.bias = None
            else:
                module.bias.data = bias
        bn = self.batch_norm
        if bn is not None:
            for key, value in self.batch_norm_params.items():
                getattr(bn, key).data = value
            if self.batch_norm_eps is not None:
                bn.eps = self.batch_norm_eps

    def copy(self) -> "MergeBatchNorm":
        return MergeBatchNorm()


def _merge_pairs(pairs: Iterable[tuple[nn.Module, nn.Module]]) -> list[Canonizer]:
    """Merge every ``(linear, bn)`` pair; on failure undo the merges done so far and re-raise."""
    instances: list[Canonizer] = []
    try:
        for linear, bn in pairs:
            instance = MergeBatchNorm()
            instance.register((linear,), bn)
            instances.append(instance)
    except BaseException:
        for instance in reversed(instances):
            instance.remove()
        raise
    return instances


def merge_leaves(module: nn.Module) -> Iterable[nn.Module]:
    """Leaf modules in registration order, every BatchNorm counted as one leaf even when it has
    children (timm's ``BatchNormAct2d`` holds its ``drop``/``act`` as child modules); otherwise
    the same walk as zennit's ``collect_leaves``."""
    children = list(module.children())
    if not children or isinstance(module, _BatchNormType):
        yield module
        return
    for child in children:
        yield from merge_leaves(child)


def _sequential_pairs(root: nn.Module, claimed: set[int]) -> list[tuple[nn.Module, nn.Module]]:
    """``(linear, bn)`` pairs where the BN directly follows the linear layer in leaf order
    (:func:`merge_leaves`: a BN with child modules is one leaf)."""
    pairs = []
    last = None
    for leaf in merge_leaves(root):
        if (
            isinstance(last, _LinearType)
            and _mergeable_bn(leaf)
            and id(leaf) not in claimed
            and getattr(last, "weight", None) is not None
        ):
            pairs.append((last, leaf))
            claimed.add(id(leaf))
        last = leaf
    return pairs


class SequentialMergeBatchNorm(Canonizer):
    """Merge every BN that directly follows a conv/linear module in leaf order (corrected eps).

    Like ``zennit.canonizers.SequentialMergeBatchNorm``: children must be registered in forward
    order and activations must be modules for adjacency to mean "feeds into". Generic fallback for
    plain conv→BN chains (Conv1d/Conv2d/Linear + BatchNorm1d/2d, e.g. PointNet++ MLPs).
    """

    def apply(self, root_module: nn.Module) -> list[Canonizer]:
        return _merge_pairs(_sequential_pairs(root_module, set()))

    def register(self) -> None:
        """Nothing to do: the instances returned by :meth:`apply` hold the merges."""

    def remove(self) -> None:
        """Nothing to do: the instances returned by :meth:`apply` are removed individually."""

    def copy(self) -> "SequentialMergeBatchNorm":
        return SequentialMergeBatchNorm()


# ---------------------------------------------------------------------------------------- timm
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


def _timm_residual_tail(self: nn.Module, shortcut: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The end both timm ResNet blocks share: SE, drop-path, downsampled shortcut, and the residual
    add done by the ``canonizer_sum`` module (before the last activation)."""
    if self.se is not None:
        x = self.se(x)
    if self.drop_path is not None:
        x = self.drop_path(x)
    if self.downsample is not None:
        shortcut = self.downsample(shortcut)
    return self.canonizer_sum(torch.stack([shortcut, x], dim=-1))


def _timm_basic_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
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


def _timm_bottleneck_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
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
        if isinstance(prev, _LinearType) and _mergeable_bn(leaf):
            return prev, leaf
    return None


class TimmResNetMergeBatchNorm(Canonizer):
    """BN merge for timm ResNets: conv1/bn1, conv2/bn2(, conv3/bn3) and the downsample conv/BN of
    every timm BasicBlock/Bottleneck by name, then every remaining conv→BN pair in leaf order
    (the stem). Each BN is merged at most once."""

    def apply(self, root_module: nn.Module) -> list[Canonizer]:
        pairs: list[tuple[nn.Module, nn.Module]] = []
        claimed: set[int] = set()
        for module in root_module.modules():
            if not is_timm_resnet_block(module):
                continue
            for conv_name, bn_name in (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")):
                conv, bn = getattr(module, conv_name, None), getattr(module, bn_name, None)
                if conv is not None and _mergeable_bn(bn) and id(bn) not in claimed:
                    pairs.append((conv, bn))
                    claimed.add(id(bn))
            pair = _downsample_pair(getattr(module, "downsample", None))
            if pair is not None and id(pair[1]) not in claimed:
                pairs.append(pair)
                claimed.add(id(pair[1]))
        pairs += _sequential_pairs(root_module, claimed)
        return _merge_pairs(pairs)

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


# ------------------------------------------------------------------------------------ selection
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
    :mod:`.canonize_points` claims reldrop's PointNet++/PointNet); :class:`TorchvisionResNetCanonizer` if the model
    holds torchvision ResNet blocks; :class:`TimmResNetCanonizer` if it holds timm ResNet blocks;
    otherwise the generic :class:`SequentialMergeBatchNorm` (a no-op for models without BN), plus
    the residual-``Sum`` canonizers of :mod:`.canonize_mobile` for timm EfficientNet/MobileNet
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
