"""One registry for every model of the project (timm-style): ``register``, ``build``, ``names``."""
from __future__ import annotations

from typing import Any, Callable

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


def names() -> list[str]:
    """Sorted names of all registered models."""
    _load_builtin()
    return sorted(_REGISTRY)


def build(name: str, num_classes: int = 10, **kwargs: Any) -> nn.Module:
    """Build the model registered as ``name``. No weights are downloaded, ever."""
    _load_builtin()
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(_REGISTRY))}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    return _REGISTRY[name](num_classes=num_classes, **kwargs)


_BUILTIN_MODULES = ("resnet_cifar", "resnet_imagenet", "small_cnn", "pointnet", "pointnet2", "vit", "efficientnet",
                    "torchvision_cnns")
_loaded = False


def _load_builtin() -> None:
    """Import the model modules that register themselves (modules not present are skipped)."""
    global _loaded
    if _loaded:
        return
    import importlib

    for mod in _BUILTIN_MODULES:
        try:
            importlib.import_module(f"reldrop.models.{mod}")
        except ModuleNotFoundError as err:  # a module of this list that does not exist yet
            if err.name != f"reldrop.models.{mod}":
                raise
    _loaded = True
