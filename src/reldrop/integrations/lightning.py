"""RelDrop for PyTorch Lightning: a mixin that augments the batch in ``on_after_batch_transfer``.

Lightning documents ``LightningModule.on_after_batch_transfer(batch, dataloader_idx)`` as the
place for batch augmentations on the device (a ``Callback`` cannot replace the batch). The mixin
applies RelDrop there **during training only** (not in validation, test, predict or the sanity
check), building the :class:`reldrop.RelDrop` once per module on first use::

    import lightning as L
    from reldrop.integrations.lightning import RelDropMixin

    class Net(RelDropMixin, L.LightningModule):       # the mixin first
        reldrop_kwargs = {"p": 0.5}                   # passed to reldrop.RelDrop
        def __init__(self):
            super().__init__()
            self.net = build_my_model()
        def configure_reldrop(self):                  # optional: attribute the inner model
            return reldrop.RelDrop(self.net, **self.reldrop_kwargs)
        def training_step(self, batch, batch_idx):    # batch[0] is already augmented
            x, y = batch
            return F.cross_entropy(self.net(x), y)

Batches: ``(x, y, ...)`` tuples/lists (``reldrop_batch_keys = (0, 1)``) or dicts
(``reldrop_batch_keys = ("image", "label")``); ``x`` is replaced, everything else is passed on.
This module imports neither ``lightning`` nor ``pytorch_lightning``: the mixin relies only on the
hook's name and on ``self.trainer.training``.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from ..augment import RelDrop

__all__ = ["RelDropMixin", "replace_input"]


def replace_input(batch: Any, keys: Sequence[Any], fn: Any) -> Any:
    """``batch`` with ``x = batch[keys[0]]`` replaced by ``fn(x, batch[keys[1]])``; same container type.

    Tuples (also named tuples), lists and mappings are supported; the input batch is not modified.
    """
    kx, ky = keys
    if isinstance(batch, Mapping):
        out = dict(batch)
        out[kx] = fn(batch[kx], batch[ky])
        return type(batch)(out) if type(batch) is not dict else out  # type: ignore[call-arg]
    if isinstance(batch, (tuple, list)):
        items = list(batch)
        items[kx] = fn(batch[kx], batch[ky])
        if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # named tuple
            return type(batch)(*items)
        return type(batch)(items)
    raise TypeError(f"RelDropMixin: batch must be a tuple, list or dict holding (x, y); got {type(batch).__name__} "
                    "(override on_after_batch_transfer to apply self.reldrop yourself)")


class RelDropMixin:
    """Applies :class:`reldrop.RelDrop` to training batches in ``on_after_batch_transfer``.

    Class attributes (override in the subclass):
        reldrop_kwargs: keyword arguments for ``reldrop.RelDrop`` (default ``{}``: images, p = 0.5).
        reldrop_batch_keys: where ``x`` and ``y`` are in the batch, default ``(0, 1)``.

    Methods:
        configure_reldrop(): build the RelDrop (default ``RelDrop(self, **reldrop_kwargs)``: the
            module's own ``forward`` gives the logits); override to attribute an inner model.
        reldrop: the RelDrop, built once on first use (``self.reldrop.enabled = False`` pauses it).
    """

    reldrop_kwargs: Mapping[str, Any] = {}
    reldrop_batch_keys: Sequence[Any] = (0, 1)

    def configure_reldrop(self) -> RelDrop:
        assert isinstance(self, torch.nn.Module), "RelDropMixin must be mixed into a LightningModule"
        return RelDrop(self, **dict(self.reldrop_kwargs))

    @property
    def reldrop(self) -> RelDrop:
        fn = self.__dict__.get("_reldrop_fn")
        if fn is None:
            fn = self.configure_reldrop()
            self.__dict__["_reldrop_fn"] = fn  # not a submodule/parameter: never in state_dict
        return fn

    def _reldrop_active(self) -> bool:
        trainer = getattr(self, "_trainer", None)  # None when the module is not attached to a Trainer
        if trainer is None:
            return False
        return bool(getattr(trainer, "training", False)) and not bool(getattr(trainer, "sanity_checking", False))

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        parent = getattr(super(), "on_after_batch_transfer", None)
        if parent is not None:
            batch = parent(batch, dataloader_idx)
        if not self._reldrop_active():
            return batch
        return replace_input(batch, self.reldrop_batch_keys, self.reldrop)
