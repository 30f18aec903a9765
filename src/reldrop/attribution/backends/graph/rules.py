"""The one rule table of the graph LRP engine: op / module class -> rule kind; presets -> rules.

Every node of the traced graph (:func:`reldrop.attribution._trace.trace_model`) is looked up
here by its op: the module class (walking its MRO, but a subclass that overrides ``forward``
matches only if it is listed itself), the function, or the tensor-method name. The *kind* says
what the node does to relevance; :data:`PRESET_RULES` then says which concrete rule a preset
puts on the layer kinds (a preset is a mapping of op classes to rules). Kinds:

========== =====================================================================================
layer      conv (1/2/3-d, grouped, depthwise, timm ``Conv2dSame``/``StdConv2dSame``/
           ``ScaledStdConv2dSame``; ``F.conv*`` with a constant weight) or dense (``Linear``,
           ``F.linear``, ``x @ W`` with a constant ``W``): the preset's rule (ε / z⁺ / γ; the first
           layer: Flat / ZBox). A BatchNorm that is the only reader of its output is folded in.
batchnorm  ``BatchNorm*d`` (running statistics; timm ``BatchNormAct2d``: BN, then its activation):
           folded into the conv/linear before it, else a per-channel linear map (LRP-0).
norm       LayerNorm / ``F.layer_norm`` (timm ``LayerNorm2d`` traces to it), GroupNorm, RMSNorm:
           1/σ held constant, LRP-0 on the remaining linear map (AttnLRP / lxt).
act        element-wise activations (ReLU, ReLU6, LeakyReLU, PReLU, ELU, CELU, SELU, GELU, SiLU,
           Mish, Hardswish, Hardtanh, tanh, ...): identity rule ``R_x = R_y``.
gate       sigmoid / hard-sigmoid: a gate when it multiplies a signal (held constant), else
           the identity rule.
mul        product: with a constant, LRP-0 (LayerScale, scalars); of two signals, the operand
           computed from gates only (sigmoid, hard-sigmoid, softmax under CP-LRP, statistics, and
           values computed from those alone, e.g. talking-heads mixing of attention weights) is held
           constant (CP-LRP: SE/ECA gates, attention weights), otherwise the uniform rule (half each).
div        ``a / b``: ``b`` held constant (a normalization); a signal only in ``b``: refused.
           ``F.normalize``: the norm held constant. ``addcmul`` (timm ``Affine``, GRN): a sum.
stat       rsqrt / sqrt / norm / var / std: statistics, allowed only where they (or values computed
           from them alone, like GRN's ``‖x‖ / mean ‖x‖``) scale a signal — there they are held.
matmul     ``a @ b``: with a constant, a dense layer; of two signals, as ``mul``.
add        sums / differences of signals, and a signal plus a constant (bias, position embedding,
           LayerScale shift): the Norm rule, LRP-ε with the stabilizer δ on the sum. The constant's
           share is a sink (documented: biases, position embeddings, class tokens absorb relevance).
linmap     weight-free linear maps (average / adaptive-average pooling, mean, sum, bilinear
           upsampling): LRP-ε with δ on the map (zennit's Norm rule on average pools).
max        max pooling, ``amax``: winner takes all (the gradient).
softmax    CP-LRP: constant (only allowed where it is a gate); AttnLRP: its rule (the gradient).
attention  ``F.scaled_dot_product_attention``, ``nn.MultiheadAttention``: CP-LRP (attention
           weights constant, relevance through the values) or AttnLRP (softmax rule, uniform rule
           on ``A v`` and ``q kᵀ``).
pass       relevance follows the data: reshape / view / permute / transpose / flatten / cat /
           stack / split / chunk / unbind / getitem / roll / flip / pad / expand / dropout /
           drop-path / identity / window partition and reverse / ``to`` / ``contiguous``.
meta       shapes, sizes, asserts: no tensor value.
========== =====================================================================================

Anything else on the path the relevance takes (LSTM/GRU, sort, top-k, ``exp``, ``clamp``, ...) is
refused, naming the node, its op and module path; so is a model fx cannot trace (data-dependent
control flow). A custom ``torch.autograd.Function`` is traced through its ``forward`` (the LRP
rules follow the forward computation; its custom backward plays no part), and an op there without
a rule is refused like any other. Ops that only compute a gate, a normalization statistic or an
attention weight (never receiving relevance) may be anything.
"""
from __future__ import annotations

import operator
from typing import Any, cast

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["MODULE_RULES", "TIMM_MODULE_RULES", "FUNCTION_RULES", "METHOD_RULES", "PRESET_RULES",
           "ACT_LIMITS", "REFUSE_HINTS", "module_kind", "GATE_FUNCS"]

_ACT_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.CELU, nn.SELU, nn.GELU, nn.SiLU, nn.Mish,
                nn.Hardswish, nn.Hardtanh, nn.Tanh, nn.Softsign, nn.Tanhshrink, nn.Hardshrink, nn.Softshrink)

#: torch.nn module classes -> kind
MODULE_RULES: dict[type, str] = {
    nn.Conv1d: "conv", nn.Conv2d: "conv", nn.Conv3d: "conv", nn.Linear: "dense",
    nn.BatchNorm1d: "batchnorm", nn.BatchNorm2d: "batchnorm", nn.BatchNorm3d: "batchnorm", nn.SyncBatchNorm: "batchnorm",
    nn.LayerNorm: "layernorm", nn.GroupNorm: "groupnorm",
    **{m: "act" for m in _ACT_MODULES},
    nn.Sigmoid: "gate", nn.Hardsigmoid: "gate",
    nn.Softmax: "softmax",
    nn.Identity: "pass", nn.Dropout: "pass", nn.Dropout1d: "pass", nn.Dropout2d: "pass", nn.Dropout3d: "pass",
    nn.AlphaDropout: "pass", nn.Flatten: "pass", nn.Unflatten: "pass", nn.PixelShuffle: "pass",
    nn.PixelUnshuffle: "pass", nn.ChannelShuffle: "pass", nn.ZeroPad1d: "pass", nn.ZeroPad2d: "pass",
    nn.ZeroPad3d: "pass", nn.ConstantPad1d: "pass", nn.ConstantPad2d: "pass", nn.ConstantPad3d: "pass",
    nn.ReflectionPad1d: "pass", nn.ReflectionPad2d: "pass", nn.ReplicationPad2d: "pass",
    nn.AvgPool1d: "linmap", nn.AvgPool2d: "linmap", nn.AvgPool3d: "linmap", nn.AdaptiveAvgPool1d: "linmap",
    nn.AdaptiveAvgPool2d: "linmap", nn.AdaptiveAvgPool3d: "linmap",
    nn.MaxPool1d: "max", nn.MaxPool2d: "max", nn.MaxPool3d: "max", nn.AdaptiveMaxPool1d: "max",
    nn.AdaptiveMaxPool2d: "max", nn.AdaptiveMaxPool3d: "max",
    nn.Upsample: "upsample", nn.UpsamplingBilinear2d: "upsample", nn.UpsamplingNearest2d: "upsample",
    nn.MultiheadAttention: "mha",
}
if hasattr(nn, "RMSNorm"):
    MODULE_RULES[nn.RMSNorm] = "rmsnorm"

#: timm leaf classes (by name, module under ``timm.``) -> kind
TIMM_MODULE_RULES: dict[str, str] = {
    "Conv2dSame": "conv", "StdConv2dSame": "conv", "ScaledStdConv2dSame": "conv",
    "BatchNormAct2d": "batchnorm", "FrozenBatchNormAct2d": "batchnorm", "SyncBatchNormAct": "batchnorm",
    "AvgPool2dSame": "linmap", "MaxPool2dSame": "max",
}

#: why a known-unsupported module is refused and what would help
REFUSE_HINTS: dict[type, str] = {
    nn.LSTM: "recurrent layers have no LRP rule here (an LSTM-specific LRP rule is needed)",
    nn.GRU: "recurrent layers have no LRP rule here", nn.RNN: "recurrent layers have no LRP rule here",
    nn.ConvTranspose1d: "transposed convolutions are not implemented", nn.ConvTranspose2d:
        "transposed convolutions are not implemented", nn.ConvTranspose3d: "transposed convolutions are not implemented",
}

GATE_FUNCS = (torch.sigmoid, F.sigmoid, F.hardsigmoid, torch.rsqrt, torch.reciprocal)

#: call_function targets -> kind
FUNCTION_RULES: dict[Any, str] = {
    F.conv1d: "conv", F.conv2d: "conv", F.conv3d: "conv", F.linear: "dense",
    F.batch_norm: "batchnorm", F.layer_norm: "layernorm", F.group_norm: "groupnorm",
    F.relu: "act", torch.relu: "act", F.relu6: "act", F.leaky_relu: "act", F.elu: "act", F.celu: "act",
    F.selu: "act", F.gelu: "act", F.silu: "act", F.mish: "act", F.hardswish: "act", F.hardtanh: "act",
    torch.tanh: "act", F.tanh: "act", F.prelu: "act", F.softsign: "act",
    torch.sigmoid: "gate", F.sigmoid: "gate", F.hardsigmoid: "gate",
    torch.rsqrt: "stat", torch.reciprocal: "stat", torch.sqrt: "stat", torch.norm: "stat",
    torch.linalg.vector_norm: "stat", torch.var: "stat", torch.std: "stat", F.normalize: "normalize",
    torch.addcmul: "addcmul",
    F.softmax: "softmax", torch.softmax: "softmax",
    F.scaled_dot_product_attention: "sdpa",
    operator.add: "add", torch.add: "add", operator.sub: "add", torch.sub: "add", operator.iadd: "add",
    operator.isub: "add", operator.neg: "pass", torch.neg: "pass",
    operator.mul: "mul", torch.mul: "mul", operator.imul: "mul",
    operator.truediv: "div", torch.div: "div", operator.itruediv: "div",
    operator.matmul: "matmul", torch.matmul: "matmul", torch.bmm: "matmul",
    torch.mean: "linmap", torch.sum: "linmap", F.avg_pool1d: "linmap", F.avg_pool2d: "linmap",
    F.avg_pool3d: "linmap", F.adaptive_avg_pool1d: "linmap", F.adaptive_avg_pool2d: "linmap",
    F.adaptive_avg_pool3d: "linmap", F.interpolate: "upsample", F.upsample: "upsample",
    F.max_pool1d: "max", F.max_pool2d: "max", F.max_pool3d: "max", F.adaptive_max_pool1d: "max",
    F.adaptive_max_pool2d: "max", torch.amax: "max",
    operator.getitem: "pass", torch.flatten: "pass", torch.reshape: "pass", torch.permute: "pass",
    torch.transpose: "pass", torch.cat: "pass", torch.concat: "pass", torch.stack: "pass", torch.split: "pass",
    torch.chunk: "pass", torch.unbind: "pass", torch.roll: "pass", torch.flip: "pass", torch.squeeze: "pass",
    torch.unsqueeze: "pass", torch.narrow: "pass", torch.select: "pass", torch.index_select: "pass",
    torch.gather: "pass", torch.where: "pass", F.pad: "pass", F.dropout: "pass", F.dropout1d: "pass",
    F.dropout2d: "pass", F.pixel_shuffle: "pass", F.pixel_unshuffle: "pass", torch.channel_shuffle: "pass",
    torch.clone: "pass", torch.movedim: "pass", torch.swapaxes: "pass", torch.tile: "pass",
    F.glu: "glu",
    getattr: "meta", torch._assert: "meta", len: "meta",
}

_PASS_METHODS = ("reshape", "view", "view_as", "reshape_as", "permute", "transpose", "flatten", "unflatten",
                 "contiguous", "expand", "expand_as", "repeat", "squeeze", "unsqueeze", "split", "chunk", "unbind",
                 "narrow", "select", "roll", "flip", "clone", "to", "type_as", "float", "double", "half", "t",
                 "movedim", "swapaxes", "index_select", "gather", "masked_fill", "tile", "flip", "tril", "triu",
                 "__getitem__", "neg", "type", "cpu", "cuda", "detach_", "unfold")
#: tensor-method names -> kind (in-place ``x.op_()`` runs as ``x.op()``)
METHOD_RULES: dict[str, str] = {
    **{m: "pass" for m in _PASS_METHODS},
    "mean": "linmap", "sum": "linmap",
    "add": "add", "sub": "add", "mul": "mul", "div": "div", "matmul": "matmul", "bmm": "matmul",
    "relu": "act", "gelu": "act", "tanh": "act", "silu": "act",
    "sigmoid": "gate", "rsqrt": "stat", "reciprocal": "stat", "sqrt": "stat", "norm": "stat", "var": "stat",
    "std": "stat", "addcmul": "addcmul",
    "softmax": "softmax", "amax": "max",
    "size": "meta", "dim": "meta", "numel": "meta", "new_zeros": "const", "new_ones": "const",
}

#: value of ``f(x)/x`` at ``x = 0`` (the identity rule's factor there), by activation
ACT_LIMITS: dict[str, float] = {"relu": 0.0, "relu6": 0.0, "gelu": 0.5, "silu": 0.5, "hardswish": 0.5, "mish": 0.6,
                                "elu": 1.0, "celu": 1.0, "selu": 1.0507, "tanh": 1.0, "hardtanh": 1.0,
                                "softsign": 1.0}

#: preset -> {layer kind -> rule}; ``first``: the rule of the input layer(s)
PRESET_RULES: dict[str, dict[str, str]] = {
    "epsilon_flat": {"first": "flat", "conv": "epsilon", "dense": "epsilon", "softmax": "constant",
                     "attention": "cp"},
    "cp_lrp": {"first": "flat", "conv": "epsilon", "dense": "epsilon", "softmax": "constant", "attention": "cp"},
    "attnlrp": {"first": "flat", "conv": "epsilon", "dense": "epsilon", "softmax": "gradient",
                "attention": "attnlrp"},
    "zplus_flat": {"first": "flat", "conv": "zplus", "dense": "zplus", "softmax": "constant", "attention": "cp"},
    "epsilon_gamma_box": {"first": "zbox", "conv": "gamma", "dense": "epsilon", "softmax": "constant",
                          "attention": "cp"},
}

def module_kind(m: nn.Module) -> str | None:
    """The kind of a leaf module, or None. A subclass matches a listed class only when it keeps
    that class's ``forward`` (an overriding subclass computes something else)."""
    t = type(m)
    if t.__module__.startswith("timm.") and t.__name__ in TIMM_MODULE_RULES:
        return TIMM_MODULE_RULES[t.__name__]
    for cls in t.__mro__:
        if cls in MODULE_RULES:
            listed = cast("type[nn.Module]", cls)  # MODULE_RULES lists nn.Module classes
            return MODULE_RULES[cls] if t.forward is listed.forward else None
        if cls in REFUSE_HINTS:
            return None
    return None
