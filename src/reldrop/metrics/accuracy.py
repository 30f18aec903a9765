"""Instance (micro) and class (macro) accuracy, accumulated on the device."""
from __future__ import annotations

from typing import Callable, Iterable

import torch
import torch.nn as nn

from .._checks import check_batch_match, check_tensor
from ..models.modes import eval_mode

__all__ = ["accuracy_counts", "evaluate_accuracy"]


def accuracy_counts(logits: torch.Tensor, y: torch.Tensor, num_classes: int | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class ``(correct, total)`` counts, each ``(num_classes,)`` long, from ``(B, K)`` logits."""
    check_tensor("logits", logits, (2,), "(B, num_classes)")
    check_tensor("y", y, (1,), "(B,) long labels")
    check_batch_match("logits", logits, "y", y)
    k = num_classes or logits.shape[1]
    y = y.to(logits.device).long()
    hit = (logits.argmax(dim=1) == y).long()
    total = torch.bincount(y, minlength=k)
    correct = torch.bincount(y, weights=hit.to(logits.dtype), minlength=k).long()
    return correct, total


@torch.no_grad()
def evaluate_accuracy(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    device: torch.device | str | None = None,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    num_classes: int | None = None,
) -> dict[str, float]:
    """Accuracy of ``model`` over ``batches`` of ``(x, y)``.

    ``transform`` (optional) is applied to each input batch on the device before the forward
    (e.g. a corruption followed by normalization). Returns ``{"accuracy", "class_accuracy", "n"}``
    (accuracies as fractions in [0, 1]; class accuracy averages over classes present).
    One host sync at the end.
    """
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    correct = total = None
    with eval_mode(model):
        for x, y in batches:
            x, y = x.to(dev), y.to(dev)
            if transform is not None:
                x = transform(x)
            out = model(x)
            c, t = accuracy_counts(out, y, num_classes or out.shape[1])
            correct = c if correct is None else correct + c
            total = t if total is None else total + t
    if correct is None or total is None:
        raise ValueError("batches must yield at least one (x, y) batch")
    n = int(total.sum())
    present = total > 0
    cls = float((correct[present].double() / total[present].double()).mean())
    return {"accuracy": float(correct.sum()) / n, "class_accuracy": cls, "n": n}
