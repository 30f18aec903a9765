"""Zero-shot evaluation of a 1000-class ImageNet model on ImageNet-R / -A (200 classes) and
ImageNet-O (OOD detection).

Class-subset mapping: ImageNet-R and ImageNet-A folders are named by wnid (``<root>/<wnid>/*``).
An ImageNet-1k model's output index order is the sorted list of the 1000 training wnids (the
torchvision/timm convention). A 200-class sample is scored by restricting the logits to the 200
columns of its dataset's wnids and taking the argmax among them (Hendrycks et al.).

ImageNet-O: the anomaly score is the negative maximum softmax probability; ImageNet-O images
are the positive class against in-distribution (ImageNet val) images. AUROC and AUPR
(average precision) come from scikit-learn.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import torch
import torch.nn as nn

from ._model import eval_mode

__all__ = ["subset_indices", "list_wnids", "subset_accuracy", "max_softmax", "ood_detection"]


def list_wnids(root: str | os.PathLike[str]) -> list[str]:
    """Sorted wnid folder names under ``root`` (e.g. an ImageNet train folder -> the 1000-class order)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"folder not found: {root} (expected <root>/<wnid>/...)")
    wnids = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not wnids:
        raise FileNotFoundError(f"no <wnid> sub-folders in {root}")
    return wnids


def subset_indices(model_wnids: Sequence[str], subset_wnids: Sequence[str]) -> torch.Tensor:
    """``(len(subset_wnids),)`` long: the model output index of each subset wnid (in that order)."""
    index = {w: i for i, w in enumerate(model_wnids)}
    if len(index) != len(model_wnids):
        raise ValueError("model_wnids must not hold duplicates")
    missing = [w for w in subset_wnids if w not in index]
    if missing:
        raise ValueError(f"subset_wnids not among the model's classes: {missing[:5]}"
                         f"{' ...' if len(missing) > 5 else ''}")
    return torch.tensor([index[w] for w in subset_wnids], dtype=torch.long)


@torch.no_grad()
def subset_accuracy(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                    indices: torch.Tensor, *, device: torch.device | str | None = None) -> dict[str, float]:
    """Accuracy when the logits are restricted to ``indices`` ``(K,)``.

    ``batches`` yields ``(x, y)`` with ``y`` in ``0..K-1`` indexing ``indices`` (e.g. an
    ImageFolder over the ImageNet-R wnid folders: sorted wnids = :func:`list_wnids`).
    Returns ``{"accuracy", "n"}``.
    """
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    idx = indices.to(dev)
    hits = torch.zeros((), dtype=torch.long, device=dev)
    n = 0
    with eval_mode(model):
        for x, y in batches:
            x, y = x.to(dev), y.to(dev)
            pred = model(x).index_select(1, idx).argmax(dim=1)
            hits += (pred == y).sum()
            n += int(y.shape[0])
    if n == 0:
        raise ValueError("batches must yield at least one (x, y) batch")
    return {"accuracy": int(hits) / n, "n": n}


@torch.no_grad()
def max_softmax(model: nn.Module, batches: Iterable[torch.Tensor | tuple[torch.Tensor, ...]], *,
                device: torch.device | str | None = None) -> torch.Tensor:
    """``(N,)`` maximum softmax probability for every input (batches of ``x`` or ``(x, ...)``)."""
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    out = []
    with eval_mode(model):
        for b in batches:
            x = b[0] if isinstance(b, (tuple, list)) else b
            out.append(model(x.to(dev)).softmax(dim=1).amax(dim=1))
    if not out:
        raise ValueError("batches must yield at least one batch")
    return torch.cat(out)


def ood_detection(score_in: torch.Tensor, score_out: torch.Tensor) -> dict[str, float]:
    """AUROC / AUPR of separating OOD (positive) from in-distribution with anomaly = -max softmax.

    Args:
        score_in: ``(N_in,)`` max-softmax of in-distribution inputs.
        score_out: ``(N_out,)`` max-softmax of OOD inputs (ImageNet-O).
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    if score_in.numel() == 0 or score_out.numel() == 0:
        raise ValueError("score_in and score_out must both be non-empty")
    s = torch.cat([score_in.flatten(), score_out.flatten()]).double().cpu()
    labels = torch.cat([torch.zeros(score_in.numel()), torch.ones(score_out.numel())])
    anomaly = (-s).numpy()
    return {"auroc": float(roc_auc_score(labels.numpy(), anomaly)),
            "aupr": float(average_precision_score(labels.numpy(), anomaly)),
            "n_in": int(score_in.numel()), "n_out": int(score_out.numel())}
