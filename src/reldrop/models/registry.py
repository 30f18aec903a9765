"""One registry for every model of the project (timm-style): ``register`` (``build`` and ``names``
are in :mod:`reldrop.models.catalog`, which imports the built-in model modules)."""
from __future__ import annotations

from types import MappingProxyType
from typing import Callable, Mapping

import torch.nn as nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register a builder ``fn(num_classes=..., **kwargs) -> nn.Module`` under ``name``."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model name {name!r} is already registered")
        _REGISTRY[name] = fn
        return fn

    return deco


def builders() -> Mapping[str, Callable[..., nn.Module]]:
    """The registered builders ``{name: fn}`` (a read-only view; :mod:`reldrop.models.catalog` fills it)."""
    return MappingProxyType(_REGISTRY)
