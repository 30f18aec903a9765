"""reldrop: Relevance-driven Input Dropout for PyTorch.

Three separate pieces, one job each:

* :mod:`reldrop.attribution` - how relevance is computed (LRP presets via zennit, a fast backend),
* :mod:`reldrop.masks` - how a mask is drawn from relevance (pure tensor functions),
* :class:`reldrop.RelDrop` - when and to what it is applied (the training-loop object).
"""
from __future__ import annotations

from typing import Any

from ._version import __version__

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


def _load(name: str) -> Any:
    if name in ("relevance_erase", "random_erase", "relevance_point_drop"):
        from . import masks

        return getattr(masks, name)
    if name == "RelDrop":
        from .augment import RelDrop

        return RelDrop
    if name == "attribution":
        import reldrop.attribution as attribution  # not 'from . import': that would ask this __getattr__ again

        return attribution
    if name == "models":
        import reldrop.models as models  # not 'from . import': that would ask this __getattr__ again

        return models
    if name == "metrics":
        import reldrop.metrics as metrics  # not 'from . import': that would ask this __getattr__ again

        return metrics
    if name == "shift":
        import reldrop.shift as shift  # not 'from . import': that would ask this __getattr__ again

        return shift
    raise AttributeError(f"module 'reldrop' has no attribute {name!r}")


def __getattr__(name: str) -> Any:  # PEP 562: keep `import reldrop` light (no zennit/matplotlib)
    value = _load(name)
    globals()[name] = value
    return value
