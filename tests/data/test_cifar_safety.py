"""Issue 10 item 3: a crafted CIFAR python-pickle file in the data root cannot run code."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from helpers.faults import MarkerPayload
from reldrop.data import build_dataset


def _write(folder: Path, meta: object, batch: object) -> None:
    folder.mkdir(parents=True)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump(meta, f)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)


@pytest.mark.parametrize("where", ["meta", "batch"])
def test_crafted_cifar_pickle_is_refused_not_run(tmp_path: Path, where: str) -> None:
    marker = tmp_path / "PWNED"
    good_meta = {b"label_names": [f"c{i}".encode() for i in range(10)]}
    good_batch = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}
    evil = {b"x": MarkerPayload(marker)}
    _write(tmp_path / "cifar10" / "cifar-10-batches-py", {**good_meta, **evil} if where == "meta" else good_meta,
           {**good_batch, **evil} if where == "batch" else good_batch)
    with pytest.raises(ValueError, match=r"(batches\.meta|data_batch_1).*not allowed"):
        build_dataset("cifar10", tmp_path, "train")
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_numpy_arrays_of_every_protocol_still_load(tmp_path: Path, protocol: int) -> None:
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    data = np.arange(2 * 3072, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, f, protocol=protocol)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": [3, 7], b"batch_label": b"x"}, f, protocol=protocol)
    info = build_dataset("cifar10", tmp_path, "test", train_transform=False)
    assert len(info.dataset) == 2 and info.class_names[3] == "c3"
