"""How relevance is computed: LRP presets through registered backends (zennit and hand-written ones).

Public API::

    from reldrop.attribution import attribute, Attributor, preserve_model_state
    R = attribute(model, x, y)                        # epsilon_flat, R.shape == x.shape
    attributor = Attributor(model, "epsilon_flat", epsilon=1e-3)   # once per model
    R = attributor(x, y)                              # per batch; y: LongTensor (B,) or "predicted"

Methods: ``method_names()`` -> epsilon_flat, zplus_flat, epsilon_gamma_box, gradient,
gradient_x_input (see :mod:`reldrop.attribution.presets`; new ones: ``register_preset``).
Backends: "auto", "fast" (ReLU CNNs), "points" (reldrop's point nets), "vit" (Vision
Transformers), "zennit" (the general fallback) and whatever ``register_backend`` adds - the one
place that decides how a model is attributed is :mod:`reldrop.attribution.registry`; the built-in
backends live in :mod:`reldrop.attribution.backends`, one subpackage each, and register themselves.

Layout: :mod:`.core` (``attribute``/``Attributor``), :mod:`.presets` (methods), :mod:`.registry`
(backend selection), :mod:`.backends` (zennit, fast, points, vit), :mod:`.canonizers` (BN merge with
zennit's eps bug fixed; torchvision and timm ResNets; inverted residuals; point nets; generic
conv→BN chains), :mod:`.rules` (the numerics the backends share), :mod:`.coverage` (layers without
an LRP rule), :mod:`._trace` (the fx tracer), :mod:`.check` (bias-free conservation),
:mod:`.state` (the safety contract, :func:`~reldrop.attribution.state.preserve_model_state`).
"""
from __future__ import annotations

from . import backends  # noqa: F401 (each backend registers itself)
from .canonizers import canonizers_for, register_canonizer
from .core import BACKENDS, Attributor, attribute, resolve_method, unwrap_model
from .presets import PRESETS, method_names, register_preset
from .registry import backend_names, default_method, register_backend, unregister_backend
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
