"""The datasets by name: :func:`build_dataset` and :func:`dataset_names` over the builders of
:mod:`reldrop.data.registry`. The built-in source modules register themselves when imported; they
are imported on the first call (so ``import reldrop.data`` stays light).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .registry import DatasetInfo, builders

__all__ = ["build_dataset", "dataset_names"]

_loaded = False


def _load_builtin() -> None:
    global _loaded
    if _loaded:
        return
    from . import cifar, decoy, digits, imagefolder, modelnet, shapenet, shapes  # noqa: F401 (they register)

    _loaded = True


def dataset_names() -> list[str]:
    """Names of every registered dataset (built-in and user-registered), sorted."""
    _load_builtin()
    return sorted(builders())


def build_dataset(name: str, root: str | Path, split: str, *, train_transform: bool | None = None,
                  **kwargs: Any) -> DatasetInfo:
    """Build dataset ``name`` for ``split`` ("train" | "test"); ``train_transform`` defaults to split == "train"."""
    _load_builtin()
    registered = builders()
    if name not in registered:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(registered))}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if train_transform is None:
        train_transform = split == "train"
    return registered[name](Path(root), split, train_transform=train_transform, **kwargs)
