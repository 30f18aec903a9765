"""The built-in attribution backends, one subpackage each; importing one registers it
(:mod:`reldrop.attribution.registry`), and this package imports them all, in the order ``auto``
asks them: ``fast`` (ReLU CNNs), ``points`` (reldrop's point nets), ``vit`` (Vision Transformers),
``graph`` (any fx-traceable model, rules looked up per op; after the hand-written ones, so they keep
their exact numbers), then the general fallback ``zennit``."""
from __future__ import annotations

# registration order = the order `auto` asks them in (the fallback, registered last, stays last)
from . import fast  # noqa: F401 (registers "fast")
from . import points  # noqa: F401 (registers "points", also answering backend="fast")
from . import vit  # noqa: F401 (registers "vit")
from . import graph  # noqa: F401 (registers "graph")
from . import zennit  # noqa: F401 (registers "zennit", the general fallback)

__all__ = ["fast", "points", "vit", "graph", "zennit"]
