"""The ``"zennit"`` backend: every preset through zennit composites (the general fallback).

:class:`ZennitAttribution` holds the composite and canonizers of one (model, method) pair, built
once; each call registers them, runs one forward and one modified backward
(``torch.autograd.grad`` w.r.t. the input only) and removes them. :class:`ZennitBackend` is its
entry in the backend registry (:mod:`reldrop.attribution.registry`).
"""
from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn as nn
from zennit.types import Linear as LinearOrConv

from ..canonizers import canonizers_for
from ..canonizers.points import input_layers as _declared_input_layers
from ..coverage import WAY_OUT, coverage_message, lrp_coverage
from ..presets import get_preset
from ..registry import FALLBACK, register_backend
from ..state import preserve_model_state
from .vit.plan import is_vision_transformer

__all__ = ["ZennitAttribution", "ZennitBackend", "first_executed_layer", "working_alternatives"]


def first_executed_layer(model: nn.Module, sample: torch.Tensor) -> nn.Module | None:
    """The first conv/linear module that runs in ``model(sample)`` (eval, no grad, model untouched)."""
    found: list[nn.Module] = []

    def hook(module: nn.Module, args: Any) -> None:
        if not found:
            found.append(module)

    with preserve_model_state(model), torch.no_grad():
        model.eval()
        for module in model.modules():
            if isinstance(module, LinearOrConv):
                module.register_forward_pre_hook(hook)
        model(sample)
    return found[0] if found else None


def _logits(output: Any) -> torch.Tensor:
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        output = output[0]  # e.g. PointNet's (logits, transform)
    if not isinstance(output, torch.Tensor) or output.dim() != 2:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ValueError(f"model must return logits of shape (B, num_classes) (or a tuple starting with them), got {shape}")
    return output


def _check_range(target: torch.Tensor, num_classes: int) -> None:
    # one host sync per call (an out-of-range index would be a device-side assert on CUDA)
    if bool(((target < 0) | (target >= num_classes)).any()):
        raise ValueError(f"target holds class indices outside [0, {num_classes}) for a model with {num_classes} outputs")


class ZennitAttribution:
    """Relevance of one model with one preset through a zennit composite: ``fn(x, target) -> R``.

    Args:
        model: the (unwrapped) model.
        method: preset name.
        seed: ``"one_hot"`` | ``"logit"`` (LRP presets only).
        canonizers: override (default :func:`~reldrop.attribution.canonizers.canonizers_for`).
        first_layers: override the input layer(s) of the first-layer rule (default: the layers
            ``canonizers.points.input_layers`` declares, else the first conv/linear executed, found
            by a forward trace of one sample at the first call).
        **method_kwargs: the preset's options.

    ``x`` must be in the compute dtype and ``target`` a LongTensor ``(B,)`` or ``"predicted"``;
    the caller (:class:`~reldrop.attribution.Attributor`) checks both and holds the model state.
    """

    def __init__(self, model: nn.Module, method: str, *, seed: str = "one_hot", canonizers: list | None = None,
                 first_layers: list[nn.Module] | None = None, **method_kwargs: Any) -> None:
        self.model = model
        self.preset = get_preset(method)
        self.seed = seed
        self.composite = None
        self.canonizers: list = []
        if self.preset.lrp:
            if self.preset.build is None:
                raise ValueError(f"method {method!r} has no zennit composite")
            self.canonizers = list(canonizers) if canonizers is not None else canonizers_for(model)
            self.composite = self.preset.build(self.canonizers, **method_kwargs)
        self.first_layers: list[nn.Module] = []
        if first_layers is not None:
            if not all(isinstance(m, nn.Module) for m in first_layers):
                raise TypeError("first_layers must be a list of modules of the model")
            self.first_layers = list(first_layers)
        elif self.composite is not None:
            self.first_layers = list(_declared_input_layers(model))
        self._traced = bool(self.first_layers)
        if self.composite is not None:
            self.composite.first_layers = tuple(self.first_layers)

    def __call__(self, x_in: torch.Tensor, target: torch.Tensor | str) -> torch.Tensor:
        model = self.model
        composite = self.composite
        target_idx = None if isinstance(target, str) else target
        if composite is not None and not self._traced:
            first = first_executed_layer(model, x_in[:1])
            self.first_layers = [first] if first is not None else []
            composite.first_layers = tuple(self.first_layers)
            self._traced = True
        with preserve_model_state(model):
            model.eval()
            try:
                if composite is not None:
                    with torch.no_grad():
                        composite.register(model)
                x_in = x_in.requires_grad_(True)
                logits = _logits(model(x_in))
                if target_idx is None:
                    target_idx = logits.detach().argmax(dim=1)
                else:
                    _check_range(target_idx, logits.shape[1])
                index = target_idx[:, None]
                if self.preset.lrp and self.seed == "logit":
                    value = logits.detach().gather(1, index)
                else:
                    value = torch.ones_like(index, dtype=logits.dtype)
                seed = torch.zeros_like(logits).scatter_(1, index, value)
                (grad,) = torch.autograd.grad(logits, x_in, grad_outputs=seed)
            finally:
                if composite is not None:
                    composite.remove()
        if self.preset.multiply_input:
            return x_in.detach() * grad
        return grad


def working_alternatives(model: nn.Module, method: str) -> str:
    """The advice for a refused LRP ``method``: only the LRP methods another registered backend
    says it computes for ``model`` (asked, not guessed), then the gradient methods (any model)."""
    from ..presets import method_names
    from ..registry import backend_names, get_backend

    found: list[str] = []
    for name in backend_names():
        if name == FALLBACK:
            continue
        backend = get_backend(name)
        for other in method_names():
            if other == method or not get_preset(other).lrp:
                continue
            try:
                ok = backend.supports(model, other) is True
            except Exception:  # a broken optional backend is no advice
                ok = False
            if ok:
                found.append(f"method={other!r} (backend {name!r})")
    lrp = (f"LRP that works on this model: {', '.join(dict.fromkeys(found))}; " if found
           else "no registered backend computes an LRP method for this model; ")
    return lrp + ('method="gradient_x_input" (or "gradient") works on any model but is not LRP; or register a '
                  "backend (reldrop.attribution.register_backend) or canonizer with an LRP rule for these layers")


class ZennitBackend:
    """Registry entry ``"zennit"``: every preset that has a zennit composite (or is a gradient)."""

    name = "zennit"

    def supports(self, model: nn.Module, method: str, **opts: Any) -> bool | str:
        """Gradient presets: any model. LRP presets: models whose every layer has a rule
        (:func:`~reldrop.attribution.coverage.lrp_coverage`); otherwise the reason, naming the
        layers and only the ways out that work (:func:`working_alternatives`). A model ``torch.fx``
        cannot trace is checked by its modules only, with a ``RuntimeWarning`` saying so."""
        preset = get_preset(method)
        if not preset.lrp:
            return True
        if preset.build is None:
            return f"method {method!r} has no zennit composite"
        problems, note = lrp_coverage(model, opts.get("canonizers"))
        if note is not None:
            warnings.warn(f"LRP coverage check of {type(model).__name__}: {note}", RuntimeWarning, stacklevel=2)
        if is_vision_transformer(model):
            # zennit has no rule for attention, softmax, LayerNorm or GELU: it would pass a plain
            # gradient through them (measured: relevance of 1e18-1e23 on a timm ViT) - refuse
            return (f"no zennit rule for the attention/LayerNorm/GELU of {type(model).__name__} "
                    f"(LRP preset {method!r} would return garbage); {working_alternatives(model, method)}"
                    + (f"; layers without a rule: {', '.join(problems[:12])}" if problems else ""))
        if not problems:
            return True
        return coverage_message(method, problems).replace(WAY_OUT, working_alternatives(model, method))

    def build(self, model: nn.Module, method: str, **opts: Any) -> ZennitAttribution:
        return ZennitAttribution(model, method, **opts)

    def default_method(self, model: nn.Module) -> str | None:
        return None

    def __repr__(self) -> str:
        return "ZennitBackend()"


register_backend(FALLBACK, ZennitBackend())  # the general fallback: stays last
