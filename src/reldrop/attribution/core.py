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
* **Model state.** Runs in eval mode, under :func:`~reldrop.attribution.state.preserve_model_state`
  (a backend whose function declares ``read_only = True``, the graph engine's, only under the
  model's lock: it never writes to the model, which its tests check bit for bit);
  gradients are taken w.r.t. the input only (``torch.autograd.grad``), so no ``.grad`` is touched.
  DataParallel/DistributedDataParallel (``.module``) and ``torch.compile`` (``._orig_mod``)
  wrappers are unwrapped; the inner module is evaluated directly (no DDP hooks, no buffer sync).
* **First layer.** "First" means first conv/linear module *executed* (forward trace of one sample,
  done once per :class:`Attributor`), not first registered - unless the model declares its input
  layers (``canonizers.points.input_layers``: every radius branch of PointNet++ MSG) or the caller
  passes ``first_layers``.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from . import registry as _registry
from ._wrappers import unwrap_model
from .presets import check_method_kwargs, get_preset
from .rules import check_seed
from .state import model_lock, preserve_model_state

__all__ = ["Attributor", "attribute", "unwrap_model", "resolve_method", "BACKENDS"]

#: the built-in backend names (the live list: ``reldrop.attribution.registry.backend_names()``)
BACKENDS = ("auto", "fast", "points", "vit", "graph", "zennit")
Target = torch.Tensor | str


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


class Attributor:
    """Relevance for one model, built once and called per batch: ``attributor(x, target) -> R``.

    Args:
        model: the classifier (``(B, ...) -> (B, C)`` logits); DP/DDP/compile wrappers are unwrapped.
        method: a preset name (``reldrop.attribution.method_names()``): ``"epsilon_flat"``,
            ``"zplus_flat"``, ``"epsilon_gamma_box"``, ``"gradient"``, ``"gradient_x_input"``;
            ``None`` (default) / ``"auto"``: the default the backend registry gives for the model
            (:func:`~reldrop.attribution.registry.default_method`: CP-LRP for Vision Transformers,
            z⁺ for reldrop's point nets, else ε/Flat). ``self.method`` holds the method chosen.
        backend: ``"auto"`` (default: the registered backends are asked in order, see
            :mod:`reldrop.attribution.registry`: ``"fast"`` when it supports the model/method and
            neither ``canonizers`` nor ``first_layers`` is given, else ``"zennit"``) or a registered
            name (``"zennit"``, ``"fast"``, ``"points"``, ``"vit"``, ...; ``ValueError`` with the reason when it does not
            support the model/method). ``self.backend`` is the name of the backend chosen.
        canonizers: override the canonizers (default :func:`~reldrop.attribution.canonizers.canonizers_for`).
        first_layers: override the input layer(s) that get the first-layer rule (Flat/ZBox).
            Default: the layers ``reldrop.attribution.canonizers.points.input_layers(model)`` declares
            (PointNet++ MSG: one per radius), else the first conv/linear executed in a forward trace.
        seed: output relevance of the LRP presets, ``"one_hot"`` (default) or ``"logit"`` (see above).
        **method_kwargs: the preset's options (e.g. ``epsilon=1e-3``; see :mod:`.presets`).

    The composite, its rules and canonizers are created here, once; each call registers them,
    computes and removes them (the model is unchanged between and after calls). The first layer
    (``self.first_layer``) is found by a forward trace of one sample on the first call. Build a new
    Attributor if you change the model's architecture. Works under ``torch.no_grad()``,
    ``torch.inference_mode()`` and ``torch.autocast`` (all suspended inside). Calls on one
    model from several threads run one at a time (:func:`~reldrop.attribution.state.model_lock`),
    so the model is never left changed; for parallel speed use one model copy per thread.
    """

    def __init__(
        self,
        model: nn.Module,
        method: str | None = None,
        *,
        backend: str = "auto",
        canonizers: list | None = None,
        first_layers: list[nn.Module] | None = None,
        seed: str = "one_hot",
        **method_kwargs: Any,
    ) -> None:
        check_seed(seed)
        self.seed = seed
        self.wrapped_model = model
        self.model = unwrap_model(model)
        method = resolve_method(self.model, method)
        self.preset = get_preset(method)
        self.method = method
        check_method_kwargs(method, method_kwargs)
        self.method_kwargs = dict(method_kwargs)
        _registry.check_backend_name(backend)
        if first_layers is not None and not all(isinstance(m, nn.Module) for m in first_layers):
            raise TypeError("first_layers must be a list of modules of the model")
        opts = dict(self.method_kwargs, seed=seed)
        if canonizers is not None:
            opts["canonizers"] = list(canonizers)
        if first_layers is not None:
            opts["first_layers"] = list(first_layers)
        #: the backend that computes the relevance (its registry name) and its built function
        self.backend, self.impl = _registry.select_backend(self.model, method, backend, **opts)

    @property
    def composite(self) -> Any:
        """The zennit composite (zennit backend, LRP presets), else None."""
        return getattr(self.impl, "composite", None)

    @property
    def canonizers(self) -> list:
        """The canonizers the zennit backend applies (empty for other backends and gradients)."""
        return list(getattr(self.impl, "canonizers", []))

    @property
    def first_layers(self) -> list[nn.Module]:
        """Input layer(s) given the first-layer rule (zennit backend; found at the first call
        unless declared or passed); empty for other backends."""
        return list(getattr(self.impl, "first_layers", []))

    @property
    def first_layer(self) -> nn.Module | None:
        """The (first) input layer given the first-layer rule; None before the first call."""
        layers = self.first_layers
        return layers[0] if layers else None

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
        if not bool(torch.isfinite(x).all()):  # one host sync; every backend would return garbage
            raise ValueError("x holds NaN or infinite values; relevance of such an input is meaningless")
        model = self.model
        dtype = _compute_dtype(model)
        with torch.inference_mode(False), torch.enable_grad(), \
                torch.autocast(device_type=x.device.type, enabled=False):
            x_in = x.detach().to(dtype)
            if x_in.is_inference():
                x_in = x_in.clone()
            # a backend that only reads the model (``read_only = True``: no hooks, no module swaps, no mode
            # changes, parameters read detached) needs the per-model lock, not the snapshot and restore of
            # every module's state (~20 ms per call on a 200-module net); its tests check the model bit for bit
            guard = model_lock(model) if getattr(self.impl, "read_only", False) else preserve_model_state(model)
            with guard:
                relevance = self.impl(x_in, "predicted" if target_idx is None else target_idx)
        return relevance.detach().to(x.dtype)


def resolve_method(model: nn.Module, method: str | None, fallback: str = "epsilon_flat") -> str:
    """``method`` itself, or for ``None``/``"auto"`` the registry's default for ``model``
    (:func:`reldrop.attribution.registry.default_method`, else ``fallback``). Validates the name."""
    if method is None or method == "auto":
        method = _registry.default_method(unwrap_model(model), fallback)
    get_preset(method)
    return method


def attribute(
    model: nn.Module,
    x: torch.Tensor,
    target: Target,
    method: str | None = None,
    *,
    backend: str = "auto",
    **method_kwargs: Any,
) -> torch.Tensor:
    """One-shot relevance: ``Attributor(model, method, backend=backend, **method_kwargs)(x, target)``.

    Args:
        model: classifier returning ``(B, C)`` logits (wrappers unwrapped; left unchanged).
        x: ``(B, ...)`` float input.
        target: LongTensor ``(B,)`` of labels, or ``"predicted"``.
        method: preset name; default ``None`` (= ``"auto"``): picked from the model by the backend
            registry — ``"cp_lrp"`` for Vision Transformers, ``"zplus_flat"`` for reldrop's point
            nets, else ``"epsilon_flat"`` (Flat first layer, ε = 1e-3 elsewhere).
        backend: ``"auto"`` or a registered backend name (``"fast"``, ``"points"``, ``"vit"``, ``"zennit"``, ...).
    Returns:
        relevance, same shape and dtype as ``x``, detached. For LRP presets the output seed is
        ``one_hot`` (``seed="one_hot"``, default) or ``one_hot · logit`` (``seed="logit"``, then
        ``R.sum()`` per sample approximates the target logit).

    For repeated calls on the same model build an :class:`Attributor` once instead.
    """
    return Attributor(model, method, backend=backend, **method_kwargs)(x, target)
