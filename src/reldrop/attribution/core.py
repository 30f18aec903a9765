"""``attribute`` and ``Attributor``: relevance of the target logit for a batch, model left untouched.

Conventions (all backends):

* **Seed.** LRP presets start from the output relevance ``one_hot(target)`` (``seed="one_hot"``,
  the default: zennit's and the paper's convention, SPEC §1; input relevance sums to ≈ 1), or
  ``one_hot(target) · logit_target`` (``seed="logit"``): then input relevance decomposes the target
  logit, ``Σ R ≈ logit_t`` minus what biases and ε absorb. LRP is linear in the output relevance,
  so the two maps differ by the per-sample factor ``logit_t``: same argmax whenever the target
  logit is positive, mirrored when it is negative. ``gradient_x_input`` seeds 1 at ``∂/∂logit``
  and ``gradient`` returns ``∂ logit_t / ∂x`` (``seed`` does not apply to them).
* **Numerics.** Computed in the model's parameter dtype if that is float64, else float32, with
  autocast disabled (also when called inside ``torch.autocast``); returned in ``x``'s dtype,
  detached, same shape (channels_last inputs work).
* **Model state.** Runs in eval mode, under :func:`~reldrop.attribution.state.preserve_model_state`;
  gradients are taken w.r.t. the input only (``torch.autograd.grad``), so no ``.grad`` is touched.
  DataParallel/DistributedDataParallel (``.module``) and ``torch.compile`` (``._orig_mod``)
  wrappers are unwrapped; the inner module is evaluated directly (no DDP hooks, no buffer sync).
* **First layer.** "First" means first conv/linear module *executed* (forward trace of one sample,
  done once per :class:`Attributor`), not first registered - unless the model declares its input
  layers (``canonize_points.input_layers``: every radius branch of PointNet++ MSG) or the caller
  passes ``first_layers``.
"""
from __future__ import annotations

import importlib
import sys
import warnings
from typing import Any, Callable

import torch
import torch.nn as nn
from zennit.types import Linear as LinearOrConv

from .canonize import canonizers_for
from .presets import check_method_kwargs, get_preset
from ._wrappers import unwrap_model
from .state import preserve_model_state

__all__ = ["Attributor", "attribute", "unwrap_model", "BACKENDS"]

BACKENDS = ("auto", "zennit", "fast")
SEEDS = ("one_hot", "logit")
Target = torch.Tensor | str


def _load_fast() -> Any | None:
    """The fast backend module, or None when it does not exist (yet)."""
    name = "reldrop.attribution.fast"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name == name or (name in sys.modules and sys.modules[name] is None):
            return None
        raise


def _fast_supports(model: nn.Module, method: str) -> bool:
    """``fast.supports(model, method)`` tolerating an absent/incomplete/broken fast module (auto mode)."""
    try:
        fast = _load_fast()
        supports = getattr(fast, "supports", None) if fast is not None else None
        if not callable(supports) or not callable(getattr(fast, "build", None)):
            return False
        return bool(supports(model, method))
    except Exception as err:  # a broken optional backend must not break attribution
        warnings.warn(f"reldrop.attribution.fast is unusable ({err!r}); using the zennit backend", RuntimeWarning)
        return False


def _compute_dtype(model: nn.Module) -> torch.dtype:
    for p in model.parameters():
        if p.is_floating_point():
            if p.dtype == torch.float64:
                return torch.float64
            if p.dtype != torch.float32:
                raise TypeError(
                    f"model parameters must be float32 or float64 for attribution, got {p.dtype}; "
                    "keep float32 master weights (autocast is fine)"
                )
            return torch.float32
    return torch.float32


def _check_input(x: Any) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor of shape (B, ...), got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor of shape (B, ...), got dtype {x.dtype}")
    if x.dim() < 2:
        raise ValueError(f"x must have shape (B, ...) with at least 2 dims, got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError("x must hold at least one sample (empty batch, shape (0, ...))")
    return x


def _check_target(target: Any, batch: int, device: torch.device) -> torch.Tensor | None:
    """LongTensor (B,) on ``device``, or None for ``"predicted"``."""
    if isinstance(target, str):
        if target != "predicted":
            raise ValueError(f"target must be a LongTensor (B,) of labels or the string 'predicted', got {target!r}")
        return None
    if not isinstance(target, torch.Tensor):
        raise TypeError(
            f"target must be a LongTensor (B,) of labels or the string 'predicted', got {type(target).__name__}"
        )
    if target.dtype == torch.bool or target.is_floating_point() or target.is_complex():
        raise TypeError(f"target must be an integer tensor (B,) of class indices, got dtype {target.dtype}")
    if target.dim() != 1 or target.shape[0] != batch:
        raise ValueError(f"target must have shape (B,) = ({batch},), got shape {tuple(target.shape)}")
    return target.to(device=device, dtype=torch.long, non_blocking=True)


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


def _declared_input_layers(model: nn.Module) -> list[nn.Module]:
    """Input layers a model-specific module declares (``canonize_points.input_layers``), else []."""
    try:
        mod = importlib.import_module("reldrop.attribution.canonize_points")
    except ModuleNotFoundError as err:
        if err.name == "reldrop.attribution.canonize_points":
            return []
        raise
    fn = getattr(mod, "input_layers", None)
    return list(fn(model)) if callable(fn) else []


def _first_layer(model: nn.Module, sample: torch.Tensor) -> nn.Module | None:
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


class Attributor:
    """Relevance for one model, built once and called per batch: ``attributor(x, target) -> R``.

    Args:
        model: the classifier (``(B, ...) -> (B, C)`` logits); DP/DDP/compile wrappers are unwrapped.
        method: a preset name (``reldrop.attribution.method_names()``): ``"epsilon_flat"``,
            ``"zplus_flat"``, ``"epsilon_gamma_box"``, ``"gradient"``, ``"gradient_x_input"``.
        backend: ``"zennit"`` (always available), ``"fast"`` (``reldrop.attribution.fast``; error if
            it does not support the model/method) or ``"auto"`` (fast if available and it supports
            them and neither ``canonizers`` nor ``first_layers`` is given, else zennit).
        canonizers: override the canonizers (default :func:`~reldrop.attribution.canonize.canonizers_for`).
        first_layers: override the input layer(s) that get the first-layer rule (Flat/ZBox).
            Default: the layers ``reldrop.attribution.canonize_points.input_layers(model)`` declares
            (PointNet++ MSG: one per radius), else the first conv/linear executed in a forward trace.
        seed: output relevance of the LRP presets, ``"one_hot"`` (default) or ``"logit"`` (see above).
        **method_kwargs: the preset's options (e.g. ``epsilon=1e-3``; see :mod:`.presets`).

    The composite, its rules and canonizers are created here, once; each call registers them,
    computes and removes them (the model is unchanged between and after calls). The first layer
    (``self.first_layer``) is found by a forward trace of one sample on the first call. Build a new
    Attributor if you change the model's architecture. Works under ``torch.no_grad()``,
    ``torch.inference_mode()`` and ``torch.autocast`` (all suspended inside). Not thread-safe:
    use one Attributor per thread.
    """

    def __init__(
        self,
        model: nn.Module,
        method: str = "epsilon_flat",
        *,
        backend: str = "auto",
        canonizers: list | None = None,
        first_layers: list[nn.Module] | None = None,
        seed: str = "one_hot",
        **method_kwargs: Any,
    ) -> None:
        if seed not in SEEDS:
            raise ValueError(f"seed must be one of {', '.join(SEEDS)}, got {seed!r}")
        self.seed = seed
        self.wrapped_model = model
        self.model = unwrap_model(model)
        self.preset = get_preset(method)
        self.method = method
        check_method_kwargs(method, method_kwargs)
        self.method_kwargs = dict(method_kwargs)
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        self._fast: Callable[..., torch.Tensor] | None = None
        custom = canonizers is not None or first_layers is not None  # the fast plans hard-code both
        if backend == "fast" and custom:
            raise ValueError("backend='fast' computes the default canonization and input layers; "
                             "custom canonizers/first_layers need backend='zennit' (or 'auto')")
        if backend == "auto":
            if not custom and _fast_supports(self.model, method):
                try:
                    self._fast = _load_fast().build(self.model, method, seed=seed, **self.method_kwargs)
                except ValueError:  # e.g. no final Linear for seed="one_hot": zennit computes it exactly
                    self._fast = None
            backend = "fast" if self._fast is not None else "zennit"
        self.backend = backend
        self.composite = None
        self.canonizers: list = []
        if backend == "fast" and self._fast is None:
            fast = _load_fast()
            if fast is None or not callable(getattr(fast, "build", None)):
                raise ValueError("backend='fast' requested but reldrop.attribution.fast is not available")
            if not fast.supports(self.model, method):
                raise ValueError(f"backend='fast' does not support method {method!r} on {type(self.model).__name__}")
            self._fast = fast.build(self.model, method, seed=seed, **self.method_kwargs)
        elif backend == "zennit" and self.preset.lrp:
            self.canonizers = list(canonizers) if canonizers is not None else canonizers_for(self.model)
            self.composite = self.preset.build(self.canonizers, **self.method_kwargs)
        self.first_layers: list[nn.Module] = []
        if first_layers is not None:
            if not all(isinstance(m, nn.Module) for m in first_layers):
                raise TypeError("first_layers must be a list of modules of the model")
            self.first_layers = list(first_layers)
        elif self.composite is not None:
            self.first_layers = _declared_input_layers(self.model)
        self._traced = bool(self.first_layers)
        if self.composite is not None:
            self.composite.first_layers = tuple(self.first_layers)

    @property
    def first_layer(self) -> nn.Module | None:
        """The (first) input layer given the first-layer rule; None before the first call."""
        return self.first_layers[0] if self.first_layers else None

    def __repr__(self) -> str:
        return f"Attributor({type(self.model).__name__}, method={self.method!r}, backend={self.backend!r})"

    def __call__(self, x: torch.Tensor, target: Target) -> torch.Tensor:
        """Relevance ``R`` (same shape and dtype as ``x``, detached) of the target logit.

        Args:
            x: inputs ``(B, ...)``, floating point, B >= 1.
            target: LongTensor ``(B,)`` of class indices, or ``"predicted"`` (argmax of the logits).
        """
        x = _check_input(x)
        target_idx = _check_target(target, x.shape[0], x.device)
        model = self.model
        dtype = _compute_dtype(model)
        with torch.inference_mode(False), torch.enable_grad(), \
                torch.autocast(device_type=x.device.type, enabled=False):
            x_in = x.detach().to(dtype)
            if x_in.is_inference():
                x_in = x_in.clone()
            if self._fast is not None:
                relevance = self._call_fast(x_in, target_idx)
            else:
                relevance = self._call_zennit(x_in, target_idx)
        return relevance.detach().to(x.dtype)

    # ------------------------------------------------------------------------------------ fast
    def _call_fast(self, x_in: torch.Tensor, target_idx: torch.Tensor | None) -> torch.Tensor:
        assert self._fast is not None
        with preserve_model_state(self.model):
            return self._fast(x_in, "predicted" if target_idx is None else target_idx)

    # ---------------------------------------------------------------------------------- zennit
    def _call_zennit(self, x_in: torch.Tensor, target_idx: torch.Tensor | None) -> torch.Tensor:
        model = self.model
        composite = self.composite
        if composite is not None and not self._traced:
            first = _first_layer(model, x_in[:1])
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


def attribute(
    model: nn.Module,
    x: torch.Tensor,
    target: Target,
    method: str = "epsilon_flat",
    *,
    backend: str = "auto",
    **method_kwargs: Any,
) -> torch.Tensor:
    """One-shot relevance: ``Attributor(model, method, backend=backend, **method_kwargs)(x, target)``.

    Args:
        model: classifier returning ``(B, C)`` logits (wrappers unwrapped; left unchanged).
        x: ``(B, ...)`` float input.
        target: LongTensor ``(B,)`` of labels, or ``"predicted"``.
        method: preset name, default ``"epsilon_flat"`` (Flat first layer, ε = 1e-3 elsewhere).
        backend: ``"auto"`` | ``"zennit"`` | ``"fast"``.
    Returns:
        relevance, same shape and dtype as ``x``, detached. For LRP presets the output seed is
        ``one_hot`` (``seed="one_hot"``, default) or ``one_hot · logit`` (``seed="logit"``, then
        ``R.sum()`` per sample approximates the target logit).

    For repeated calls on the same model build an :class:`Attributor` once instead.
    """
    return Attributor(model, method, backend=backend, **method_kwargs)(x, target)
