"""Model registry: ``reldrop.models.build(name, num_classes=..., **kwargs)`` and ``names()``;
``load_init(model, path, strict=True, reinit_head=False)`` for user checkpoints."""
from .checkpoint import load_init
from .catalog import build, names
from .registry import register

__all__ = ["build", "names", "register", "load_init"]
