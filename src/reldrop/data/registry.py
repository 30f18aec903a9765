"""Dataset registry: every source registers a builder under a name used by configs and the CLI.

A builder is ``fn(root: Path, split: str, *, train_transform: bool, **kwargs) -> DatasetInfo``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
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


def register_dataset(name: str) -> Callable[[Callable[..., DatasetInfo]], Callable[..., DatasetInfo]]:
    def deco(fn: Callable[..., DatasetInfo]) -> Callable[..., DatasetInfo]:
        if name in _DATASETS:
            raise ValueError(f"dataset name {name!r} is already registered")
        _DATASETS[name] = fn
        return fn

    return deco


def builders() -> Mapping[str, Callable[..., DatasetInfo]]:
    """The registered builders ``{name: fn}`` (a read-only view; :mod:`reldrop.data.catalog` fills it)."""
    return MappingProxyType(_DATASETS)


def reject_unknown_kwargs(dataset: str, unknown: Mapping[str, Any], builder: Callable[..., Any]) -> None:
    """TypeError listing ``unknown`` keys (a typo in ``data.kwargs``) and the builder's known ones."""
    if unknown:
        import inspect

        known = [p.name for p in inspect.signature(builder).parameters.values()
                 if p.kind is p.KEYWORD_ONLY and p.name != "train_transform"]
        raise TypeError(f"{dataset}: unknown keyword argument(s) {sorted(unknown)}; known: {known}")
