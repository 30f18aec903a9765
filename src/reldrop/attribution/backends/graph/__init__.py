"""The ``"graph"`` attribution backend: LRP of any fx-traceable classifier, rules looked up per op.

* :mod:`.rules` - the one table (op / module class -> rule kind; presets -> rules),
* :mod:`.plan` - the traced graph compiled into steps (signals, relevance path, first layer, top,
  BatchNorm folding, refusals naming the node),
* :mod:`.ops` - the rules as modified gradients (autograd functions),
* :mod:`.lrp` - :class:`GraphLRP` and the registry entry :class:`GraphBackend`.

The bias-free conservation check that tests it is :mod:`reldrop.attribution.check`.
"""
from __future__ import annotations

from ...registry import register_backend
from .lrp import METHODS, GraphBackend, GraphLRP, plan_for

register_backend("graph", GraphBackend())  # ahead of the fallback, after fast/points/vit

__all__ = ["GraphLRP", "GraphBackend", "METHODS", "plan_for"]
