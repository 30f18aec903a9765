"""No silent garbage: find the layers an LRP preset has no rule for, before attributing.

The zennit composites give rules to conv/linear layers, merged BatchNorms, activations, residual
``Sum`` modules and average pools. Any other module that *changes the signal* would be crossed by
the plain gradient (or, for zennit's ``Activation`` list, which contains ``MultiheadAttention``,
by a ``Pass`` that ignores what it computes): the relevance is then meaningless - measured: a CNN
with GroupNorm gets relevance summing to exactly 0 for every sample, a timm ViT 1e18-1e23. So
before an LRP preset runs, :func:`lrp_coverage_problems` lists

* normalization layers other than a BatchNorm that the canonizers merge into the conv/linear layer
  before it (GroupNorm, LayerNorm (incl. timm's LayerNorm2d), InstanceNorm, LocalResponseNorm,
  RMSNorm, BatchNorm without running statistics, BatchNorm the canonizers leave unmerged, e.g.
  pre-activation BN),
* attention (``nn.MultiheadAttention``, any module class named ``*Attention*``), softmax modules,
  squeeze-excitation gates (torchvision ``SqueezeExcitation``, timm ``SqueezeExcite``/``SEModule``),
* leaf modules with parameters of their own that are not conv/linear/BatchNorm/PReLU (an unknown
  parametrized layer or activation),
* functional calls in the traced forward (``torch.fx``, best effort: skipped when the model does
  not trace) of softmax, layer/group/instance/local-response norm, functional batch norm and
  ``scaled_dot_product_attention``,

each as ``"path: Type"`` (e.g. ``"features.3: GroupNorm"``). The zennit backend refuses such a
model for LRP presets with an error naming them and the way out (``method="gradient_x_input"`` or
``"gradient"``, which work on any model, or a backend/canonizer with a rule for them).
"""
from __future__ import annotations

import re
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from zennit.types import BatchNorm as _BatchNormType
from zennit.types import Linear as _LinearType

from .state import preserve_model_state

__all__ = ["lrp_coverage_problems", "coverage_message", "WAY_OUT"]

#: what the error suggests instead
WAY_OUT = ('use method="gradient_x_input" (or "gradient"), which works on any model, or register a backend '
           "(reldrop.attribution.register_backend) or canonizer with an LRP rule for them")

_NORMS: tuple[type, ...] = (nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm,
                            nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)
if hasattr(nn, "RMSNorm"):
    _NORMS = _NORMS + (nn.RMSNorm,)
_SOFTMAX = (nn.Softmax, nn.Softmin, nn.LogSoftmax, nn.Softmax2d)
_PARAM_OK = (nn.PReLU,)
_GATE_NAMES = ("SqueezeExcitation", "SqueezeExcite", "SEModule", "EffectiveSEModule")
_BAD_FUNCTIONS = {
    F.softmax: "softmax", torch.softmax: "softmax", F.log_softmax: "log_softmax", F.softmin: "softmin",
    F.layer_norm: "layer_norm", F.group_norm: "group_norm", F.instance_norm: "instance_norm",
    F.local_response_norm: "local_response_norm", F.batch_norm: "functional batch_norm",
    F.scaled_dot_product_attention: "scaled_dot_product_attention",
}
_BAD_METHODS = {"softmax": "softmax", "log_softmax": "log_softmax"}


def _type_problem(module: nn.Module) -> str | None:
    """Why this module type has no LRP rule (None: it has one, or it is a container)."""
    name = type(module).__name__
    if isinstance(module, _NORMS):
        return name
    if isinstance(module, nn.MultiheadAttention) or "Attention" in name:
        return name
    if isinstance(module, _SOFTMAX):
        return name
    if name in _GATE_NAMES:
        return f"{name} (multiplicative gate)"
    if re.search(r"Norm([123]d)?$", name) and not isinstance(module, _BatchNormType):
        return name  # e.g. custom RMSNorm / LayerNorm variants that do not subclass torch's
    return None


def _own_params(module: nn.Module) -> bool:
    return any(p is not None for p in module._parameters.values())


def _leaf_problems(model: nn.Module) -> list[str]:
    problems: list[str] = []
    skip_below: list[str] = []
    for path, module in model.named_modules():
        if any(path.startswith(p + ".") for p in skip_below):
            continue
        why = _type_problem(module)
        if why is not None:
            problems.append(f"{path or '<model>'}: {why}")
            skip_below.append(path)  # its children are part of the same problem
            continue
        if isinstance(module, _BatchNormType):
            if getattr(module, "running_mean", None) is None or getattr(module, "running_var", None) is None:
                problems.append(f"{path}: {type(module).__name__} without running statistics")
            continue
        if isinstance(module, (_LinearType,) + _PARAM_OK) or not _own_params(module):
            continue
        if not list(module.children()):
            problems.append(f"{path or '<model>'}: {type(module).__name__} (parameters, no LRP rule)")
    return problems


def _unmerged_batchnorms(model: nn.Module, canonizers: Sequence[Any]) -> list[str]:
    """BatchNorms the canonizers do not reduce to the identity (they would change the signal
    under a Pass rule). Applies and removes the canonizers once, model state preserved."""
    bns = [(path, m) for path, m in model.named_modules()
           if isinstance(m, _BatchNormType) and getattr(m, "running_mean", None) is not None
           and getattr(m, "running_var", None) is not None]
    if not bns:
        return []
    out: list[str] = []
    with preserve_model_state(model), torch.no_grad():
        instances: list[Any] = []
        try:
            try:
                for canonizer in canonizers:
                    instances += canonizer.apply(model)
            except Exception:  # a broken canonizer fails the attribution call itself, with its own error
                return []
            for path, bn in bns:
                # merged = reduced to mean 0 / var 1 / weight 1 / bias 0 (zennit's own merge keeps eps:
                # a known 1/sqrt(1 + eps) scale, not garbage; reldrop's canonizers also zero eps)
                identity = (
                    bool((bn.running_mean == 0).all()) and bool((bn.running_var == 1).all())
                    and (bn.weight is None or bool((bn.weight == 1).all()))
                    and (bn.bias is None or bool((bn.bias == 0).all()))
                )
                if not identity:
                    out.append(f"{path}: {type(bn).__name__} not merged into a conv/linear layer before it")
        finally:
            for instance in reversed(instances):
                instance.remove()
    return out


def _functional_problems(model: nn.Module) -> list[str]:
    """Functional calls without an LRP rule in the fx-traced forward (best effort: [] if untraceable)."""
    from .tracing import LeafTracer  # tracer that keeps timm's leaf modules whole

    try:
        graph = LeafTracer().trace(model)
    except Exception:  # data-dependent control flow etc.: the module checks still apply
        return []
    problems = []
    for node in graph.nodes:
        what = None
        if node.op == "call_function":
            what = _BAD_FUNCTIONS.get(node.target)
        elif node.op == "call_method":
            what = _BAD_METHODS.get(str(node.target))
        if what is not None:
            stack = node.meta.get("nn_module_stack") or {}
            owner = list(stack.values())[-1][0] if stack else "<model>"
            problems.append(f"{owner or '<model>'}: {what} (functional call in forward)")
    return problems


def lrp_coverage_problems(model: nn.Module, canonizers: Sequence[Any] | None = None) -> list[str]:
    """``"path: Type"`` for every module/call an LRP preset has no rule for (empty: all covered).

    ``canonizers``: those the attribution will apply (default: ``canonizers_for(model)``); used
    to check that every BatchNorm gets merged. The model is left unchanged.
    """
    from .canonizers import canonizers_for

    problems = _leaf_problems(model)
    canon = list(canonizers) if canonizers is not None else canonizers_for(model)
    problems += _unmerged_batchnorms(model, canon)
    problems += [p for p in _functional_problems(model) if p not in problems]
    return list(dict.fromkeys(problems))


def coverage_message(method: str, problems: Sequence[str], limit: int = 12) -> str:
    """The error text: which modules, where, and the way out."""
    shown = ", ".join(problems[:limit]) + (f", ... ({len(problems) - limit} more)" if len(problems) > limit else "")
    return (f"method {method!r} (LRP) has no rule for these layers - a plain gradient would pass through "
            f"them although they change the signal, and the relevance would be meaningless: {shown}; {WAY_OUT}")

