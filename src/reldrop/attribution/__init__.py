"""How relevance is computed: LRP presets through zennit (+ an optional fast backend).

Public API::

    from reldrop.attribution import attribute, Attributor, preserve_model_state
    R = attribute(model, x, y)                        # epsilon_flat, R.shape == x.shape
    attributor = Attributor(model, "epsilon_flat", epsilon=1e-3)   # once per model
    R = attributor(x, y)                              # per batch; y: LongTensor (B,) or "predicted"

Methods: ``method_names()`` -> epsilon_flat, zplus_flat, epsilon_gamma_box, gradient,
gradient_x_input (see :mod:`reldrop.attribution.presets`; new ones: ``register_preset``).
Backends: "auto", "fast", "zennit" and whatever ``register_backend`` adds - the one place that
decides how a model is attributed is :mod:`reldrop.attribution.backends`.
Canonization (BN merge with zennit's eps bug fixed; torchvision and timm ResNets; generic
conv→BN chains): :mod:`reldrop.attribution.canonize`. Safety contract:
:func:`reldrop.attribution.state.preserve_model_state`.
"""
from __future__ import annotations

from .backends import backend_names, default_method, register_backend, unregister_backend
from . import canonize_points  # noqa: F401 (registers the point-cloud canonizers)
from .canonize import canonizers_for, register_canonizer
from .core import BACKENDS, Attributor, attribute, resolve_method, unwrap_model
from .presets import PRESETS, method_names, register_preset
from .state import preserve_model_state

__all__ = [
    "attribute",
    "Attributor",
    "method_names",
    "PRESETS",
    "BACKENDS",
    "backend_names",
    "register_backend",
    "unregister_backend",
    "default_method",
    "resolve_method",
    "register_preset",
    "canonizers_for",
    "register_canonizer",
    "preserve_model_state",
    "unwrap_model",
]
