"""Backend ``"points"``: LRP-z⁺ (Flat input layers) of reldrop's PointNet++ / PointNet in one
hand-written pass (:mod:`.lrp`), on the structure read from the exact model classes (:mod:`.plan`)."""
from __future__ import annotations

from .lrp import METHODS, FastPointLRP, PointsBackend, supports

__all__ = ["supports", "FastPointLRP", "PointsBackend", "METHODS"]
