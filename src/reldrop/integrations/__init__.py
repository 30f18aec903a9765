"""Glue for training frameworks. Nothing here imports a framework until it is used.

* :mod:`reldrop.integrations.lightning`: :class:`~reldrop.integrations.lightning.RelDropMixin` for a
  ``LightningModule`` (RelDrop in ``on_after_batch_transfer``, training only).
* Accelerate / Fabric / plain loops need no glue: ``x = reldrop_fn(x, y)`` after the batch is on
  the device. The HF ``Trainer`` (whose callbacks cannot change a batch) takes a subclass that
  overrides ``compute_loss``: see ``examples/hf_trainer.py``.
"""
from __future__ import annotations

from typing import Any

__all__ = ["lightning"]


def __getattr__(name: str) -> Any:
    if name == "lightning":
        import reldrop.integrations.lightning as lightning  # not 'from . import': it asks __getattr__ again

        return lightning
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
