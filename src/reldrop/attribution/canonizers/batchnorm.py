"""BatchNorm merging for LRP (corrected for zennit 0.5.1's eps bug).

LRP is not implementation invariant: a conv followed by a BatchNorm is two linear maps, and the
ε/z⁺ rules applied to each separately differ from the rule applied to the single merged layer.
Canonization rewrites the model *temporarily* (zennit ``Canonizer`` protocol: ``apply(root)``
returns instances, each undone by ``remove()``) so that every BN directly after a conv/linear is
merged into it (the BN becomes the identity).

* :class:`MergeBatchNorm` - zennit's merge with its 0.5.1 bug fixed: zennit resets the BN to
  mean 0 / var 1 / weight 1 / bias 0 but leaves ``eps``, so the "identity" BN still divides by
  ``sqrt(1 + eps)`` (up to a few % of max|R| on a ResNet-18). We also set ``eps = 0`` and restore
  it on ``remove()``. It also skips BNs without running statistics (they are not affine in eval).
* :class:`SequentialMergeBatchNorm` - merges every BN that reads a conv/linear layer's output in
  the ``torch.fx`` data flow (nothing else reading it); for a model fx cannot trace, every BN that
  directly follows a conv/linear of as many channels in leaf (registration) order, a BN with
  child modules (timm ``BatchNormAct2d``) counting as one leaf; the generic canonizer for plain
  conv→BN chains (small CNNs, VGG, MobileNet/EfficientNet with depthwise/grouped convs,
  PointNet/PointNet++ Conv1d/Conv2d+BN pairs).
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import torch
import torch.nn as nn
from zennit.canonizers import Canonizer
from zennit.types import BatchNorm as _BatchNormType
from zennit.types import ConvolutionTranspose as _ConvTransposeType
from zennit.types import Linear as _LinearType

from ..rules import bn_scale

__all__ = ["MergeBatchNorm", "SequentialMergeBatchNorm", "merge_leaves", "merge_pairs", "register_each", "mergeable_bn",
           "sequential_pairs"]

def mergeable_bn(bn: Any) -> bool:
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
        self.linears: list[Any] = []  # conv/linear layers (their weight/bias are read and swapped)
        self.batch_norm: Any = None  # a BatchNorm (or timm BatchNormAct2d)
        self.linear_params: list[tuple[torch.Tensor, torch.Tensor | None]] = []
        self.batch_norm_params: dict[str, torch.Tensor] = {}
        self.batch_norm_eps: float | None = None

    def apply(self, root_module: nn.Module) -> list[Canonizer]:  # pragma: no cover - abstract use
        return []

    def register(self, linears: Sequence[nn.Module], batch_norm: Any) -> None:
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


def register_each(todo: Iterable[tuple[Canonizer, tuple]]) -> list[Canonizer]:
    """``instance.register(*args)`` for every ``(instance, args)`` of ``todo``, in order; on failure
    (also while ``todo`` is iterated) the ones registered so far are removed, newest first, and the
    error re-raised. Returns the registered instances."""
    instances: list[Canonizer] = []
    try:
        for instance, args in todo:
            instance.register(*args)
            instances.append(instance)
    except BaseException:
        for instance in reversed(instances):
            instance.remove()
        raise
    return instances


def merge_pairs(pairs: Iterable[tuple[nn.Module, nn.Module]]) -> list[Canonizer]:
    """Merge every ``(linear, bn)`` pair; on failure undo the merges done so far and re-raise."""
    return register_each((MergeBatchNorm(), ((linear,), bn)) for linear, bn in pairs)


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


def _dataflow_pairs(root: nn.Module) -> list[tuple[str, str]] | None:
    """``(linear path, bn path)`` pairs where, in the ``torch.fx`` graph of ``root``, the BN's input is
    the output of the linear module and nothing else reads that output (each called once); None
    when fx cannot trace ``root``. DenseNet's BN-before-conv layers are then left unmerged (the
    coverage check refuses them) instead of being paired with the next registered conv."""
    import torch.fx as fx

    from .._trace import trace_model

    try:
        graph = trace_model(root).graph
    except Exception:  # data-dependent control flow etc.: registration order decides
        return None
    modules = dict(root.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[str(node.target)] = calls.get(str(node.target), 0) + 1
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or calls[str(node.target)] != 1 or not mergeable_bn(modules.get(str(node.target))):
            continue
        src = node.args[0] if node.args else None
        if (isinstance(src, fx.Node) and src.op == "call_module" and len(src.users) == 1
                and calls[str(src.target)] == 1 and isinstance(modules.get(str(src.target)), _LinearType)
                and getattr(modules[str(src.target)], "weight", None) is not None):
            pairs.append((str(src.target), str(node.target)))
    return pairs


def _out_channels(linear: nn.Module) -> int | None:
    weight = getattr(linear, "weight", None)
    if weight is None:
        return None
    if isinstance(linear, _ConvTransposeType):
        return int(weight.shape[1]) * int(getattr(linear, "groups", 1))
    return int(weight.shape[0])


def sequential_pairs(root: nn.Module, claimed: set[int],
                     cache: dict[int, list[tuple[str, str]] | None] | None = None) -> list[tuple[nn.Module, nn.Module]]:
    """``(linear, bn)`` pairs where the BN reads the linear layer's output: by the data flow of the
    fx graph (:func:`_dataflow_pairs`, cached per root in ``cache``); for a model fx cannot trace,
    where the BN directly follows the linear layer in leaf order (:func:`merge_leaves`: a BN with
    child modules is one leaf) and has as many channels as the layer has outputs."""
    if cache is None:
        cache = {}
    key = id(root)
    if key not in cache:
        cache[key] = _dataflow_pairs(root)
    flow = cache[key]
    if flow is not None:
        modules = dict(root.named_modules())
        pairs = []
        for lin_path, bn_path in flow:
            linear, bn = modules.get(lin_path), modules.get(bn_path)
            if linear is not None and bn is not None and id(bn) not in claimed:
                pairs.append((linear, bn))
                claimed.add(id(bn))
        return pairs
    pairs = []
    last = None
    leaf: Any  # a BN once mergeable_bn(leaf) holds
    for leaf in merge_leaves(root):
        if (
            isinstance(last, _LinearType)
            and mergeable_bn(leaf)
            and id(leaf) not in claimed
            and getattr(last, "weight", None) is not None
            and _out_channels(last) == leaf.running_mean.numel()
        ):
            pairs.append((last, leaf))
            claimed.add(id(leaf))
        last = leaf
    return pairs


class SequentialMergeBatchNorm(Canonizer):
    """Merge every BN that reads a conv/linear module's output (corrected eps): by the fx data flow
    (traced once per model), else - untraceable models - in leaf order like
    ``zennit.canonizers.SequentialMergeBatchNorm`` (children registered in forward order,
    activations as modules, channel counts matching). A BN before its conv (DenseNet) stays
    unmerged, and the coverage check refuses it. Generic fallback for plain conv→BN chains
    (Conv1d/Conv2d/Linear + BatchNorm1d/2d, e.g. PointNet++ MLPs).
    """

    def __init__(self) -> None:
        super().__init__()
        self._pairs: dict[int, list[tuple[str, str]] | None] = {}  # data-flow pairs per root (traced once)

    def apply(self, root_module: nn.Module) -> list[Canonizer]:
        return merge_pairs(sequential_pairs(root_module, set(), self._pairs))

    def register(self) -> None:
        """Nothing to do: the instances returned by :meth:`apply` hold the merges."""

    def remove(self) -> None:
        """Nothing to do: the instances returned by :meth:`apply` are removed individually."""

    def copy(self) -> "SequentialMergeBatchNorm":
        return SequentialMergeBatchNorm()
