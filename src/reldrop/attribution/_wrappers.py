"""``unwrap_model``: the module that attribution evaluates, without DP/DDP/compile wrappers.

A leaf module (imports only torch) so that every backend can use it without importing
:mod:`.core` (no import cycles between core and the backends).
"""
from __future__ import annotations

import torch.nn as nn

__all__ = ["unwrap_model"]


def unwrap_model(model: nn.Module) -> nn.Module:
    """Strip DataParallel/DistributedDataParallel (``.module``) and torch.compile (``._orig_mod``) wrappers."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    wrappers: tuple[type, ...] = (nn.DataParallel, nn.parallel.DistributedDataParallel)
    for _ in range(16):
        inner = getattr(model, "module", None) if isinstance(model, wrappers) else getattr(model, "_orig_mod", None)
        if isinstance(inner, nn.Module):  # DP/DDP .module, or torch._dynamo OptimizedModule ._orig_mod
            model = inner
        else:
            break
    return model
