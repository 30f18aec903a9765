"""Training: config (YAML + overrides), the engine (loop, run directory, checkpoints, resume, DDP), compare."""
from .config import DEFAULTS, apply_overrides, load_config
from .engine import build_augmentation, evaluate, train

__all__ = ["DEFAULTS", "load_config", "apply_overrides", "train", "evaluate", "build_augmentation"]
