"""Fast LRP backend: ε-LRP with a Flat first layer as ONE modified backward pass.

Entry points: :func:`supports` and :func:`build`, registered as backend ``"fast"`` by :class:`FastBackend`
(:mod:`reldrop.attribution.registry`). z⁺ of reldrop's point nets is the separate backend
``"points"`` (:mod:`reldrop.attribution.backends.points`).

Same maths as the zennit backend with the ``epsilon_flat`` composite and the corrected BN
canonization (BN merged into the preceding conv, ``eps`` included), for ReLU ResNets
(torchvision / timm ``BasicBlock`` / ``Bottleneck``, plain conv stems or deep stems) and for
ReLU/ReLU6 inverted-residual networks and plain CNNs (timm EfficientNet-Lite / MobileNet blocks,
torchvision MobileNetV2, VGG-BN: depthwise convs, TF "same" padding, ``BatchNormAct2d``).
With ReLU6 the layer factor is ``relu6(z) / stab_ε(z)`` instead of ``relu(z) / stab_ε(z)``.

Why one pass suffices. With ``c_l = R_l / stab_ε(z_l)`` the ε-rule at a conv/linear layer reads
``R_in = x ⊙ Wᵀ c_l``. The ReLU below passes relevance unchanged and ``x = relu(z)``, so
``c_{l-1} = (Wᵀ c_l) ⊙ 1[z>0] ⊙ z / stab_ε(z)``: exactly the ordinary gradient, multiplied at
every layer output by ``z / stab_ε(z)``. Residual sums and average pools (zennit's ``Norm``
rule) multiply by ``s / stab_δ(s)`` with their own stabilizer ``δ`` (1e-6); max pooling,
flatten and BN-after-merge are plain gradients. The output relevance is ``one-hot(target)``
(``seed="one_hot"``, zennit's and the paper's convention: the top factor is
``1 / stab_ε(logit)``) or ``one-hot(target) ⊙ logit`` (``seed="logit"``: ``logit / stab_ε(logit)``),
and at the first conv the relevance ``R_z1 = z1 ⊙ ∂`` is redistributed by the Flat rule: a
transposed convolution of ones, normalized by the (δ-stabilized) number of inputs in each
receptive field. ``stab_ε(z) = z + ε·sign(z)`` with ``sign(0) = +1`` (zennit's ``stabilize``).

Speed: the model is traced ONCE (``torch.fx``) into a flat op list; each call folds BN
functionally, runs the forward without autograd, keeps one factor tensor per layer and runs
the backward by hand (transposed convolutions only: no parameter gradients, no saved inputs,
no hooks, no host-device syncs). Nothing of the model is modified at any point — parameters,
buffers, modes, ``requires_grad``, hooks and ``.grad`` are only read.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...._checks import check_class_target, check_image_batch, check_nonnegative
from ..._wrappers import unwrap_model
from ...registry import HandWrittenBackend, register_backend
from ...rules import (
    Unsupported,
    bn_scale,
    check_seed,
    crop,
    flat_conv2d,
    pair,
    stab_div,
    stabilize,
    why_unsupported,
)
from .ops import (
    HAS_CONV_POINTWISE,
    act_stab_div,
    activate,
    conv_input_grad,
    conv_relu,
    same_pads,
)
from .plan import Op, Plan, build_plan

__all__ = ["supports", "build", "FastLRP", "FastBackend", "METHODS"]

#: presets this backend computes (ReLU CNNs, :class:`FastLRP`).
METHODS = ("epsilon_flat",)
#: zennit's default stabilizer of the Norm (residual Sum, average pool) and Flat rules.
NORM_STABILIZER = 1e-6


def supports(model: nn.Module, method: str) -> bool:
    """True when :func:`build` reproduces the zennit backend for ``model``/``method``.

    ``"epsilon_flat"``: ReLU ResNets made of torchvision or timm ``BasicBlock``/``Bottleneck``
    (any stem of Conv2d/BatchNorm2d/ReLU/MaxPool2d, global average pool, Linear head); timm
    EfficientNet-Lite/MobileNet blocks (``InvertedResidual``, ``DepthwiseSeparableConv``,
    ``BatchNormAct2d`` with ReLU/ReLU6, ``Conv2dSame``), torchvision MobileNetV2 and VGG(-BN).
    Never raises for a bad model.
    """
    return method in METHODS and isinstance(model, nn.Module) and why_unsupported(build_plan, model) is None


def build(model: nn.Module, method: str = "epsilon_flat", **kwargs: Any) -> "FastLRP":
    """:class:`FastLRP` for ``method``; ``kwargs`` go to its constructor. ``ValueError`` when
    the model is not supported (check :func:`supports` first)."""
    return FastLRP(model, method, **kwargs)


class FastBackend(HandWrittenBackend):
    """Registry entry ``"fast"`` (:mod:`reldrop.attribution.registry`): :func:`supports` / :func:`build`.

    Custom ``canonizers``/``first_layers`` are refused (the plan hard-codes the default
    canonization and input layer).
    """

    name = "fast"
    methods = METHODS
    title = "backend='fast'"

    def accepts(self, model: nn.Module, method: str) -> bool:
        return supports(model, method)

    def build(self, model: nn.Module, method: str, *, canonizers: Any = None, first_layers: Any = None,
              **kwargs: Any) -> "FastLRP":
        return build(model, method, **kwargs)


class FastLRP:
    """ε-LRP (Flat first layer) of a ReLU ResNet in one hand-written backward pass.

    Build once per model (traces the model; raises ``ValueError`` when :func:`supports` is
    False), then call ``lrp(x, target)`` with ``x`` ``(B, C, H, W)`` float and ``target`` a
    ``(B,)`` integer tensor of class indices (or the string ``"predicted"``). Returns the input
    relevance, same shape/dtype/device as ``x``, detached. Attribution always uses eval-mode
    semantics (BN running statistics, dropout off) without changing the model's mode.

    Args:
        model: the network (DDP / DataParallel / ``torch.compile`` wrappers are unwrapped).
        method: ``"epsilon_flat"``.
        epsilon: ε of the conv/linear layers (default 1e-3, the paper's Table 3 value).
        stabilizer: δ of the Norm (residual sum, average pool) and Flat rules (zennit: 1e-6).
        seed: output relevance, ``"one_hot"`` (default; relevance sums to ≈ 1) or ``"logit"``
            (``one_hot · logit``; relevance sums to ≈ the target logit).
    """

    def __init__(self, model: nn.Module, method: str = "epsilon_flat", *, epsilon: float = 1e-3,
                 stabilizer: float = NORM_STABILIZER, seed: str = "one_hot") -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS} for FastLRP (zplus_flat on point nets: "
                             f"reldrop.attribution.backends.points.FastPointLRP), got {method!r}")
        for name, val in (("epsilon", epsilon), ("stabilizer", stabilizer)):
            check_nonnegative(name, val)
        try:
            self._plan: Plan = build_plan(model)
        except Unsupported as exc:
            raise ValueError(f"the fast LRP backend does not handle this model ({exc}); "
                             f"use backend='zennit'") from exc
        check_seed(seed)
        last = self._plan.ops[-1]
        if seed == "one_hot" and not (last.kind == "linear" and last.out == self._plan.output_slot
                                      and not last.act and last.rule != "flat"):
            raise ValueError("the fast LRP backend needs a final Linear layer for seed='one_hot'; "
                             "use backend='zennit'")
        self.seed = seed
        self.model = unwrap_model(model)
        self.method = method
        self.epsilon = float(epsilon)
        self.stabilizer = float(stabilizer)
        #: compute in channels_last (NHWC) memory format; None = on CPU only. Same maths.
        self.channels_last: bool | None = None

    def __repr__(self) -> str:
        return (f"FastLRP({type(self.model).__name__}, method={self.method!r}, "
                f"epsilon={self.epsilon}, ops={len(self._plan.ops)})")

    # ------------------------------------------------------------------------------------
    def __call__(self, x: torch.Tensor, target: torch.Tensor | str) -> torch.Tensor:
        check_image_batch(x)
        check_class_target(target, x.shape[0], self._plan.num_classes)  # one sync, before any work
        if not bool(torch.isfinite(x).all()):  # the zero-masking of the backward would hide NaNs
            raise ValueError("x holds NaN or infinite values; relevance of such an input is meaningless")
        with torch.no_grad(), torch.autocast(device_type=x.device.type, enabled=False):
            return self._run(x.detach(), target)

    # ------------------------------------------------------------------------------------
    def _folded(self, op: Op, dtype: torch.dtype, cl: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Weight and bias of ``op.module`` with its BatchNorm merged (eps included).

        ``cl``: return a 4-D weight in channels_last layout (written directly by the merge, so
        oneDNN does not re-layout it in both the forward and the transposed convolution).
        """
        m = op.module
        w = m.weight
        b = m.bias
        bn = op.bn
        cl = cl and w.ndim == 4
        if bn is not None:
            scale = bn_scale(bn)
            scale_w = scale.reshape(-1, *([1] * (w.ndim - 1)))
            if cl:
                out = torch.empty_like(w, dtype=torch.result_type(w, scale_w),
                                       memory_format=torch.channels_last)
                w = torch.mul(w, scale_w, out=out)
            else:
                w = w * scale_w
            shift = -bn.running_mean if b is None else b - bn.running_mean
            b = shift * scale
            if bn.bias is not None:
                b = b + bn.bias
        if w.dtype != dtype:
            w = w.to(dtype)
            b = None if b is None else b.to(dtype)
        if cl and not w.is_contiguous(memory_format=torch.channels_last):
            w = w.contiguous(memory_format=torch.channels_last)
        return w, b

    def _run(self, x: torch.Tensor, target: torch.Tensor | str) -> torch.Tensor:
        plan = self._plan
        eps, delta = self.epsilon, self.stabilizer
        vals: list[Any] = [None] * plan.n_slots
        cl = self.channels_last if self.channels_last is not None else x.device.type == "cpu"
        if cl:  # oneDNN convolutions are ~25 % faster on NHWC than on NCHW on CPU
            x = x.contiguous(memory_format=torch.channels_last)
        vals[plan.input_slot] = x
        store: list[Any] = [None] * len(plan.ops)
        fuse_relu = cl and x.device.type == "cpu" and x.dtype == torch.float32 and HAS_CONV_POINTWISE

        # ---- forward (no autograd): values, and the per-op factor for the backward ----
        for i, op in enumerate(plan.ops):
            kind = op.kind
            if kind == "conv" or kind == "linear":
                inp = vals[op.ins[0]]
                w, b = self._folded(op, inp.dtype, cl)
                act = "relu" if op.act is True else op.act
                fused = False
                pads = None
                if kind == "conv":
                    m = op.module
                    if op.same_pad:  # timm Conv2dSame: explicit TF "same" zero padding
                        pads = same_pads(inp.shape, m)
                        inp = F.pad(inp, pads)
                    if act == "relu" and fuse_relu:
                        try:  # oneDNN conv with a ReLU post-op: one pass less, same numbers
                            z = conv_relu(inp, w, b, m)
                            fused = True
                        except RuntimeError:
                            z = F.conv2d(inp, w, b, m.stride, m.padding, m.dilation, m.groups)
                    else:
                        z = F.conv2d(inp, w, b, m.stride, m.padding, m.dilation, m.groups)
                else:
                    z = F.linear(inp, w, b)
                if op.rule == "flat":
                    if act:
                        z = activate(z, act, fused)
                    fac = z  # R_z1 = z1 ⊙ grad (Flat redistributes it below)
                    store[i] = (fac, inp.shape, None, pads)
                elif act:
                    z, fac = act_stab_div(z, act, eps, fused)
                    store[i] = (fac, inp.shape, w, pads)
                else:
                    store[i] = (stab_div(z, eps), inp.shape, w, pads)
                vals[op.out] = z
            elif kind == "add":
                s = vals[op.ins[0]] + vals[op.ins[1]]
                act = "relu" if op.act is True else op.act
                if act:
                    s, store[i] = act_stab_div(s, act, delta, False)
                else:
                    store[i] = stab_div(s, delta)
                vals[op.out] = s
            elif kind == "relu":
                y = torch.relu(vals[op.ins[0]])
                store[i] = y
                vals[op.out] = y
            elif kind == "relu6":
                inp = vals[op.ins[0]]
                y = F.relu6(inp)
                # relevance passes; relative to the producer's z/stab(z) the factor is relu6(z)/z
                store[i] = torch.where(inp > 0, y / inp, 0.0)
                vals[op.out] = y
            elif kind == "avgpool":
                inp = vals[op.ins[0]]
                o = F.adaptive_avg_pool2d(inp, op.module.output_size)
                store[i] = (stab_div(o, delta), inp)
                vals[op.out] = o
            elif kind == "maxpool":
                m = op.module
                inp = vals[op.ins[0]]
                y, idx = F.max_pool2d(inp, m.kernel_size, m.stride, m.padding, m.dilation,
                                      ceil_mode=m.ceil_mode, return_indices=True)
                store[i] = (inp, idx)
                vals[op.out] = y
            elif kind == "gap":
                inp = vals[op.ins[0]]
                o = inp.mean(dim=(-2, -1), keepdim=True)
                store[i] = (stab_div(o, delta), inp.shape)
                vals[op.out] = o
            elif kind == "flatten":
                inp = vals[op.ins[0]]
                store[i] = inp.shape
                vals[op.out] = inp.flatten(op.start_dim)
            else:  # pragma: no cover - build_plan emits only the kinds above
                raise RuntimeError(f"unknown op {kind}")
            for s_ in op.free_after:
                if s_ != plan.input_slot:
                    vals[s_] = None

        logits = vals[plan.output_slot]
        del vals  # the forward values are dead: free them before the backward
        if logits.ndim != 2:
            raise ValueError(f"the model must return logits (B, classes), got {tuple(logits.shape)}")
        index = logits.argmax(dim=1) if isinstance(target, str) else target.to(logits.device).long()
        seed = torch.zeros_like(logits).scatter_(1, index.unsqueeze(1), 1.0)
        if self.seed == "one_hot":  # R_out = one-hot: the top factor is 1 / stab_ε(z) instead of z / stab_ε(z)
            fac, in_shape, w, pads = store[-1]
            store[-1] = (stabilize(logits, eps).reciprocal_(), in_shape, w, pads)

        # ---- backward by hand ----
        grads: list[Any] = [None] * plan.n_slots
        grads[plan.output_slot] = seed

        def acc(slot: int, t: torch.Tensor, fresh: bool = False) -> None:
            # ``fresh``: t was just allocated here and nothing else refers to it -> add in place
            old = grads[slot]
            if old is None:
                grads[slot] = t
            elif fresh:
                grads[slot] = t.add_(old)
            else:
                grads[slot] = old + t

        relevance = None
        for i in range(len(plan.ops) - 1, -1, -1):
            op = plan.ops[i]
            g = grads[op.out]
            grads[op.out] = None
            st = store[i]
            store[i] = None
            if g is None:
                continue
            kind = op.kind
            if kind == "conv" or kind == "linear":
                fac, in_shape, w, pads = st
                c = fac.mul_(g)
                if op.rule == "flat":
                    relevance = flat_conv2d(op.module, c, in_shape, delta, pads)
                    continue
                if kind == "conv":
                    m = op.module
                    acc(op.ins[0], crop(conv_input_grad(c, w, in_shape, m), pads), True)
                else:
                    acc(op.ins[0], c.matmul(w), True)
            elif kind == "add":
                c = st.mul_(g)
                acc(op.ins[0], c)
                acc(op.ins[1], c)
            elif kind == "relu":
                acc(op.ins[0], torch.where(st > 0, g, 0.0), True)
            elif kind == "relu6":
                acc(op.ins[0], st.mul_(g), True)
            elif kind == "avgpool":
                fac, inp = st
                acc(op.ins[0], torch.ops.aten._adaptive_avg_pool2d_backward(fac.mul_(g), inp), True)
            elif kind == "maxpool":
                inp, idx = st
                m = op.module
                acc(op.ins[0], torch.ops.aten.max_pool2d_with_indices_backward(
                    g, inp, pair(m.kernel_size), pair(m.stride), pair(m.padding),
                    pair(m.dilation), m.ceil_mode, idx), True)
            elif kind == "gap":
                fac, in_shape = st
                c = fac.mul_(g).div_(in_shape[-1] * in_shape[-2])
                acc(op.ins[0], c.expand(in_shape))
            elif kind == "flatten":
                acc(op.ins[0], g.reshape(st))
        if relevance is None:  # pragma: no cover - the first conv always reads the input
            raise RuntimeError("relevance did not reach the input")
        return relevance


register_backend("fast", FastBackend())  # ahead of the general fallback
