"""Tiny CIFAR python-pickle files for the data tests."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np


def write_cifar_pickle(root: Path, n_per_batch: int = 6, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Tiny CIFAR-10 (or -100) python-pickle batches of random images under ``root``; returns (data, labels)."""
    rng = np.random.default_rng(0)
    if num_classes == 10:
        folder = root / "cifar10" / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        with open(folder / "batches.meta", "wb") as f:
            pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, f)
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        key = b"labels"
    else:
        folder = root / "cifar-100-python"
        folder.mkdir(parents=True)
        with open(folder / "meta", "wb") as f:
            pickle.dump({b"fine_label_names": [f"f{i}".encode() for i in range(100)]}, f)
        names = ["train", "test"]
        key = b"fine_labels"
    all_data, all_labels = [], []
    for name in names:
        data = rng.integers(0, 256, size=(n_per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, num_classes, size=n_per_batch).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": data, key: labels, b"batch_label": name.encode()}, f)
        all_data.append(data)
        all_labels.append(np.asarray(labels))
    return np.concatenate(all_data), np.concatenate(all_labels)
