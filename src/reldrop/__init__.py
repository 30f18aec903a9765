"""reldrop: Relevance-driven Input Dropout for PyTorch.

Three separate pieces, one job each:

* :mod:`reldrop.attribution` - how relevance is computed (LRP presets via zennit, a fast backend),
* :mod:`reldrop.masks` - how a mask is drawn from relevance (pure tensor functions),
* :class:`reldrop.RelDrop` - when and to what it is applied (the training-loop object).
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "relevance_erase": ("reldrop.masks", "relevance_erase"),
    "random_erase": ("reldrop.masks", "random_erase"),
    "relevance_point_drop": ("reldrop.masks", "relevance_point_drop"),
    "RelDrop": ("reldrop.augment", "RelDrop"),
    "attribution": ("reldrop.attribution", None),
    "models": ("reldrop.models", None),
    "metrics": ("reldrop.metrics", None),
    "shift": ("reldrop.shift", None),
}

__all__ = [
    "RelDrop",
    "relevance_erase",
    "random_erase",
    "relevance_point_drop",
    "attribution",
    "models",
    "metrics",
    "shift",
    "__version__",
]


def __getattr__(name: str) -> Any:  # PEP 562: keep `import reldrop` light (no zennit/matplotlib)
    if name in _LAZY:
        module_name, attr = _LAZY[name]
        module = importlib.import_module(module_name)
        value = module if attr is None else getattr(module, attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'reldrop' has no attribute {name!r}")
