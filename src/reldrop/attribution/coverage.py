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
* in the ``torch.fx`` graph of the *canonized* eval-mode forward (:func:`._trace.trace_model`):
  every functional call on the signal whose plain gradient is no LRP rule - adds/subtractions of
  two signals (residuals written ``x + y``, ``+=``: no ``Sum`` module, so no Norm rule; the gradient
  hands the full relevance to both operands), products and divisions (gates, attention, scaling by
  a constant or parameter), sums, softmax, functional norms, convolutions, activations other than
  ReLU, any unknown call - and modules fx kept whole (timm no-trace modules) that have no rule,
  each as ``"path: what [node name]"``. Calls inside a module that has a rule (e.g. the ``Sum``
  the canonizers insert, timm's ``FastAdaptiveAvgPool``) are covered by it. Through data movement
  (reshape, cat, indexing, nearest upsampling, ...), max pooling and ReLU the gradient is an LRP
  rule: not refused. Functional averages (``x.mean``, ``F.avg_pool2d``, bilinear interpolation) are
  refused: their gradient splits relevance uniformly, onto zero activations too,
* BatchNorms that no canonizer merge claims - decided from structure (which BN a merge instance
  holds; the merger pairs by the fx data flow), never from weight values, so a model's verdict does
  not change when it trains.

A model fx cannot trace is checked by its modules only; :func:`lrp_coverage` returns why (the
zennit backend warns). Each problem reads ``"path: Type"`` or ``"path: what [node n]"`` (e.g.
``"features.3: GroupNorm"``). The zennit backend refuses such a model for LRP presets with an error
naming them and the ways out that work (another backend's LRP method where one says it computes
it, ``method="gradient_x_input"``/``"gradient"`` on any model).
"""
from __future__ import annotations

import re
from typing import Any, Sequence

import torch
import torch.nn as nn
from zennit.types import BatchNorm as _BatchNormType
from zennit.types import Linear as _LinearType

from .state import preserve_model_state

__all__ = ["lrp_coverage", "lrp_coverage_problems", "coverage_message", "WAY_OUT"]

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


def _unmerged_batchnorms(model: nn.Module, instances: Sequence[Any], called: set[str] | None) -> list[str]:
    """BatchNorms that no merge among the applied canonizer ``instances`` claims (they would
    change the signal under a Pass rule). Decided from structure - which BN a merge instance
    holds - never from the BN's values (a fresh BN looks like the identity until it trains).
    ``called``: the module paths the traced eval forward runs (None: untraced, check all)."""
    merged = {id(getattr(inst, "batch_norm", None)) for inst in instances}
    return [f"{path}: {type(bn).__name__} not merged into a conv/linear layer before it"
            for path, bn in model.named_modules()
            if isinstance(bn, _BatchNormType) and getattr(bn, "running_mean", None) is not None
            and getattr(bn, "running_var", None) is not None and id(bn) not in merged
            and (called is None or path in called)]


# --------------------------------------------------------------- the traced graph (torch.fx)
#: functions/methods through which the plain gradient *is* an LRP rule: relevance follows the data
#: (reshapes, concatenation, indexing, copies, zero padding, dropout/identity in eval, nearest
#: upsampling), winner-take-all max pooling and ReLU (its gradient masks only outputs that are 0 and
#: carry no relevance). Not here: weight-free *averages* (mean, average pooling, bilinear
#: interpolation) - their gradient splits relevance uniformly, also onto zero activations, where a
#: following ReLU gradient drops it (measured: Σ R / logit 0.57 on a bias-free two-conv net,
#: -1e3 ... 1e3 on torchvision Inception-v3); the average-pool *modules* get the Norm rule
_PASS_OPS = frozenset("""
    getitem getattr flatten unflatten reshape view view_as permute transpose swapaxes swapdims movedim t
    contiguous squeeze unsqueeze cat concat concatenate stack hstack vstack split chunk unbind narrow select
    expand expand_as repeat tile roll flip clone to type type_as float double half bfloat16 cpu cuda
    pad constant_pad_nd dropout dropout1d dropout2d dropout3d alpha_dropout feature_alpha_dropout identity
    relu max_pool1d max_pool2d max_pool3d adaptive_max_pool1d adaptive_max_pool2d adaptive_max_pool3d
    max_pool1d_with_indices max_pool2d_with_indices amax max
    upsample_nearest channel_shuffle pixel_shuffle pixel_unshuffle
""".split())
_AVERAGES = frozenset("""mean avg_pool1d avg_pool2d avg_pool3d adaptive_avg_pool1d adaptive_avg_pool2d
    adaptive_avg_pool3d upsample_bilinear""".split())
#: outputs that carry no relevance (shapes, fresh tensors, detached values)
_CONST_OPS = frozenset("""
    size dim numel new_zeros new_ones new_empty new_full new_tensor zeros_like ones_like empty_like full_like
    rand_like randn_like detach arange zeros ones empty full
""".split())
_META_ATTRS = frozenset({"shape", "dtype", "device", "ndim", "is_cuda", "requires_grad", "layout"})
_ADD_OPS = frozenset({"add", "iadd", "radd", "sub", "isub", "rsub"})
_PRODUCT_OPS = frozenset({"mul", "imul", "rmul", "truediv", "itruediv", "rtruediv", "div", "floordiv",
                          "matmul", "imatmul", "bmm", "mm", "einsum", "baddbmm", "addmm", "pow", "ipow"})
_LABELS = {"add": "add", "iadd": "add (+=)", "radd": "add", "sub": "subtraction", "isub": "subtraction",
           "rsub": "subtraction", "cat": "concatenation"}


def _op_name(node: Any) -> str:
    target = node.target
    name = target if isinstance(target, str) else getattr(target, "__name__", str(target))
    name = name.strip("_")  # in-place methods (add_, relu_), dunders (__iadd__)
    return name


def _rule_owner(module: nn.Module) -> bool:
    """Modules the zennit presets attach a rule to (their own forward's functional calls are
    covered by that rule): conv/linear, BatchNorm, activations, residual ``Sum``, average pools."""
    from zennit.layer import Sum
    from zennit.types import Activation

    from .presets import is_avg_pool

    return isinstance(module, (_LinearType, _BatchNormType, Activation, Sum)) or is_avg_pool(module)


def _owner(node: Any, modules: dict[str, nn.Module]) -> tuple[str, bool]:
    """``(module path of the innermost module running node, whether a rule-bearing module runs it)``."""
    stack = node.meta.get("nn_module_stack") or {}
    paths = [value[0] if isinstance(value, tuple) else key for key, value in stack.items()]
    covered = any(path in modules and _rule_owner(modules[path]) for path in paths)
    return (paths[-1] if paths else "") or "<model>", covered


def _scan_graph(graph: Any, modules: dict[str, nn.Module]) -> list[str]:
    """The problems of one traced forward: signal-changing calls without a rule, and modules fx kept
    whole (no-trace leaves) whose forward nobody checked."""
    import torch.fx as fx

    kind: dict[Any, str] = {}  # node -> "signal" (depends on the input) | "const" (shapes, parameters)

    def signals(args: Any) -> list[Any]:
        found: list[Any] = []
        fx.node.map_arg(args, lambda n: found.append(n) if kind.get(n) == "signal" else None)
        return found

    problems: list[str] = []
    for node in graph.nodes:
        if node.op == "placeholder":
            kind[node] = "signal"
            continue
        if node.op in ("get_attr", "output"):
            kind[node] = "const"
            continue
        inputs = signals((node.args, node.kwargs))
        kind[node] = "signal" if inputs else "const"
        if not inputs:
            continue
        if node.op == "call_module":
            module = modules.get(str(node.target))
            if module is not None and list(module.children()) and not _rule_owner(module):
                problems.append(f"{node.target}: {type(module).__name__} (traced as a whole, its forward "
                                "cannot be checked)")
            continue
        name = _op_name(node)
        if name in _CONST_OPS or (name == "getattr" and len(node.args) > 1 and node.args[1] in _META_ATTRS):
            kind[node] = "const"
            continue
        owner, covered = _owner(node, modules)
        if name in ("interpolate", "upsample") and node.kwargs.get("mode", "nearest") in ("nearest", "nearest-exact"):
            continue  # copies: relevance follows the data
        if covered or name in _PASS_OPS:
            continue
        if name in _AVERAGES or name in ("interpolate", "upsample"):
            what = (f"functional {name} (an average without the Norm rule: its gradient splits relevance uniformly, "
                    "also onto zero activations; use the pooling module)")
        elif name in _ADD_OPS:
            if len(inputs) < 2:
                continue  # a signal plus a constant/parameter: a shift, a sink for the gradient (as a bias)
            what = f"functional {_LABELS.get(name, name)} of two signals (e.g. a residual 'x + y'; no Norm rule)"
        elif name in _PRODUCT_OPS:
            what = (f"functional {name} of two signals (gate/attention product)" if len(inputs) > 1
                    else f"functional {name} by a constant/parameter (would rescale the relevance)")
        else:
            what = f"{name} (functional call in forward)"
        problems.append(f"{owner}: {what} [node {node.name}]")
    return problems


def _graph_problems(model: nn.Module) -> tuple[list[str], set[str] | None, str | None]:
    """``(problems, called module paths, note)`` from the fx graph of the (canonized, eval-mode)
    model; ``note`` says why there is no graph (then only the module checks decide)."""
    from ._trace import trace_model

    try:
        graph = trace_model(model).graph
    except Exception as err:  # data-dependent control flow etc.
        first = (str(err).strip().splitlines() or [""])[0][:200]
        return [], None, (f"torch.fx cannot trace {type(model).__name__} ({type(err).__name__}: {first}); "
                          "only its modules were checked, functional calls in forward were not")
    called = {str(n.target) for n in graph.nodes if n.op == "call_module"}
    called |= {f"{path}.{sub}".strip(".") for path in list(called) for sub, _ in model.get_submodule(path).named_modules()}
    return _scan_graph(graph, dict(model.named_modules())), called, None


def lrp_coverage(model: nn.Module, canonizers: Sequence[Any] | None = None) -> tuple[list[str], str | None]:
    """``(problems, note)``: :func:`lrp_coverage_problems` and, when the model could not be traced
    with ``torch.fx``, why (the functional calls in its forward were then not checked)."""
    from .canonizers import canonizers_for

    problems = _leaf_problems(model)
    canon = list(canonizers) if canonizers is not None else canonizers_for(model)
    note = None
    with preserve_model_state(model), torch.no_grad():
        model.eval()  # the attribution runs in eval mode (dropout / drop-path off)
        instances: list[Any] = []
        try:
            try:
                for canonizer in canon:
                    instances += canonizer.apply(model)
            except Exception:  # a broken canonizer fails the attribution call itself, with its own error
                return list(dict.fromkeys(problems)), None
            graph_problems, called, note = _graph_problems(model)  # the canonized forward (residual Sums)
            problems += _unmerged_batchnorms(model, instances, called) + graph_problems
        finally:
            for instance in reversed(instances):
                instance.remove()
    return list(dict.fromkeys(problems)), note


def lrp_coverage_problems(model: nn.Module, canonizers: Sequence[Any] | None = None) -> list[str]:
    """``"path: Type"`` for every module/call an LRP preset has no rule for (empty: all covered).

    ``canonizers``: those the attribution will apply (default: ``canonizers_for(model)``); used
    to check that every BatchNorm gets merged and to trace the canonized forward. Decided from the
    model's structure only (never from its weights), the model is left unchanged.
    """
    return lrp_coverage(model, canonizers)[0]


def coverage_message(method: str, problems: Sequence[str], limit: int = 12) -> str:
    """The error text: which modules, where, and the way out."""
    shown = ", ".join(problems[:limit]) + (f", ... ({len(problems) - limit} more)" if len(problems) > limit else "")
    return (f"method {method!r} (LRP) has no rule for these layers - a plain gradient would pass through "
            f"them although they change the signal, and the relevance would be meaningless: {shown}; {WAY_OUT}")

