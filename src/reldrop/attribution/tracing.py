"""The ``torch.fx`` tracer of the attribution package: torch.nn modules stay leaves (fx's default),
and so do timm's ``Conv2dSame``, ``BatchNormAct2d`` and ``DropPath`` (their forwards read tensor
sizes / the training flag). Symbolic tracing never runs the model's real forward and never touches
its parameters, buffers, modes or hooks. Used by the fast CNN backend's plan and by the coverage
check of the functional calls in a forward."""
from __future__ import annotations

import threading
from typing import Any

import torch.fx as fx
import torch.nn as nn

__all__ = ["LeafTracer", "timm_leaf_types"]


def timm_leaf_types() -> tuple[type, ...]:
    """timm modules traced as leaves: TF-"same" conv, BN+activation, drop path (empty without timm)."""
    try:
        from timm.layers import BatchNormAct2d, Conv2dSame, DropPath
    except Exception:  # pragma: no cover - timm is optional or changed
        return ()
    return (Conv2dSame, BatchNormAct2d, DropPath)


#: one fx trace at a time in this process (each patches torch.nn.Module globally while it runs)
_TRACE_LOCK = threading.RLock()


class LeafTracer(fx.Tracer):
    """torch.nn modules stay leaves (default behaviour); so do timm's Conv2dSame, BatchNormAct2d
    and DropPath (their forwards read tensor sizes / the training flag).

    A trace patches ``torch.nn.Module`` process-wide while it runs, so it holds the model's lock
    (:func:`~reldrop.attribution.state.model_lock`, also held by every attribution call on that
    model) and :data:`_TRACE_LOCK` (one trace at a time)."""

    def trace(self, root: Any, concrete_args: Any = None) -> fx.Graph:
        from .state import model_lock

        if not isinstance(root, nn.Module):
            with _TRACE_LOCK:
                return super().trace(root, concrete_args)
        with model_lock(root), _TRACE_LOCK:  # always in this order (an attribution call holds the model lock)
            return super().trace(root, concrete_args)

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        leaf_types = timm_leaf_types()
        if leaf_types and type(m) in leaf_types:
            return True
        return super().is_leaf_module(m, module_qualified_name)
