"""Builders from a resolved config: model, optimizer, per-epoch schedule, augmentation.

The config schema (``aug:``, ``model:``, ``optim:``, ``sched:``) is read here; the objects built
(:class:`reldrop.augment.RelDrop`, the models, ...) know nothing of it.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, cast

import torch
import torch.nn as nn

from ..augment import RandomErasing, RelDrop
from ..mixing import MIX_NAMES, MixupCutmix

__all__ = ["build_model", "build_optimizer", "build_scheduler", "build_augmentation"]

Aug = Callable[[torch.Tensor, torch.Tensor], Any]  # x -> x, or (x, soft targets) for MixupCutmix


def build_optimizer(cfg: Mapping[str, Any], model: nn.Module) -> torch.optim.Optimizer:
    o = cfg["optim"]
    if o["name"] == "sgd":
        return torch.optim.SGD(model.parameters(), lr=o["lr"], momentum=o["momentum"],
                               weight_decay=o["weight_decay"], nesterov=bool(o["nesterov"]))
    cls = torch.optim.AdamW if o["name"] == "adamw" else torch.optim.Adam
    return cls(model.parameters(), lr=o["lr"], weight_decay=o["weight_decay"])


def build_scheduler(cfg: Mapping[str, Any], opt: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-epoch schedule: cosine to ``min_lr`` over the epochs (after linear warm-up), StepLR, or constant."""
    s, epochs = cfg["sched"], cfg["train"]["epochs"]
    warm = min(int(s["warmup_epochs"]), max(epochs - 1, 0))
    if s["name"] == "cosine":
        main: Any = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs - warm, 1), eta_min=s["min_lr"])
    elif s["name"] == "step":
        main = torch.optim.lr_scheduler.StepLR(opt, step_size=int(s["step_size"]), gamma=float(s["gamma"]))
    else:
        main = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0)
    if warm == 0:
        return main
    ramp = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1.0 / (warm + 1), total_iters=warm)
    return torch.optim.lr_scheduler.SequentialLR(opt, [ramp, main], milestones=[warm])


def build_model(cfg: Mapping[str, Any], info_data: Any) -> nn.Module:
    """``reldrop.models.build(model.name, num_classes, in_channels, **model.kwargs)`` + optional ``model.init``."""
    from reldrop import models

    kw = dict(cfg["model"].get("kwargs") or {})
    shape = tuple(info_data.input_shape)
    kw.setdefault("in_channels", shape[0] if info_data.modality == "image" else shape[-1])
    try:
        model = models.build(cfg["model"]["name"], num_classes=info_data.num_classes, **kw)
    except TypeError as err:  # a typo in model.kwargs
        raise ValueError(f"config model.kwargs {dict(cfg['model'].get('kwargs') or {})} for model "
                         f"{cfg['model']['name']!r}: {err}") from err
    if cfg["model"].get("init"):
        from reldrop.models.checkpoint import load_init

        load_init(model, cfg["model"]["init"], strict=bool(cfg["model"].get("init_strict", True)),
                  reinit_head=bool(cfg["model"].get("reinit_head", False)))
    return model


def build_augmentation(aug_cfg: Mapping[str, Any], model: nn.Module, modality: str,
                       generator: torch.Generator | None = None, num_classes: int | None = None) -> Aug | None:
    """The augmentation callable ``aug(x, y) -> x`` for ``aug_cfg`` (``None`` for ``name: none``).

    * ``re``: Random Erasing, same block law as RelDrop, uniform random centre (images).
    * ``reldrop``: ``reldrop.RelDrop(model, modality=..., method=, p=, scale=, ratio=, epsilon=, ...)``
      (images: relevance-centred block; points: α/β point dropout).
    * ``random``: images -> Random Erasing; points -> RelDrop with α = 1 (pure random point dropout).
    * ``mixup`` / ``cutmix``: :class:`reldrop.mixing.MixupCutmix` (timm's Mixup, soft targets; images):
      ``p`` = chance a batch is mixed, ``aug.kwargs``: ``alpha`` (default 1), ``label_smoothing`` (0).
      Needs ``num_classes``.
    """
    name = aug_cfg["name"]
    if name == "none":
        return None
    if name in MIX_NAMES:
        if modality != "image":
            raise ValueError(f"aug.name {name!r} mixes images; it does not apply to point clouds")
        extra = dict(aug_cfg.get("kwargs") or {})
        unknown = sorted(set(extra) - {"alpha", "label_smoothing"})
        if unknown:
            raise ValueError(f"config aug.kwargs {unknown} unknown for aug.name {name!r} (known: alpha, label_smoothing)")
        if num_classes is None:
            raise ValueError(f"aug.name {name!r} needs the number of classes")
        return MixupCutmix(name, num_classes=num_classes, p=aug_cfg["p"], generator=generator, **extra)
    if name == "re" or (name == "random" and modality == "image"):
        if modality != "image":
            raise ValueError("aug.name 're' (Random Erasing) is for images; use 'random' for point clouds")
        return RandomErasing(p=aug_cfg["p"], scale=tuple(aug_cfg["scale"]), ratio=tuple(aug_cfg["ratio"]),
                             value=aug_cfg["value"], border=aug_cfg["border"], generator=generator,
                             count=aug_cfg.get("count", 1), max_count=aug_cfg.get("max_count"))
    kw: dict[str, Any] = dict(modality=modality, method=aug_cfg["method"], backend=aug_cfg["backend"],
                              generator=generator)
    if modality == "image":
        kw.update(p=aug_cfg["p"], scale=tuple(aug_cfg["scale"]), ratio=tuple(aug_cfg["ratio"]),
                  value=aug_cfg["value"], border=aug_cfg["border"], count=aug_cfg.get("count", 1),
                  max_count=aug_cfg.get("max_count"))
    else:
        if aug_cfg.get("count", 1) != 1 or aug_cfg.get("max_count") is not None:
            raise ValueError("aug.count / aug.max_count (blocks per image) apply to images, not point clouds")
        kw.update(alpha=1.0 if name == "random" else aug_cfg["alpha"], beta=aug_cfg["beta"])
        if name == "random":
            kw.pop("method")
    if kw.get("method") not in (None, "auto"):
        from reldrop.attribution.presets import get_preset

        if "epsilon" in get_preset(kw["method"]).kwargs:  # the presets that take an ε
            kw["epsilon"] = aug_cfg["epsilon"]
    kw.update(aug_cfg.get("kwargs") or {})
    try:
        return cast(Aug, RelDrop(model, **kw))  # called as aug(x, y) (return_mask=False)
    except TypeError as err:  # a typo in aug.kwargs: name the config key, no traceback
        raise ValueError(f"config aug.kwargs {dict(aug_cfg.get('kwargs') or {})}: {err}") from err
