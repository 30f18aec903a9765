"""Every point-cloud format, written in exactly its on-disk layout into tmp_path and read back."""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from reldrop.data import build_dataset
from reldrop.data.points_transforms import normalize_unit_sphere


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("RELDROP_CACHE_DIR", str(tmp_path / "cache"))


def _cloud(rng: np.random.Generator, n: int, c: int = 3) -> np.ndarray:
    a = rng.normal(size=(n, c)).astype(np.float32)
    a[:, :3] = a[:, :3] * 40 + 100  # raw mesh units, far from the origin
    if c >= 6:
        a[:, 3:6] /= np.linalg.norm(a[:, 3:6], axis=1, keepdims=True)
    return a


def _tree(root: Path) -> set[tuple[str, int]]:
    return {(str(p.relative_to(root)), p.stat().st_mtime_ns) for p in root.rglob("*")}


def _write_folder(root: Path, rng: np.random.Generator) -> dict[str, np.ndarray]:
    written = {}
    for cls, n_train, n_test in (("chair", 3, 2), ("bed", 2, 1)):
        for split, count in (("train", n_train), ("test", n_test)):
            d = root / cls / split
            d.mkdir(parents=True)
            for i in range(count):
                a = _cloud(rng, 40)
                if i == 0:
                    np.savetxt(d / f"{cls}_{i:04d}.txt", a, delimiter=" ")
                else:
                    np.save(d / f"{cls}_{i:04d}.npy", a)
                written[f"{cls}/{split}/{i}"] = a
    (root / "README.md").write_text("not a class")
    return written


@pytest.mark.parametrize("cache", [True, False])
def test_folder_of_arrays_npy_and_txt(tmp_path, cache):
    root = tmp_path / "data" / "modelnet10"
    written = _write_folder(root, np.random.default_rng(0))
    before = _tree(tmp_path / "data")
    info = build_dataset("modelnet10", tmp_path / "data", "train", npoints=40, sampling="first", cache=cache,
                         augment=False)
    assert info.modality == "points" and info.input_shape == (40, 3)
    assert info.class_names == ["bed", "chair"] and info.num_classes == 2
    assert len(info.dataset) == 5 and info.extra["class_counts"] == [2, 3]
    x, y = info.dataset[0]  # bed/train/0 was written as .txt
    assert x.dtype == torch.float32 and x.shape == (40, 3) and y == 0
    expected = normalize_unit_sphere(torch.from_numpy(written["bed/train/0"]))
    assert torch.allclose(x, expected, atol=1e-5)
    x, y = info.dataset[3]  # chair/train/1 (.npy)
    assert y == 1 and torch.allclose(x, normalize_unit_sphere(torch.from_numpy(written["chair/train/1"])), atol=1e-5)
    assert _tree(tmp_path / "data") == before  # nothing written into the data folder
    cached = list((tmp_path / "cache").rglob("*.npy"))
    assert (len(cached) == 1) == cache
    # the generic name reads the same folder given directly
    test = build_dataset("point_folder", root, "test", npoints=16, cache=cache)
    assert len(test.dataset) == 3 and test.dataset[0][0].shape == (16, 3)


def test_folder_cache_is_reused_and_invalidated(tmp_path):
    root = tmp_path / "pts"
    _write_folder(root, np.random.default_rng(1))
    a = build_dataset("point_folder", root, "test", npoints=8, augment=False)
    b = build_dataset("point_folder", root, "test", npoints=8, augment=False)
    assert torch.equal(a.dataset.points, b.dataset.points)
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 1
    np.save(root / "bed" / "test" / "bed_0001.npy", _cloud(np.random.default_rng(9), 40))  # new file
    c = build_dataset("point_folder", root, "test", npoints=8, augment=False)
    assert len(c.dataset) == 4 and len(list((tmp_path / "cache").rglob("*.npy"))) == 2


def test_fps_and_uniform_sampling_are_deterministic_per_item(tmp_path):
    root = tmp_path / "pts"
    _write_folder(root, np.random.default_rng(2))
    for sampling in ("fps", "uniform"):
        lazy = build_dataset("point_folder", root, "train", npoints=10, sampling=sampling, cache=False, augment=False)
        eager = build_dataset("point_folder", root, "train", npoints=10, sampling=sampling, cache=True, augment=False)
        for i in range(len(lazy.dataset)):
            assert torch.allclose(lazy.dataset[i][0], lazy.dataset[i][0])
            assert torch.allclose(lazy.dataset[i][0], eager.dataset[i][0], atol=1e-6), sampling


def test_train_split_augments_by_default_test_does_not(tmp_path):
    root = tmp_path / "pts"
    _write_folder(root, np.random.default_rng(3))
    train = build_dataset("point_folder", root, "train", npoints=20)
    test = build_dataset("point_folder", root, "test", npoints=20)
    torch.manual_seed(0)
    assert not torch.equal(train.dataset[0][0], train.dataset[0][0])
    assert torch.equal(test.dataset[0][0], test.dataset[0][0])


def test_corrupt_and_missing_files_are_named(tmp_path):
    root = tmp_path / "pts"
    _write_folder(root, np.random.default_rng(4))
    bad = root / "chair" / "train" / "chair_0009.npy"
    bad.write_bytes(b"this is not numpy")
    with pytest.raises(ValueError, match="chair_0009.npy"):
        build_dataset("point_folder", root, "train", npoints=8)
    lazy = build_dataset("point_folder", root, "train", npoints=8, cache=False)
    with pytest.raises(ValueError, match="chair_0009.npy"):
        [lazy.dataset[i] for i in range(len(lazy.dataset))]
    flat = root / "chair" / "test" / "chair_0005.npy"
    np.save(flat, np.zeros((10, 2), np.float32))
    with pytest.raises(ValueError, match="chair_0005.npy"):
        build_dataset("point_folder", root, "test", npoints=8)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        build_dataset("point_folder", tmp_path / "nowhere", "train")


def _write_normal_resampled(root: Path, rng: np.random.Generator) -> dict[str, np.ndarray]:
    classes = ["airplane", "night_stand", "sofa"]
    root.mkdir(parents=True)
    (root / "modelnet40_shape_names.txt").write_text("\n".join(classes) + "\n")
    ids = {"train": ["airplane_0001", "night_stand_0001", "night_stand_0002", "sofa_0003"],
           "test": ["airplane_0002", "sofa_0004"]}
    written = {}
    for split, names in ids.items():
        (root / f"modelnet40_{split}.txt").write_text("\n".join(names) + "\n")
        for sid in names:
            cls = "_".join(sid.split("_")[:-1])
            (root / cls).mkdir(exist_ok=True)
            a = _cloud(rng, 30, 6)
            np.savetxt(root / cls / f"{sid}.txt", a, delimiter=",", fmt="%.6f")
            written[sid] = a
    return written


def test_modelnet40_normal_resampled(tmp_path):
    written = _write_normal_resampled(tmp_path / "modelnet40_normal_resampled", np.random.default_rng(5))
    info = build_dataset("modelnet40", tmp_path, "train", npoints=30, sampling="first", use_normals=True,
                         augment=False)
    assert info.class_names == ["airplane", "night_stand", "sofa"] and info.input_shape == (30, 6)
    assert [y for _, y in info.dataset] == [0, 1, 1, 2]
    x, _ = info.dataset[1]
    ref = normalize_unit_sphere(torch.from_numpy(written["night_stand_0001"]))
    assert torch.allclose(x, ref, atol=1e-4)  # xyz normalized, normals kept
    xyz_only = build_dataset("modelnet40", tmp_path, "test", npoints=12)
    assert xyz_only.input_shape == (12, 3) and len(xyz_only.dataset) == 2
    assert xyz_only.dataset[1][0].shape == (12, 3) and xyz_only.dataset[1][1] == 2
    (tmp_path / "modelnet40_normal_resampled" / "sofa" / "sofa_0004.txt").unlink()
    with pytest.raises(FileNotFoundError, match="sofa_0004.txt"):
        build_dataset("modelnet40", tmp_path, "test", npoints=12)


def test_modelnet40_h5(tmp_path):
    root = tmp_path / "modelnet40_ply_hdf5_2048"
    root.mkdir()
    (root / "shape_names.txt").write_text("airplane\nbathtub\nbed\n")
    rng = np.random.default_rng(6)
    data = {}
    for name, count in (("ply_data_train0.h5", 3), ("ply_data_train1.h5", 2), ("ply_data_test0.h5", 2)):
        d = rng.normal(size=(count, 64, 3)).astype(np.float32)
        lab = rng.integers(0, 3, size=(count, 1)).astype(np.uint8)
        nrm = rng.normal(size=(count, 64, 3)).astype(np.float32)
        with h5py.File(root / name, "w") as h:
            h.create_dataset("data", data=d)
            h.create_dataset("label", data=lab)
            h.create_dataset("normal", data=nrm)
        data[name] = (d, lab, nrm)
    info = build_dataset("modelnet40_h5", tmp_path, "train", npoints=64, sampling="first", augment=False)
    assert len(info.dataset) == 5 and info.class_names == ["airplane", "bathtub", "bed"]
    labels = np.concatenate([data["ply_data_train0.h5"][1], data["ply_data_train1.h5"][1]]).ravel().tolist()
    assert [y for _, y in info.dataset] == labels
    x3, _ = info.dataset[3]  # first cloud of the second file
    assert torch.allclose(x3, normalize_unit_sphere(torch.from_numpy(data["ply_data_train1.h5"][0][0])), atol=1e-5)
    with_normals = build_dataset("modelnet40_h5", root, "test", npoints=32, use_normals=True)
    assert with_normals.input_shape == (32, 6) and len(with_normals.dataset) == 2
    with h5py.File(root / "ply_data_test1.h5", "w") as h:
        h.create_dataset("label", data=np.zeros((1, 1), np.uint8))  # no 'data'
    with pytest.raises(ValueError, match="ply_data_test1.h5"):
        build_dataset("modelnet40_h5", root, "test", npoints=32, cache=False)


def test_shapenet_part_as_classification(tmp_path):
    root = tmp_path / "shapenetcore_partanno_segmentation_benchmark_v0_normal"
    (root / "train_test_split").mkdir(parents=True)
    cats = [("Airplane", "02691156"), ("Bag", "02773838"), ("Cap", "02954340")]
    (root / "synsetoffset2category.txt").write_text("".join(f"{n}\t{s}\n" for n, s in cats))
    rng = np.random.default_rng(7)
    lists = {"train": [("02691156", "a1"), ("02954340", "c1")], "val": [("02773838", "b1")],
             "test": [("02773838", "b2"), ("02691156", "a2")]}
    for split, entries in lists.items():
        (root / "train_test_split" / f"shuffled_{split}_file_list.json").write_text(
            json.dumps([f"shape_data/{s}/{i}" for s, i in entries]))
        for s, i in entries:
            (root / s).mkdir(exist_ok=True)
            a = np.concatenate([_cloud(rng, 50, 6), rng.integers(0, 4, (50, 1)).astype(np.float32)], 1)
            np.savetxt(root / s / f"{i}.txt", a, fmt="%.6f")
    info = build_dataset("shapenet", tmp_path, "train", npoints=20, use_normals=True)
    assert info.class_names == ["Airplane", "Bag", "Cap"] and info.input_shape == (20, 6)
    assert [y for _, y in info.dataset] == [0, 2, 1]  # train then val
    only_train = build_dataset("shapenet", tmp_path, "train", npoints=20, include_val=False)
    assert len(only_train.dataset) == 2
    test = build_dataset("shapenet", root, "test", npoints=20, sampling="uniform")
    assert [y for _, y in test.dataset] == [1, 0]
    x, _ = test.dataset[0]
    assert torch.allclose(x.norm(dim=-1).max(), torch.tensor(1.0))
    (root / "train_test_split" / "shuffled_test_file_list.json").write_text("{not json")
    with pytest.raises(ValueError, match="shuffled_test_file_list.json"):
        build_dataset("shapenet", root, "test")


def test_train_subset_is_class_balanced_and_test_is_whole(tmp_path):
    root = tmp_path / "pts"
    _write_folder(root, np.random.default_rng(8))  # train: bed 2, chair 3; test: bed 1, chair 2
    sub = build_dataset("point_folder", root, "train", npoints=8, subset=2)
    assert sorted(y for _, y in sub.dataset) == [0, 1]
    test = build_dataset("point_folder", root, "test", npoints=8, subset=2)
    assert len(test.dataset) == 3
    shapes = build_dataset("shapes", ".", "train", num_per_class=4, npoints=16, subset=22)
    assert torch.bincount(shapes.dataset.labels).tolist() == [2] * 11
