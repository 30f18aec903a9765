"""The one ``torch.fx`` tracer every attribution backend uses: :func:`trace_model`.

``trace_model(model)`` returns a :class:`torch.fx.GraphModule` of the (unwrapped) model's
*eval-mode* forward (``if self.training`` branches are taken as in eval mode; the model's modes
are put back afterwards, :func:`~reldrop.attribution.state.preserve_model_state`). Leaves (nodes
``call_module``) are

* every ``torch.nn`` module (fx's default: ``nn.Conv2d``, ``nn.BatchNorm2d``, ``nn.LayerNorm``,
  activations, pools, ``nn.MultiheadAttention``, ``nn.LSTM``, ...; not ``nn.Sequential``),
* timm's modules whose forward reads tensor sizes or the training flag and that LRP handles as
  one layer (:data:`TIMM_LEAF_NAMES`: ``Conv2dSame``, ``StdConv2dSame``, ``ScaledStdConv2dSame``,
  ``BatchNormAct2d``, ``FrozenBatchNormAct2d``, ``SyncBatchNormAct``, ``AvgPool2dSame``,
  ``MaxPool2dSame``, ``CondConv2d``, ``InplaceAbn``),
* only if the model cannot be traced otherwise: every module timm registers as not traceable
  (``timm.layers.get_notrace_modules()``, e.g. ``NormFreeBlock``, ``MobileVitBlock``); a backend
  without a rule for such a leaf refuses it by name.

Functions timm registers as not traceable (``timm.layers.get_notrace_functions()``, e.g. Swin's
``window_reverse``) and the ``math`` module stay single ``call_function`` nodes; so do
torchvision.ops functions. Everything else (timm ``LayerNorm2d``, ``StdConv2d``, ``Linear``,
``SqueezeExcite``, ``DropPath``, torchvision ``StochasticDepth``, ...) is traced into torch
functions / tensor methods.

The graph is cached per model (weakly) and re-traced when the module tree changes (a module
added, removed or replaced); do not mutate the returned graph. Parameters and buffers are read
from the model by the caller, not from the GraphModule, when values matter.

Raises :class:`TraceError` (a ``ValueError``) when fx cannot trace the model, with fx's reason
(data-dependent control flow, ``len()`` of a tensor, ...).
"""
from __future__ import annotations

import math
import threading
import weakref
from typing import Any, Callable

import torch.fx as fx
import torch.nn as nn

from ._wrappers import unwrap_model
from .state import model_lock, preserve_model_state

__all__ = ["trace_model", "TraceError", "TIMM_LEAF_NAMES", "module_signature", "leaf_types", "function_name"]

#: timm classes kept as leaves (LRP rules exist for them as whole layers)
TIMM_LEAF_NAMES = (
    "Conv2dSame", "StdConv2dSame", "ScaledStdConv2dSame", "BatchNormAct2d", "FrozenBatchNormAct2d",
    "SyncBatchNormAct", "AvgPool2dSame", "MaxPool2dSame", "CondConv2d", "InplaceAbn",
)


class TraceError(ValueError):
    """``torch.fx`` cannot trace the model (the message says why)."""


def _timm_notrace() -> tuple[set[type], set[Callable]]:
    try:
        import timm.models  # noqa: F401 (registers every model family's notrace modules/functions)
        from timm.layers import get_notrace_functions, get_notrace_modules
    except Exception:  # pragma: no cover - timm optional
        return set(), set()
    return set(get_notrace_modules()), set(get_notrace_functions())


def leaf_types(all_timm: bool = False) -> set[type]:
    """Non-``torch.nn`` classes traced as leaves (``all_timm``: every timm notrace module)."""
    modules, _ = _timm_notrace()
    if all_timm:
        return set(modules)
    return {m for m in modules if m.__name__ in TIMM_LEAF_NAMES and m.__module__.startswith("timm.")}


def _autowrap_functions() -> tuple[Callable, ...]:
    _, funcs = _timm_notrace()
    out = [f for f in funcs if callable(f)]
    try:
        import torchvision.ops as tv_ops  # noqa: F401
    except Exception:  # pragma: no cover
        pass
    return tuple(out)


#: one fx trace at a time in this process (each patches torch.nn.Module globally while it runs)
_TRACE_LOCK = threading.RLock()


class _Tracer(fx.Tracer):
    """fx's tracer with this module's leaves (``leaves`` besides fx's default torch.nn modules).

    A trace patches ``torch.nn.Module`` process-wide while it runs, so it holds the model's lock
    (:func:`~reldrop.attribution.state.model_lock`, also held by every attribution call on that
    model) and :data:`_TRACE_LOCK` (one trace at a time), always in this order."""

    def __init__(self, leaves: set[type], autowrap: tuple[Callable, ...]) -> None:
        mods: tuple[Any, ...] = (math,)
        super().__init__(autowrap_modules=mods, autowrap_functions=autowrap)
        self._leaves = leaves

    def trace(self, root: Any, concrete_args: Any = None) -> fx.Graph:
        with model_lock(root), _TRACE_LOCK:  # an attribution call holds the model lock already
            return super().trace(root, concrete_args)

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if type(m) in self._leaves:
            return True
        return super().is_leaf_module(m, module_qualified_name)


def module_signature(model: nn.Module) -> tuple:
    """What decides the traced structure: each submodule's name, identity and class."""
    return tuple((name, id(m), type(m)) for name, m in model.named_modules(remove_duplicate=False))


_CACHE: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple, fx.GraphModule]]" = weakref.WeakKeyDictionary()


def _trace(model: nn.Module, leaves: set[type]) -> fx.GraphModule:
    tracer = _Tracer(leaves, _autowrap_functions())
    with preserve_model_state(model):  # fx may set tensor constants (``_tensor_constant0``) on the root
        model.eval()
        graph = tracer.trace(model)
        gm = fx.GraphModule(tracer.root, graph, type(model).__name__)  # copies them before they are removed
    return gm


def trace_model(model: nn.Module) -> fx.GraphModule:
    """The eval-mode fx graph of ``model`` (wrappers unwrapped), cached per model.

    Tries the small leaf set first (torch.nn + :data:`TIMM_LEAF_NAMES`), then every module timm
    marks as not traceable. Raises :class:`TraceError` naming fx's reason when both fail.
    The model is left unchanged.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    model = unwrap_model(model)
    sig = module_signature(model)
    hit = _CACHE.get(model)
    if hit is not None and hit[0] == sig:
        return hit[1]
    errors = []
    gm = None
    for all_timm in (False, True):
        try:
            gm = _trace(model, leaf_types(all_timm))
            break
        except Exception as exc:  # fx raises TraceError, TypeError, RuntimeError, AssertionError, ...
            errors.append(f"{type(exc).__name__}: {exc}".strip().splitlines()[0][:300])
    if gm is None:
        raise TraceError(f"torch.fx cannot trace {type(model).__name__} ({errors[0]}); "
                         "rewrite the data-dependent part of its forward or register the module as a leaf")
    _CACHE[model] = (sig, gm)
    return gm


def function_name(target: Any) -> str:
    """Readable name of a call_function target (for messages)."""
    mod = getattr(target, "__module__", None) or ""
    name = getattr(target, "__qualname__", None) or getattr(target, "__name__", None) or repr(target)
    if mod in ("_operator", "operator"):
        return f"operator.{name}"
    return f"{mod}.{name}" if mod else name

