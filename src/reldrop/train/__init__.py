"""Training: config (YAML + overrides), the loop (resume, DDP), evaluation, builders, compare."""
from .config import DEFAULTS, apply_overrides, load_config
from .evaluate import evaluate
from .factory import build_augmentation
from .loop import train

__all__ = ["DEFAULTS", "load_config", "apply_overrides", "train", "evaluate", "build_augmentation"]
