"""Tiny configs and a tiny point-cloud dataset/model for the training and run tests (fast on 2 shared cores);
the ``conftest.py`` of ``tests/train`` and ``tests/runs`` expose its fixtures."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn as nn
from torch.utils.data import Dataset

from reldrop.data.registry import DatasetInfo, register_dataset
from reldrop.models import register
from reldrop.train.config import load_config


class _Blobs(Dataset):
    """Map-style point dataset (no get_batch: exercises the DataLoader path). Class k: points near a k-dependent centre."""

    def __init__(self, n: int, split: str, train_transform: bool) -> None:
        g = torch.Generator().manual_seed(0 if split == "train" else 1)
        self.labels = torch.arange(n) % 3
        centres = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
        self.points = centres[self.labels][:, None, :] + 0.6 * torch.randn(n, 16, 3, generator=g)
        self.train_transform = train_transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        p = self.points[i]
        if self.train_transform:  # per-item randomness from the global RNG (like typical point pipelines)
            p = p + 0.01 * torch.randn_like(p)
        return p, int(self.labels[i])


def _blobs(root: Path, split: str, *, train_transform: bool, subset: int | None = None, **_: Any) -> DatasetInfo:
    ds = _Blobs(60 if split == "train" else 30, split, train_transform)
    return DatasetInfo(dataset=ds, num_classes=3, class_names=["a", "b", "c"], modality="points", input_shape=(16, 3))


class _PointMLP(nn.Module):
    def __init__(self, num_classes: int = 3, in_channels: int = 3) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_channels, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU())
        self.drop = nn.Dropout(0.2)  # consumes the global RNG: resume must restore it
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.mlp(x).max(1).values))


try:
    register_dataset("_test_blobs")(_blobs)
    register("_test_point_mlp")(lambda num_classes=3, in_channels=3: _PointMLP(num_classes, in_channels))
except ValueError:  # already registered (module imported twice)
    pass


def tiny_digits(tmp_path: Path, **over: Any) -> dict[str, Any]:
    """digits, 200-image subset, small_cnn width 8, 2 epochs, batch 50."""
    cfg = load_config("digits", [
        "data.subset=200", "data.test_subset=100", "model.kwargs={width: 8}", "train.epochs=2",
        "train.batch_size=50", "train.progress=false", "train.threads=1", f"out={tmp_path / 'run'}",
    ])
    for k, v in over.items():
        section, _, key = k.partition("__")
        if key:
            cfg[section][key] = copy.deepcopy(v)
        else:
            cfg[section] = copy.deepcopy(v)
    return cfg


@pytest.fixture
def digits_cfg(tmp_path: Path) -> dict[str, Any]:
    return tiny_digits(tmp_path)


@pytest.fixture
def make_cfg() -> Any:
    """The :func:`tiny_digits` factory (``make_cfg(tmp_path, section__key=value, ...)``)."""
    return tiny_digits
