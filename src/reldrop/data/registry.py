"""Dataset registry: every source registers a builder under a name used by configs and the CLI.

A builder is ``fn(root: Path, split: str, *, train_transform: bool, **kwargs) -> DatasetInfo``.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from torch.utils.data import Dataset


@dataclass
class DatasetInfo:
    """A built dataset and what the rest of the pipeline needs to know about it.

    ``dataset[i]`` returns ``(x, y)``: images ``(C, H, W)`` float (normalized) or points ``(N, D)``
    float, and an int label.
    """

    dataset: Dataset
    num_classes: int
    class_names: list[str]
    modality: str  # "image" | "points"
    input_shape: tuple[int, ...]  # (C, H, W) or (N, D)
    mean: tuple[float, ...] | None = None  # normalization constants for images (to undo for plots)
    std: tuple[float, ...] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


_DATASETS: dict[str, Callable[..., DatasetInfo]] = {}

_BUILTIN_MODULES = ("digits", "cifar", "imagefolder", "modelnet", "shapenet", "shapes", "decoy")
_loaded = False


def register_dataset(name: str) -> Callable[[Callable[..., DatasetInfo]], Callable[..., DatasetInfo]]:
    def deco(fn: Callable[..., DatasetInfo]) -> Callable[..., DatasetInfo]:
        if name in _DATASETS:
            raise ValueError(f"dataset name {name!r} is already registered")
        _DATASETS[name] = fn
        return fn

    return deco


def _load_builtin() -> None:
    global _loaded
    if _loaded:
        return
    for mod in _BUILTIN_MODULES:
        try:
            importlib.import_module(f"reldrop.data.{mod}")
        except ModuleNotFoundError as err:
            if err.name != f"reldrop.data.{mod}":
                raise
    _loaded = True


def dataset_names() -> list[str]:
    _load_builtin()
    return sorted(_DATASETS)


def build_dataset(name: str, root: str | Path, split: str, *, train_transform: bool | None = None,
                  **kwargs: Any) -> DatasetInfo:
    """Build dataset ``name`` for ``split`` ("train" | "test"); ``train_transform`` defaults to split == "train"."""
    _load_builtin()
    if name not in _DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(_DATASETS))}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if train_transform is None:
        train_transform = split == "train"
    return _DATASETS[name](Path(root), split, train_transform=train_transform, **kwargs)


def reject_unknown_kwargs(dataset: str, unknown: Mapping[str, Any], builder: Callable[..., Any]) -> None:
    """TypeError listing ``unknown`` keys (a typo in ``data.kwargs``) and the builder's known ones."""
    if unknown:
        import inspect

        known = [p.name for p in inspect.signature(builder).parameters.values()
                 if p.kind is p.KEYWORD_ONLY and p.name != "train_transform"]
        raise TypeError(f"{dataset}: unknown keyword argument(s) {sorted(unknown)}; known: {known}")
