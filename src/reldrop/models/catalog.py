"""The models by name: :func:`build` and :func:`names` over the builders of
:mod:`reldrop.models.registry`. The built-in model modules register themselves when imported; they
are imported on the first call (so ``import reldrop.models`` stays light).
"""
from __future__ import annotations

from typing import Any

import torch.nn as nn

from .registry import builders

__all__ = ["build", "names"]

_loaded = False


def _load_builtin() -> None:
    global _loaded
    if _loaded:
        return
    from . import (  # noqa: F401 (they register)
        efficientnet,
        pointnet,
        pointnet2,
        resnet_cifar,
        resnet_imagenet,
        small_cnn,
        torchvision_cnns,
        vit,
    )

    _loaded = True


def names() -> list[str]:
    """Sorted names of all registered models."""
    _load_builtin()
    return sorted(builders())


def build(name: str, num_classes: int = 10, **kwargs: Any) -> nn.Module:
    """Build the model registered as ``name``, or any timm / torchvision classifier as
    ``"timm/<name>"`` / ``"torchvision/<name>"`` (:mod:`reldrop.models.zoo`). No weights are
    downloaded, ever."""
    from . import zoo

    _load_builtin()
    registered = builders()
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if name not in registered and zoo.is_zoo_name(name):
        return zoo.build(name, num_classes=num_classes, **kwargs)
    if name not in registered:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(registered))}, "
                         "or any timm/<name> or torchvision/<name>")
    return registered[name](num_classes=num_classes, **kwargs)
