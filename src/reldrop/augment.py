"""RelDrop: the training-loop object that joins attribution and masks.

``RelDrop`` answers *when and to what* the augmentation is applied; *how relevance is computed*
lives in :mod:`reldrop.attribution` and *how a mask is drawn* in :mod:`reldrop.masks`.

Usage (timm ``Mixup``-style, one call per batch, after normalization)::

    reldrop_fn = reldrop.RelDrop(model, p=0.5)
    for x, y in loader:
        x = reldrop_fn(x, y)
        loss = criterion(model(x), y)
"""
from __future__ import annotations

import warnings
from typing import Any, Sequence, cast

import torch
import torch.nn as nn

from ._checks import check_batch_match, check_float_tensor, check_probability, check_tensor
from .masks import random_erase, relevance_erase, relevance_point_drop

__all__ = ["RelDrop", "DEFAULT_METHOD", "RandomErasing", "attribution_info"]

DEFAULT_METHOD = {"image": "epsilon_flat", "points": "zplus_flat"}


def _check_image_options(scale: tuple[float, float], ratio: tuple[float, float], value: Any, *, centre: str,
                         border: str, k: int | None, count: int, max_count: int | None) -> None:
    """The block law of ``modality="image"``, checked now (not at the first training step) by one
    zero-probability call of :func:`relevance_erase` on a tiny probe."""
    channels = len(value) if isinstance(value, Sequence) and not isinstance(value, str) else 1
    probe = torch.zeros(1, channels, 4, 4)
    relevance_erase(probe, probe, p=0.0, scale=scale, ratio=ratio, value=value,
                    centre=centre, border=border, k=k, count=count, max_count=max_count)


def _check_point_options(value: Any, *, count: int, max_count: int | None) -> None:
    """The options ``modality="points"`` refuses: block counts, and an image fill (no per-point noise
    fill: refused, never a silent 0)."""
    if count != 1 or max_count is not None:
        raise ValueError("count and max_count (blocks per image) apply to modality='image', not 'points'")
    if isinstance(value, str):
        raise ValueError(f"value={value!r} is an image fill; modality='points' takes a float or a sequence of "
                         "D floats (what a dropped point becomes, all features)")


class RelDrop:
    """Relevance-driven Input Dropout for a batch ``(x, y)``.

    Args:
        model: the model being trained (may be wrapped in DDP / DataParallel / torch.compile).
            It is never changed: parameters, buffers, modes, requires_grad flags, hooks and
            ``.grad`` are exactly as before every call (also when a call raises).
        modality: ``"image"`` (x ``(B, C, H, W)``, block erasing, Alg. A.1) or ``"points"``
            (x ``(B, N, D)``, point dropout, Alg. A.2).
        method: attribution preset; ``None`` or ``"auto"`` (default): the backend registry's
            default for the model (:func:`reldrop.attribution.default_method`), else
            ``"epsilon_flat"`` for images and ``"zplus_flat"`` for points. Checked here, with
            ``backend`` and ``method_kwargs`` (a bad name fails now, not at the first step).
        backend: attribution backend, ``"auto"`` | ``"fast"`` | ``"zennit"`` | any registered
            name (:mod:`reldrop.attribution.registry`).
        p: per-sample erasing probability. Images: default 0.5 (paper); relevance is computed only
            for the samples the coin selects. Points: default 1.0 (Alg. A.2 drops points in every
            sample; the α/β rule decides how many).
        scale: images: block area range ``(low, high)`` as a fraction of ``H * W``
            (:func:`reldrop.relevance_erase`).
        ratio: images: block aspect-ratio range ``(low, high)``, ``H_O / W_O``.
        value: the fill. Images: a float, a per-channel sequence, ``"rand"`` (one random colour per
            block, timm ``mode='rand'``) or ``"random"`` (per-pixel noise, timm ``mode='pixel'``).
            Points: what a dropped point becomes, all ``D`` features (:func:`reldrop.relevance_point_drop`).
        centre: images: ``"argmax"`` (paper), ``"topk"`` or ``"random"``; see
            :func:`reldrop.relevance_erase`.
        border: images: ``"clip"`` (the block is clipped to the image) or ``"reject"``.
        k: images: top pixels for ``centre="topk"`` (``None``: 1 % of the pixels).
        count: images: blocks per image (default 1, timm's ``min_count``): block ``k`` is centred on
            the most relevant pixel outside blocks ``1..k-1``.
        max_count: images: with it, the count is drawn per image in ``[count, max_count]``.
        alpha: points: share of randomness in the drop decision, in [0, 1]
            (:func:`reldrop.relevance_point_drop`, applied as is); ``alpha=1`` is pure random point
            dropout and skips attribution entirely.
        beta: points: controls the fraction of dropped points, in [0, 1]; ``beta=0`` still drops the most relevant point(s) unless ``alpha=1`` (the
            paper's ``>=``; use ``p=0`` or ``enabled=False`` to switch the augmentation off).
        target: ``"label"`` (the true labels ``y``, paper) or ``"predicted"`` (argmax of the logits).
        generator: optional ``torch.Generator`` for the coins and masks (reproducibility).
        enabled: when False, ``__call__`` returns ``x`` unchanged (e.g. for warm-up epochs).
        **method_kwargs: passed to the attribution preset (e.g. ``epsilon=1e-3``).

    ``__call__(x, y, return_mask=False)`` returns the augmented batch (a new tensor; ``x`` is not
    modified), or ``(x_aug, mask)`` with ``mask`` ``(B, H, W)`` / ``(B, N)`` bool, True = occluded.
    After each call ``last_stats`` holds counts that can be summed over steps: ``"selected"``
    (samples augmented, int), ``"fallback"`` (int: selected samples whose relevance was degenerate -
    constant, e.g. all zero - so a random centre (images: for the first block) or a purely random
    drop (points) was used: RelDrop acted as Random Erasing on them) and, for points, ``"dropped"``
    (points dropped, a 0-d tensor: no host sync) and ``"candidates"`` (points in the selected
    samples, int). When more than half of the selected samples of a batch fall back, a
    ``RuntimeWarning`` says so (once per ``RelDrop``).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        modality: str = "image",
        method: str | None = None,
        backend: str = "auto",
        p: float | None = None,
        scale: Sequence[float] = (0.02, 0.4),
        ratio: Sequence[float] = (0.3, 1 / 0.3),
        value: float | Sequence[float] | str = 0.0,
        centre: str = "argmax",
        border: str = "clip",
        k: int | None = None,
        count: int = 1,
        max_count: int | None = None,
        alpha: float = 0.5,
        beta: float = 0.15,
        target: str = "label",
        generator: torch.Generator | None = None,
        enabled: bool = True,
        **method_kwargs: Any,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if modality not in DEFAULT_METHOD:
            raise ValueError(f"modality must be 'image' or 'points', got {modality!r}")
        if target not in ("label", "predicted"):
            raise ValueError(f"target must be 'label' or 'predicted', got {target!r}")
        from .attribution import registry as _backends
        from .attribution.core import resolve_method
        from .attribution.presets import check_method_kwargs

        self.model = model
        self.modality = modality
        self.method = resolve_method(model, method, DEFAULT_METHOD[modality])
        check_method_kwargs(self.method, method_kwargs)
        self.backend = _backends.check_backend_name(backend)
        self.p = check_probability("p", (0.5 if modality == "image" else 1.0) if p is None else p)
        self.alpha = check_probability("alpha", alpha)
        self.beta = check_probability("beta", beta)
        self.scale = cast("tuple[float, float]", tuple(scale))  # checked as a pair by the mask functions
        self.ratio = cast("tuple[float, float]", tuple(ratio))
        self.value = value
        self.centre = centre
        self.border = border
        self.k = k
        self.count = count
        self.max_count = max_count
        self.target = target
        self.generator = generator
        self.enabled = bool(enabled)
        self.method_kwargs = method_kwargs
        self.last_stats: dict[str, Any] = {}
        self._attributor: Any = None  # built lazily, once per RelDrop (= once per model)
        self._warned_fallback = False
        if modality == "image":
            _check_image_options(self.scale, self.ratio, value, centre=centre, border=border, k=k, count=count,
                                 max_count=max_count)
        else:
            _check_point_options(value, count=count, max_count=max_count)

    # -- attribution -----------------------------------------------------------------------
    @property
    def attributor(self) -> Any:
        """The :class:`reldrop.attribution.Attributor` for this model (built on first use)."""
        if self._attributor is None:
            from .attribution import Attributor

            self._attributor = Attributor(self.model, self.method, backend=self.backend,
                                          **self.method_kwargs)
        return self._attributor

    def relevance(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Relevance of ``x`` for the targets (labels ``y`` or the predictions), shape of ``x``."""
        target: torch.Tensor | str = y if self.target == "label" else "predicted"
        return self.attributor(x, target)

    # -- the call ----------------------------------------------------------------------------
    def __call__(self, x: torch.Tensor, y: torch.Tensor, *, return_mask: bool = False
                 ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if self.modality == "image":
            check_float_tensor("x", x, (4,), "(B, C, H, W)")
        else:
            check_float_tensor("x", x, (3,), "(B, N, D)")
        check_tensor("y", y, (1,), "(B,) integer labels")
        if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise TypeError(f"y must hold integer class labels, got dtype {y.dtype}")
        check_batch_match("x", x, "y", y)
        if x.shape[0] == 0:
            raise ValueError("x must hold at least one sample, got an empty batch")

        if self.modality == "image":
            x_out, mask = self._images(x, y)
        else:
            x_out, mask = self._points(x, y)
        return (x_out, mask) if return_mask else x_out

    def _coin(self, batch: int, device: torch.device) -> torch.Tensor:
        gen_device = self.generator.device if self.generator is not None else device
        return (torch.rand(batch, generator=self.generator, device=gen_device) < self.p).to(device)

    def _images(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, _, H, W = x.shape
        mask = torch.zeros(B, H, W, dtype=torch.bool, device=x.device)
        if not self.enabled or self.p == 0.0:
            self.last_stats = {"selected": 0, "fallback": 0}
            return x.clone(), mask
        # One host sync per step: the number of selected samples decides the attribution batch.
        idx = self._coin(B, x.device).nonzero().squeeze(1)
        n = int(idx.numel())
        self.last_stats = {"selected": n, "fallback": 0}
        if n == 0:
            return x.clone(), mask
        xs = x.index_select(0, idx)
        rel = self.relevance(xs, y.index_select(0, idx))
        st: dict[str, Any] = {}
        xs_out, ms = relevance_erase(
            xs, rel, p=1.0, scale=self.scale, ratio=self.ratio, value=self.value,
            centre=self.centre, border=self.border, k=self.k, generator=self.generator,
            count=self.count, max_count=self.max_count, stats=st,
        )
        fb = st["fallback"]  # (n,) or (n, K) bool: block centred at random (degenerate relevance)
        # a sample falls back when its first block does (a later block of sparse relevance may find
        # only zeros outside the earlier blocks: that is not a degenerate sample)
        self._note_fallback(n, st["num_fallback"] if fb.dim() == 1 else int(fb[:, 0].sum()))
        x_out = x.clone()
        x_out.index_copy_(0, idx, xs_out.to(x.dtype))
        mask.index_copy_(0, idx, ms)
        return x_out, mask

    def _points(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, N, _ = x.shape
        mask = torch.zeros(B, N, dtype=torch.bool, device=x.device)
        if not self.enabled or self.p == 0.0:  # beta = 0 is not "off": Eq. 9's >= still drops Rnorm = 1 points
            self.last_stats = {"selected": 0, "fallback": 0}
            return x.clone(), mask
        if self.p < 1.0:
            idx = self._coin(B, x.device).nonzero().squeeze(1)
        else:
            idx = torch.arange(B, device=x.device)
        n = int(idx.numel())
        self.last_stats = {"selected": n, "fallback": 0}
        if n == 0:
            return x.clone(), mask
        xs = x.index_select(0, idx)
        if self.alpha == 1.0:  # pure random dropout: relevance plays no part, skip the LRP pass
            rel = torch.zeros(xs.shape[:2], dtype=xs.dtype, device=xs.device)
        else:
            rel = self.relevance(xs, y.index_select(0, idx))
        st: dict[str, Any] = {}
        xs_out, ms = relevance_point_drop(xs, rel, alpha=self.alpha, beta=self.beta,
                                          value=cast("float | Sequence[float]", self.value),  # str refused for points
                                          generator=self.generator, stats=st)
        if self.alpha != 1.0:  # alpha = 1 is random by request, not a fallback
            self._note_fallback(n, st["num_fallback"])
        x_out = x.clone()
        x_out.index_copy_(0, idx, xs_out.to(x.dtype))
        mask.index_copy_(0, idx, ms)
        self.last_stats.update(dropped=ms.sum(), candidates=n * N)
        return x_out, mask

    def _note_fallback(self, selected: int, fallback: int) -> None:
        """Record the batch's fallback count; warn once when more than half of it fell back."""
        self.last_stats["fallback"] = fallback
        if fallback * 2 > selected and not self._warned_fallback:
            self._warned_fallback = True
            warnings.warn(
                f"RelDrop: the relevance of {fallback} of {selected} selected samples was degenerate (constant, e.g. "
                f"all zero: a tiny signal swallowed by epsilon, or a model whose relevance vanishes), so they were "
                f"{'erased at a random centre' if self.modality == 'image' else 'dropped at random'} - RelDrop "
                "acted as random erasing on them. last_stats['fallback'] counts them per batch (warned once)",
                RuntimeWarning, stacklevel=4)

    def __repr__(self) -> str:
        common = f"modality={self.modality!r}, method={self.method!r}, backend={self.backend!r}, p={self.p}"
        if self.modality == "image":
            extra = f"scale={self.scale}, ratio={tuple(round(r, 4) for r in self.ratio)}, centre={self.centre!r}, border={self.border!r}"
            if self.count != 1 or self.max_count is not None:
                extra += f", count={self.count}, max_count={self.max_count}"
        else:
            extra = f"alpha={self.alpha}, beta={self.beta}"
        return f"RelDrop({common}, {extra}, enabled={self.enabled})"


# ---------------------------------------------------------------------------------------------
# the timm-style Random Erasing twin and the augmentation of a training config


class RandomErasing:
    """Random Erasing (Zhong et al.) on a normalized batch: :func:`reldrop.random_erase` with the RelDrop block law."""

    def __init__(self, *, p: float = 0.5, scale: tuple[float, float] = (0.02, 0.4),
                 ratio: tuple[float, float] = (0.3, 1 / 0.3), value: Any = 0.0, border: str = "clip",
                 generator: torch.Generator | None = None, count: int = 1, max_count: int | None = None) -> None:
        self.p, self.value, self.border = p, value, border
        self.scale = cast("tuple[float, float]", tuple(scale))  # checked as a pair by random_erase
        self.ratio = cast("tuple[float, float]", tuple(ratio))
        self.count, self.max_count = count, max_count
        self.generator = generator
        self.enabled = True
        self.last_stats: dict[str, Any] = {}

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        out, _ = random_erase(x, p=self.p, scale=self.scale, ratio=self.ratio, value=self.value,
                              border=self.border, generator=self.generator, count=self.count,
                              max_count=self.max_count)
        return out

    def __repr__(self) -> str:
        return f"RandomErasing(p={self.p}, scale={self.scale}, ratio={self.ratio}, value={self.value!r})"


def attribution_info(aug: Any) -> dict[str, str] | None:
    """``{"method", "backend"}`` of a RelDrop augmentation that computes relevance (None otherwise:
    no augmentation, Random Erasing, pure random point dropout). Builds the attributor now."""
    if getattr(aug, "alpha", None) == 1.0 and getattr(aug, "modality", None) == "points":
        return None
    att = getattr(aug, "attributor", None) if hasattr(type(aug), "attributor") else None
    if att is None:
        return None
    return {"method": str(att.method), "backend": str(att.backend)}

