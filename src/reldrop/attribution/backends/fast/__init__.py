"""Backend ``"fast"``: ε-LRP (Flat first layer) of ReLU/ReLU6 CNNs in one hand-written backward pass
(:mod:`.lrp`), on a plan compiled once from an fx trace (:mod:`.plan`) with the elementwise and
convolution pieces of :mod:`.ops`."""
from __future__ import annotations

from .lrp import METHODS, FastBackend, FastLRP, build, supports

__all__ = ["supports", "build", "FastLRP", "FastBackend", "METHODS"]
