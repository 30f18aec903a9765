"""Named attribution presets: which LRP rule goes on which layer.

Every LRP preset shares zennit's base map (as in zennit's own ``EpsilonPlusFlat`` etc.):

* activations → ``Pass`` (relevance passes unchanged),
* BatchNorm → ``Pass`` (after canonization the BN is the identity),
* residual sums (the ``zennit.layer.Sum`` modules inserted by the canonizers) → ``Norm``
  (proportional split ``R_i = x_i / Σx · R``). The official RelDrop code omitted this rule; then
  the gradient of the sum hands the *full* relevance to both branches and the input relevance of
  a canonized ResNet-18 explodes (measured 1e9-1e12× the logit, random weights); see the tests,
* average pools (``AvgPool*``, ``AdaptiveAvgPool*``, timm's ``FastAdaptiveAvgPool``) → ``Norm``.

Then, per preset (``first`` = the first conv/linear layer *in forward order*, found by a forward
trace once per model, see :class:`~reldrop.attribution.Attributor`):

* ``epsilon_flat`` - Flat on the first layer, Epsilon(ε) on every other conv/linear; ε = 1e-3
  (paper Table 3; the training setup for ResNets).
* ``zplus_flat`` - Flat on the first layer, ZPlus on every other conv/linear (point clouds, RRA).
* ``epsilon_gamma_box`` - ZBox(low, high) on the first layer, Gamma(γ = 0.25) on convs,
  Epsilon(ε = 1e-6, zennit's default) on dense layers (visualization, zennit's EpsilonGammaBox).
* ``gradient`` - the plain gradient ∂ logit_t / ∂x (no canonization, no rules).
* ``gradient_x_input`` - x ⊙ ∂ logit_t / ∂x.
* ``cp_lrp`` - CP-LRP for Vision Transformers (attention probabilities and LayerNorm's 1/σ held
  constant, ε on Linear layers, Flat on the patch embedding); no zennit composite: computed by the
  ``"vit"`` backend (:mod:`reldrop.attribution.backends.vit`; the default method for ViTs) and by
  the ``"graph"`` backend for any fx-traceable model with attention (Swin, CoAtNet, MaxViT, ...;
  :mod:`reldrop.attribution.backends.graph`, where it has the same rules as ``epsilon_flat``).
* ``attnlrp`` - AttnLRP (Achtibat et al. 2024) for Vision Transformers: as ``cp_lrp`` outside
  attention; inside, the softmax rule and the uniform rule on ``A v`` and ``q kᵀ`` (``"vit"`` and
  ``"graph"`` backends).

The ``"graph"`` backend computes ``epsilon_flat``, ``zplus_flat``, ``epsilon_gamma_box``, ``cp_lrp``
and ``attnlrp`` with the rules of its table (:mod:`reldrop.attribution.backends.graph.rules`): BN
folded, LayerNorm/GroupNorm/RMSNorm 1/σ held, gates held, identity rule on activations, the Norm
rule on every sum of signals, ε on weight-free linear maps; it refuses ops without a rule by name.

``stabilizer`` (default 1e-6, zennit's default) is the ε of the Norm/Flat/ZPlus/Gamma/ZBox
denominators. ``epsilon_gamma_box`` needs the input range: ``low``/``high`` (floats or tensors
broadcastable to one sample, e.g. ``(1, C, 1, 1)``), or ``mean``/``std`` normalization constants
from which ``low = (0 - mean)/std`` and ``high = (1 - mean)/std`` are derived.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
from zennit.canonizers import Canonizer
from zennit.core import Composite, Hook
from zennit.layer import Sum
from zennit.rules import Epsilon, Flat, Gamma, Norm, Pass, ZBox, ZPlus
from zennit.types import Activation, AvgPool, BatchNorm, Convolution
from zennit.types import Linear as LinearOrConv

__all__ = ["Preset", "PRESETS", "method_names", "get_preset", "register_preset", "FirstLayerComposite", "is_avg_pool",
           "zbox_bounds"]

Predicate = Callable[[nn.Module], bool]


def _isa(types: Any) -> Predicate:
    return lambda module: isinstance(module, types)


def is_avg_pool(module: nn.Module) -> bool:
    """Average pools that get the Norm rule: torch's (adaptive) avg pools and timm's fast one."""
    if isinstance(module, AvgPool):
        return True
    name = type(module).__name__
    if name == "FastAdaptiveAvgPool":
        return True
    return name == "SelectAdaptivePool2d" and getattr(module, "pool_type", "") == "avg" and not any(
        isinstance(child, AvgPool) for child in module.children()
    )


class FirstLayerComposite(Composite):
    """A zennit Composite: ``first_rule`` on the input layer(s) ``self.first_layers`` (modules, by
    identity, set after a forward trace), then the first matching ``(predicate, rule)`` of ``layer_map``.

    Usually one input layer; models whose input feeds several layers in parallel (PointNet++ MSG:
    one per radius) give all of them the first-layer rule. Build once per model;
    ``register(model)``/``remove()`` per call (zennit ``Composite`` protocol).
    """

    def __init__(
        self,
        layer_map: Sequence[tuple[Predicate, Hook]],
        first_rule: Hook | None = None,
        canonizers: Sequence[Canonizer] | None = None,
    ) -> None:
        self.layer_map = list(layer_map)
        self.first_rule = first_rule
        self.first_layers: tuple[nn.Module, ...] = ()
        super().__init__(module_map=self._module_map, canonizers=list(canonizers or []))

    def _module_map(self, ctx: dict, name: str, module: nn.Module) -> Hook | None:
        if self.first_rule is not None and any(module is m for m in self.first_layers):
            return self.first_rule
        return next((rule for predicate, rule in self.layer_map if predicate(module)), None)


def _base_map(stabilizer: float) -> list[tuple[Predicate, Hook]]:
    """zennit's ``layer_map_base``: Pass on activations and BN, Norm on residual sums and avg pools."""
    return [
        (_isa(Activation), Pass()),
        (_isa(Sum), Norm(stabilizer=stabilizer)),
        (is_avg_pool, Norm(stabilizer=stabilizer)),
        (_isa(BatchNorm), Pass()),
    ]


def _check_positive(name: str, value: Any, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be a finite float {'>=' if allow_zero else '>'} 0, got {value}")
    return value


def _epsilon_flat(canonizers: Sequence[Canonizer], *, epsilon: float = 1e-3, stabilizer: float = 1e-6) -> Composite:
    epsilon = _check_positive("epsilon", epsilon, allow_zero=True)
    stabilizer = _check_positive("stabilizer", stabilizer)
    layer_map = _base_map(stabilizer) + [(_isa(LinearOrConv), Epsilon(epsilon=epsilon))]
    return FirstLayerComposite(layer_map, Flat(stabilizer=stabilizer), canonizers)


def _zplus_flat(canonizers: Sequence[Canonizer], *, stabilizer: float = 1e-6) -> Composite:
    stabilizer = _check_positive("stabilizer", stabilizer)
    layer_map = _base_map(stabilizer) + [(_isa(LinearOrConv), ZPlus(stabilizer=stabilizer))]
    return FirstLayerComposite(layer_map, Flat(stabilizer=stabilizer), canonizers)


def _as_bound(name: str, value: Any) -> torch.Tensor | float:
    if isinstance(value, torch.Tensor):
        if not value.is_floating_point():
            raise TypeError(f"{name} must be a float or a floating-point tensor, got dtype {value.dtype}")
        return value.detach()
    if isinstance(value, (list, tuple)):
        return torch.as_tensor(value, dtype=torch.float32)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float or a tensor, got {type(value).__name__}")
    return float(value)


def _channel_bound(values: Any, name: str) -> torch.Tensor:
    t = torch.as_tensor(values, dtype=torch.float32).detach()
    if t.dim() > 1:
        raise ValueError(f"{name} must be a float or a per-channel sequence, got shape {tuple(t.shape)}")
    return t.reshape(1, -1, 1, 1) if t.dim() == 1 else t


def zbox_bounds(low: Any = None, high: Any = None, mean: Any = None, std: Any = None
                ) -> tuple[torch.Tensor | float, torch.Tensor | float]:
    """The ZBox input range ``(low, high)``: as given, or ``((0 - mean)/std, (1 - mean)/std)`` from the
    normalization constants; ValueError when neither pair is given (shared by every backend)."""
    if low is None and high is None and mean is not None and std is not None:
        mean_t, std_t = _channel_bound(mean, "mean"), _channel_bound(std, "std")
        if bool((std_t <= 0).any()):
            raise ValueError("std must be positive")
        low, high = (0.0 - mean_t) / std_t, (1.0 - mean_t) / std_t
    if low is None or high is None:
        raise ValueError(
            "epsilon_gamma_box needs the input range: pass low=... and high=... (floats or tensors "
            "broadcastable to one sample, e.g. (1, C, 1, 1)), or the normalization constants mean=... and std=..."
        )
    return _as_bound("low", low), _as_bound("high", high)


def _epsilon_gamma_box(
    canonizers: Sequence[Canonizer],
    *,
    low: Any = None,
    high: Any = None,
    mean: Any = None,
    std: Any = None,
    epsilon: float = 1e-6,
    gamma: float = 0.25,
    stabilizer: float = 1e-6,
) -> Composite:
    epsilon = _check_positive("epsilon", epsilon, allow_zero=True)
    gamma = _check_positive("gamma", gamma, allow_zero=True)
    stabilizer = _check_positive("stabilizer", stabilizer)
    low_b, high_b = zbox_bounds(low, high, mean, std)
    layer_map = _base_map(stabilizer) + [
        (_isa(Convolution), Gamma(gamma=gamma, stabilizer=stabilizer)),
        (_isa(LinearOrConv), Epsilon(epsilon=epsilon)),
    ]
    return FirstLayerComposite(layer_map, ZBox(low=low_b, high=high_b, stabilizer=stabilizer), canonizers)


@dataclass(frozen=True)
class Preset:
    """A named attribution method.

    ``build(canonizers, **kwargs)`` returns the zennit Composite (``None`` for plain gradients);
    ``build=None``: the method has no zennit composite and is computed only by backends that
    support it (registered with :func:`reldrop.attribution.registry.register_backend`);
    ``multiply_input``: the result is ``x ⊙ gradient``; ``lrp``: canonizers apply and the output
    relevance is seeded with ``one_hot(target)`` (default) or ``one_hot · logit`` with ``seed="logit"``
    (see :class:`reldrop.attribution.Attributor`).
    """

    name: str
    build: Callable[..., Composite | None] | None
    lrp: bool
    multiply_input: bool = False
    kwargs: tuple[str, ...] = field(default_factory=tuple)
    doc: str = ""


def _no_composite(canonizers: Sequence[Canonizer]) -> None:
    return None


PRESETS: dict[str, Preset] = {
    "epsilon_flat": Preset(
        "epsilon_flat", _epsilon_flat, lrp=True, kwargs=("epsilon", "stabilizer"),
        doc="Flat on the first layer, LRP-ε on all other conv/linear layers (paper training setup for ResNets).",
    ),
    "zplus_flat": Preset(
        "zplus_flat", _zplus_flat, lrp=True, kwargs=("stabilizer",),
        doc="Flat on the first layer, LRP-z⁺ on all other conv/linear layers (point clouds, RRA).",
    ),
    "epsilon_gamma_box": Preset(
        "epsilon_gamma_box", _epsilon_gamma_box, lrp=True,
        kwargs=("low", "high", "mean", "std", "epsilon", "gamma", "stabilizer"),
        doc="ZBox first layer, γ on convs, ε on dense layers (visualization).",
    ),
    "gradient": Preset("gradient", _no_composite, lrp=False, doc="∂ logit_t / ∂x."),
    "gradient_x_input": Preset(
        "gradient_x_input", _no_composite, lrp=False, multiply_input=True, doc="x ⊙ ∂ logit_t / ∂x."
    ),
    "cp_lrp": Preset(
        "cp_lrp", None, lrp=True, kwargs=("epsilon", "stabilizer"),
        doc="CP-LRP for Vision Transformers: attention and LayerNorm 1/σ held constant, ε on Linear, "
            "Flat patch embedding (backends 'vit' and 'graph').",
    ),
    "attnlrp": Preset(
        "attnlrp", None, lrp=True, kwargs=("epsilon", "stabilizer"),
        doc="AttnLRP for Vision Transformers: as cp_lrp, but relevance also flows through the attention "
            "probabilities (softmax rule, uniform rule on the two attention matmuls) (backends 'vit' and 'graph').",
    ),
}


def method_names() -> list[str]:
    """Names accepted as ``method``."""
    return list(PRESETS)


def get_preset(method: str) -> Preset:
    """The :class:`Preset` called ``method``; ``ValueError`` naming the known ones otherwise."""
    if not isinstance(method, str):
        raise TypeError(f"method must be a string naming a preset, got {type(method).__name__}")
    if method not in PRESETS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(PRESETS)}")
    return PRESETS[method]


def register_preset(preset: Preset, *, replace: bool = False) -> None:
    """Make ``preset.name`` a valid ``method`` (e.g. a method a new backend computes)."""
    if not isinstance(preset, Preset):
        raise TypeError(f"preset must be a Preset, got {type(preset).__name__}")
    if preset.name in PRESETS and not replace:
        raise ValueError(f"method {preset.name!r} already exists (pass replace=True to replace it)")
    PRESETS[preset.name] = preset


def check_method_kwargs(method: str, method_kwargs: dict[str, Any]) -> None:
    """``TypeError`` for a keyword the preset does not take."""
    preset = get_preset(method)
    unknown = sorted(set(method_kwargs) - set(preset.kwargs))
    if unknown:
        allowed = ", ".join(preset.kwargs) or "none"
        raise TypeError(f"method {method!r} got unexpected keyword argument(s) {', '.join(unknown)}; accepted: {allowed}")
