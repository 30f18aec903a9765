"""Builders from a resolved config: model, optimizer, per-epoch schedule, augmentation.

The augmentation builder lives beside RelDrop (:func:`reldrop.augment.build_augmentation`) and is
re-exported here so that every builder a training run uses has one address.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn as nn

from ..augment import build_augmentation

__all__ = ["build_model", "build_optimizer", "build_scheduler", "build_augmentation"]


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

