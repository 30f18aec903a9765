"""Model registry: ``reldrop.models.build(name, num_classes=..., **kwargs)`` and ``names()``."""
from .registry import build, names, register

__all__ = ["build", "names", "register"]
