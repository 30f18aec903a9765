"""Zero-shot evaluation of a 1000-class ImageNet model on ImageNet-R / -A (200 classes) and
ImageNet-O (OOD detection).

Class-subset mapping: ImageNet-R and ImageNet-A folders are named by wnid (``<root>/<wnid>/*``).
An ImageNet-1k model's output index order is the sorted list of the 1000 training wnids (the
torchvision/timm convention). A 200-class sample is scored by restricting the logits to the 200
columns of its dataset's wnids and taking the argmax among them (Hendrycks et al.).

ImageNet-O: the anomaly score is the negative maximum softmax probability; ImageNet-O images
are the positive class against in-distribution (ImageNet val) images. AUROC and AUPR
(average precision) come from scikit-learn.

:func:`evaluate_zeroshot` runs all three on the folders under one root (``reldrop evaluate
--metrics zeroshot --zeroshot-root DIR``)::

    DIR/imagenet-r/<wnid>/*.jpg     200 wnid folders (the tarballs' layout; imagenet_r, ImageNet-R work too)
    DIR/imagenet-a/<wnid>/*.jpg     200 wnid folders (a README.txt beside them is ignored)
    DIR/imagenet-o/<wnid>/*.jpg     200 wnid folders

For ImageNet-O the softmax is taken over the logits restricted to its 200 wnids, and the
in-distribution images are the model's own test (ImageNet val) images of those classes (Hendrycks
et al.'s protocol).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import torch
import torch.nn as nn

from ..models.modes import eval_mode

__all__ = ["subset_indices", "list_wnids", "subset_accuracy", "max_softmax", "ood_detection", "ZEROSHOT_SETS",
           "find_zeroshot_folders", "evaluate_zeroshot"]

#: the zero-shot sets by short name and their folder name in the tarballs
ZEROSHOT_SETS = {"r": "imagenet-r", "a": "imagenet-a", "o": "imagenet-o"}


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


def find_zeroshot_folders(root: str | os.PathLike[str], sets: Sequence[str] = ("r", "a", "o")) -> dict[str, Path]:
    """``{"r": DIR/imagenet-r, ...}`` for ``sets``; folder names match case-insensitively, ``_`` = ``-``.

    Raises ``FileNotFoundError`` naming every missing folder and the expected layout.
    """
    root = Path(root)
    unknown = [s for s in sets if s not in ZEROSHOT_SETS]
    if unknown:
        raise ValueError(f"unknown zero-shot sets {unknown}; choose from {', '.join(ZEROSHOT_SETS)}")
    if not root.is_dir():
        raise FileNotFoundError(f"zero-shot root not found: {root} (expected {root}/imagenet-r, imagenet-a, "
                                "imagenet-o, each holding <wnid>/ image folders)")
    children = {d.name.lower().replace("_", "-"): d for d in root.iterdir() if d.is_dir()}
    found, missing = {}, []
    for s in sets:
        d = children.get(ZEROSHOT_SETS[s])
        if d is None:
            missing.append(ZEROSHOT_SETS[s])
        else:
            found[s] = d
    if missing:
        raise FileNotFoundError(f"zero-shot folder(s) missing under {root}: {', '.join(missing)} (expected "
                                f"{root}/<imagenet-r|imagenet-a|imagenet-o>/<wnid>/*.jpg, as the tarballs extract; "
                                "choose the sets present with --zeroshot-sets)")
    return found


def _folder_batches(ds: torch.utils.data.Dataset, batch_size: int, num_workers: int = 0):
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, num_workers=num_workers)
    for x, y in loader:
        yield x.float(), torch.as_tensor(y).long()


def evaluate_zeroshot(model: nn.Module, root: str | os.PathLike[str], model_wnids: Sequence[str],
                      in_distribution: Iterable[tuple[torch.Tensor, torch.Tensor]], *,
                      transform: object, sets: Sequence[str] = ("r", "a", "o"), batch_size: int = 64,
                      device: torch.device | str = "cpu", num_workers: int = 0) -> dict[str, dict[str, float]]:
    """Zero-shot accuracy on ImageNet-R / -A and OOD detection on ImageNet-O (see the module docstring).

    Args:
        model: a classifier over ``model_wnids`` (logits ``(B, len(model_wnids))``), e.g. ImageNet-1k.
        root: the folder holding ``imagenet-r``, ``imagenet-a``, ``imagenet-o``.
        model_wnids: the model's output classes in index order (ImageNet: the sorted 1000 wnids).
        in_distribution: ``(x, y)`` batches of the model's test images (labels index ``model_wnids``);
            those of ImageNet-O's classes are the in-distribution side for ``"o"``.
        transform: PIL image -> normalized ``(C, H, W)`` tensor (the model's eval transform).
        sets: any of ``"r"``, ``"a"``, ``"o"``.

    Returns ``{"r": {"accuracy" (%), "n", "classes"}, "a": {...}, "o": {"auroc", "aupr", "n_in",
    "n_out", "classes"}}`` for the requested sets.
    """
    from ..data.imagefolder import ImageFolderDataset

    folders = find_zeroshot_folders(root, sets)
    dev = torch.device(device)
    out: dict[str, dict[str, float]] = {}
    for s, folder in folders.items():
        ds = ImageFolderDataset(folder, transform)  # type: ignore[arg-type]
        try:
            idx = subset_indices(model_wnids, ds.classes)
        except ValueError as err:
            raise ValueError(f"{folder.name}: its class folders must be wnids the model was trained on "
                             f"(the model's classes: {list(model_wnids[:3])} ...): {err}") from None
        if s in ("r", "a"):
            acc = subset_accuracy(model, _folder_batches(ds, batch_size, num_workers), idx, device=dev)
            out[s] = {"accuracy": 100 * acc["accuracy"], "n": acc["n"], "classes": len(ds.classes)}
            continue
        restricted = _Restricted(model, idx.to(dev))
        score_out = max_softmax(restricted, _folder_batches(ds, batch_size, num_workers), device=dev)
        keep = torch.zeros(len(model_wnids), dtype=torch.bool)
        keep[idx] = True
        ins = [x[keep[y.cpu()]] for x, y in in_distribution]
        ins = [x for x in ins if x.shape[0]]
        if not ins:
            raise ValueError(f"{folder.name}: no in-distribution test images of its {len(ds.classes)} classes "
                             "(the model's test set must hold ImageNet val images of those wnids)")
        score_in = max_softmax(restricted, ins, device=dev)
        out[s] = {**ood_detection(score_in, score_out), "classes": len(ds.classes)}
    return out


class _Restricted(nn.Module):
    """``model``'s logits at the columns ``indices`` only (the class subset of a zero-shot set)."""

    def __init__(self, model: nn.Module, indices: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.indices = indices

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).index_select(1, self.indices)
