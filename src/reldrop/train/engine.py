"""Compatibility module: the training engine now lives in :mod:`reldrop.train.loop` (the epoch loop),
:mod:`reldrop.train.evaluate` (meter, evaluation), :mod:`reldrop.train.factory` (builders),
:mod:`reldrop.augment` (``RandomErasing``, ``build_augmentation``) and :mod:`reldrop.runs` (run
directory, environment, checkpoints, metrics log). Every name ``reldrop.train.engine`` exported
before is re-exported here.
"""
from __future__ import annotations

from ..augment import RandomErasing, build_augmentation
from ..runs import environment, load_checkpoint, resolve_run_dir, save_checkpoint
from .evaluate import evaluate
from .factory import build_model, build_optimizer, build_scheduler
from .loop import METRIC_KEYS, derive_seed, train

__all__ = ["train", "build_augmentation", "RandomErasing", "evaluate", "derive_seed", "resolve_run_dir",
           "save_checkpoint", "load_checkpoint", "METRIC_KEYS", "build_model", "build_optimizer", "build_scheduler",
           "environment"]
