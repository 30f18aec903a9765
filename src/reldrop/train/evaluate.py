"""Evaluation during training: batches in a fixed order, an on-device meter, :func:`evaluate`.

:func:`iter_batches` yields ``(x, y)`` on the device (in-memory datasets build whole batches via
``get_batch``; others go through a ``DataLoader``); :class:`Meter` accumulates loss, top-1/top-5 and
the confusion matrix without host syncs per step; :func:`evaluate` returns loss, top-1, top-5 and
class-mean accuracy (%) over a dataset; :func:`subset_index` is the fixed class-balanced subset
used for ``data.test_subset``.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from .distributed import DistInfo, all_reduce_sum, shard_indices

__all__ = ["iter_batches", "Meter", "autocast", "evaluate", "subset_index"]


def iter_batches(ds: Any, index: torch.Tensor, batch_size: int, *, device: torch.device,
                 generator: torch.Generator | None, num_workers: int, drop_last: bool
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches ``(x, y)`` on ``device`` in the order of ``index``; in-memory datasets build them as tensors."""
    n = index.numel()
    stop = (n // batch_size) * batch_size if drop_last else n
    if hasattr(ds, "get_batch"):
        for s in range(0, stop, batch_size):
            yield ds.get_batch(index[s:s + batch_size], generator=generator, device=device)
        return
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, sampler=index.tolist(), num_workers=num_workers,
                                         drop_last=drop_last, pin_memory=device.type == "cuda",
                                         persistent_workers=False)
    for x, y in loader:
        yield x.to(device, non_blocking=True).float(), torch.as_tensor(y).to(device, non_blocking=True).long().view(-1)


class Meter:
    """On-device accumulators for loss, top-1/top-5 and the confusion matrix (no host syncs per step)."""

    def __init__(self, num_classes: int, device: torch.device) -> None:
        self.k = num_classes
        self.conf = torch.zeros(num_classes * num_classes, dtype=torch.long, device=device)
        self.sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, top5 correct, count

    @torch.no_grad()
    def update(self, logits: torch.Tensor, y: torch.Tensor, loss_sum: torch.Tensor) -> None:
        logits = logits.detach().float()
        pred = logits.argmax(1)
        self.conf += torch.bincount(y * self.k + pred, minlength=self.k * self.k)
        k5 = min(5, logits.shape[1])
        top5 = (logits.topk(k5, 1).indices == y[:, None]).any(1).sum()
        self.sums += torch.stack([loss_sum.detach().double(), top5.double(),
                                  torch.tensor(float(y.numel()), dtype=torch.float64, device=y.device)])

    def result(self, info: DistInfo | None = None, prefix: str = "") -> dict[str, float]:
        conf, sums = self.conf.clone(), self.sums.clone()
        if info is not None:
            all_reduce_sum(conf, info)
            all_reduce_sum(sums, info)
        conf = conf.view(self.k, self.k).double().cpu()
        loss_sum, top5, count = sums.cpu().tolist()
        count = max(count, 1.0)
        per_class_n = conf.sum(1)
        present = per_class_n > 0
        recall = conf.diag()[present] / per_class_n[present]
        return {f"{prefix}loss": loss_sum / count, f"{prefix}acc": 100.0 * float(conf.diag().sum()) / count,
                f"{prefix}top5": 100.0 * top5 / count,
                f"{prefix}macro": 100.0 * float(recall.mean()) if present.any() else float("nan"),
                f"{prefix}n": int(sums[2].item())}


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    if device.type != "cuda" or amp == "none":
        return contextlib.nullcontext()
    if amp == "auto":
        amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


@torch.no_grad()
def evaluate(model: nn.Module, ds: Any, num_classes: int, *, device: torch.device, batch_size: int = 512,
             info: DistInfo | None = None, amp: str = "none", num_workers: int = 0,
             index: torch.Tensor | None = None, prefix: str = "test_") -> dict[str, float]:
    """Loss, top-1, top-5 and class-mean (macro) accuracy (%) of ``model`` over the whole ``ds`` (eval mode).

    Under DDP every rank evaluates ``index[rank::world]`` and the confusion matrices are summed.
    """
    info = info or DistInfo(device=device)
    was_training = model.training
    model.eval()
    index = torch.arange(len(ds)) if index is None else index
    index = shard_indices(index, info.rank, info.world_size, pad=False)
    meter = Meter(num_classes, device)
    for x, y in iter_batches(ds, index, batch_size, device=device, generator=None, num_workers=num_workers,
                              drop_last=False):
        with autocast(device, amp):
            logits = model(x)
        meter.update(logits, y, F.cross_entropy(logits.float(), y, reduction="sum"))
    model.train(was_training)
    return meter.result(info, prefix)


def subset_index(ds: Any, n: int) -> torch.Tensor:
    """Class-balanced (when ``ds.labels`` exists) subset of ``n`` indices of ``ds``, fixed seed 0, sorted."""
    labels = getattr(ds, "labels", None)
    if labels is not None:
        from reldrop.data.tensor_dataset import class_balanced_subset

        return class_balanced_subset(torch.as_tensor(labels), n, seed=0)
    g = torch.Generator().manual_seed(0)
    return torch.randperm(len(ds), generator=g)[:n].sort().values

