"""Backend ``"vit"``: CP-LRP / AttnLRP of timm and torchvision Vision Transformers in one
hand-written pass (:mod:`.lrp`), on the block structure read from the model (:mod:`.plan`)."""
from __future__ import annotations

from .lrp import METHODS, ViTBackend, ViTLRP, build, is_vision_transformer, supports, unsupported_reason

__all__ = ["METHODS", "supports", "build", "unsupported_reason", "is_vision_transformer", "ViTLRP", "ViTBackend"]
