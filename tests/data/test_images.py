"""Image datasets: digits, CIFAR pickle + ImageFolder layouts (tiny fixture files), ImageNet folder, transforms."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.cifar_files import write_cifar_pickle
from reldrop.data import build_dataset
from reldrop.data.cifar import load_cifar_pickle
from reldrop.data.imagefolder import load_imagefolder_tensor
from reldrop.data.tensor_dataset import TensorImageDataset, class_balanced_subset
from reldrop.data.transforms import CIFAR10_MEAN, CIFAR10_STD, Normalize, RandomCropFlip

PIL = pytest.importorskip("PIL.Image")


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("RELDROP_CACHE_DIR", str(cache))
    return cache


def _unnormalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return x * s + m


# ---------------------------------------------------------------------------------------- digits


def test_digits_split_is_stratified_deterministic_and_normalized() -> None:
    tr = build_dataset("digits", ".", "train")
    te = build_dataset("digits", ".", "test")
    assert (len(tr.dataset), len(te.dataset)) == (1437, 360)
    assert tr.input_shape == (1, 8, 8) and tr.num_classes == 10 and tr.modality == "image"
    counts = torch.bincount(te.dataset.labels, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: 20 % of ~180 per class
    x, _ = te.dataset.get_batch(torch.arange(len(te.dataset)))
    assert x.shape == (360, 1, 8, 8)
    xt, _ = build_dataset("digits", ".", "train", train_transform=False).dataset.get_batch(torch.arange(1437))
    assert abs(float(xt.mean())) < 1e-4 and abs(float(xt.std()) - 1) < 1e-3
    te2 = build_dataset("digits", ".", "test")
    assert torch.equal(te.dataset.images, te2.dataset.images)
    # train and test are disjoint sets of images
    a = {tuple(v.flatten().tolist()) for v in tr.dataset.images}
    b = [tuple(v.flatten().tolist()) for v in te.dataset.images]
    assert sum(v in a for v in b) < 10  # digits has a few exact duplicates, not whole overlap


def test_digits_subset_is_class_balanced() -> None:
    tr = build_dataset("digits", ".", "train", subset=200)
    assert len(tr.dataset) == 200
    assert torch.bincount(tr.dataset.labels).tolist() == [20] * 10


# ---------------------------------------------------------------------------------------- subsets


def test_class_balanced_subset_uneven_classes_and_seed() -> None:
    labels = torch.tensor([0] * 50 + [1] * 3 + [2] * 40)
    idx = class_balanced_subset(labels, 30, seed=1)
    assert idx.numel() == 30 and idx.unique().numel() == 30
    c = torch.bincount(labels[idx], minlength=3).tolist()
    assert c[1] == 3 and abs(c[0] - c[2]) <= 1  # the small class gives all it has, the rest is split evenly
    assert torch.equal(idx, class_balanced_subset(labels, 30, seed=1))
    assert not torch.equal(idx, class_balanced_subset(labels, 30, seed=2))
    with pytest.raises(ValueError, match="subset"):
        class_balanced_subset(labels, 0)


# ---------------------------------------------------------------------------------------- transforms


def test_random_crop_flip_outputs_are_crops_of_the_padded_image() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 8, 8)
    out = RandomCropFlip(pad=2, flip=True)(x, g)
    assert out.shape == x.shape
    xp = torch.nn.functional.pad(x, (2, 2, 2, 2))
    flips = 0
    for b in range(6):
        matches = [(oy, ox, f) for oy in range(5) for ox in range(5) for f in (False, True)
                   if torch.equal(out[b], (lambda c: c.flip(-1) if f else c)(xp[b, :, oy:oy + 8, ox:ox + 8]))]
        assert matches, f"sample {b} is not a (flipped) crop of the padded image"
        flips += matches[0][2]
    # same generator seed -> same result; offsets vary across the batch
    assert torch.equal(out, RandomCropFlip(pad=2, flip=True)(x, torch.Generator().manual_seed(0)))
    assert not torch.equal(out, RandomCropFlip(pad=2, flip=True)(x, torch.Generator().manual_seed(1)))


def test_random_crop_no_pad_no_flip_is_identity_and_normalize() -> None:
    x = torch.rand(3, 3, 5, 5)
    assert torch.equal(RandomCropFlip(pad=0, flip=False)(x, None), x)
    n = Normalize((0.5, 0.25, 0.0), (0.5, 0.5, 1.0))(x)
    assert torch.allclose(n[:, 0], (x[:, 0] - 0.5) / 0.5) and torch.allclose(n[:, 2], x[:, 2])
    with pytest.raises(ValueError, match="channels"):
        Normalize((0.5,), (0.5,))(x)


# ---------------------------------------------------------------------------------------- CIFAR pickle


def test_cifar10_pickle_layout_roundtrip(tmp_path: Path) -> None:
    data, labels = write_cifar_pickle(tmp_path)
    tr = build_dataset("cifar10", tmp_path, "train")
    te = build_dataset("cifar10", tmp_path, "test")
    assert (len(tr.dataset), len(te.dataset)) == (30, 6)
    assert tr.class_names == [f"c{i}" for i in range(10)] and tr.extra["layout"] == "pickle"
    assert torch.equal(tr.dataset.images, torch.from_numpy(data[:30]).view(30, 3, 32, 32))
    assert torch.equal(te.dataset.labels, torch.from_numpy(labels[30:]))
    x, y = te.dataset.get_batch(torch.arange(6))  # test split: normalization only
    back = _unnormalize(x, CIFAR10_MEAN, CIFAR10_STD) * 255
    assert torch.allclose(back, torch.from_numpy(data[30:]).view(6, 3, 32, 32).float(), atol=1e-3)
    xi, yi = te.dataset[2]
    assert xi.shape == (3, 32, 32) and yi == int(labels[32])


def test_cifar100_pickle_layout(tmp_path: Path) -> None:
    data, labels = write_cifar_pickle(tmp_path, n_per_batch=8, num_classes=100)
    te = build_dataset("cifar100", tmp_path, "test")
    assert te.num_classes == 100 and len(te.class_names) == 100
    assert torch.equal(te.dataset.labels, torch.from_numpy(labels[8:]))


def test_cifar_pickle_missing_and_corrupt_files_are_named(tmp_path: Path) -> None:
    write_cifar_pickle(tmp_path)
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    (folder / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        load_cifar_pickle(folder, "train")
    (folder / "test_batch").write_bytes(b"\x80\x04garbage")
    with pytest.raises(ValueError, match="test_batch"):
        load_cifar_pickle(folder, "test")
    with pytest.raises(FileNotFoundError, match="CIFAR-10 not found"):
        build_dataset("cifar10", tmp_path / "nowhere", "train")


# ---------------------------------------------------------------------------------------- ImageFolder


def _write_imagefolder(base: Path, n: int = 3, size: tuple[int, int] = (32, 32), ext: str = "png",
                       classes: tuple[str, ...] = ("cat", "dog")) -> dict[Path, np.ndarray]:
    rng = np.random.default_rng(1)
    arrays = {}
    for c in classes:
        (base / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            if ext == "png":  # lossless: random noise, compared exactly
                a = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
            else:  # lossy: smooth ramps with a random offset, so JPEG keeps them close
                yy, xx = np.mgrid[0:size[1], 0:size[0]]
                off = rng.integers(0, 100, size=3)
                a = np.stack([np.clip(off[c] + 3 * xx + 2 * yy, 0, 255) for c in range(3)], -1).astype(np.uint8)
            p = base / c / f"{i:04d}.{ext}"
            PIL.fromarray(a).save(p)
            arrays[p] = a
    return arrays


def test_cifar_imagefolder_layout_png_exact_and_cached(tmp_path: Path, _cache_in_tmp: Path) -> None:
    classes = tuple(f"k{i}" for i in range(10))
    tr_arrays = _write_imagefolder(tmp_path / "cifar10" / "train", n=2, classes=classes)
    _write_imagefolder(tmp_path / "cifar10" / "test", n=1, classes=classes)
    tr = build_dataset("cifar10", tmp_path, "train", train_transform=False)
    assert tr.extra["layout"] == "imagefolder" and tr.class_names == list(classes)
    first = tmp_path / "cifar10" / "train" / "k0" / "0000.png"
    assert torch.equal(tr.dataset.images[0], torch.from_numpy(tr_arrays[first]).permute(2, 0, 1))
    assert tr.dataset.labels.tolist() == [k for k in range(10) for _ in range(2)]
    cached = list(_cache_in_tmp.rglob("*.pt"))
    assert len(cached) == 1 and tmp_path / "cifar10" not in cached[0].parents
    assert not list((tmp_path / "cifar10").rglob("*.pt"))  # nothing written into the data folder
    mtime = cached[0].stat().st_mtime_ns
    again = build_dataset("cifar10", tmp_path, "train")
    assert torch.equal(again.dataset.images, tr.dataset.images)
    assert cached[0].stat().st_mtime_ns == mtime  # served from the cache
    # a changed file list invalidates the cache
    PIL.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "cifar10" / "train" / "k3" / "0009.png")
    third = build_dataset("cifar10", tmp_path, "train")
    assert len(third.dataset) == 21 and len(list(_cache_in_tmp.rglob("*.pt"))) == 2


def test_imagefolder_jpeg_and_errors_name_the_file(tmp_path: Path) -> None:
    arrays = _write_imagefolder(tmp_path / "split", n=2, ext="jpg", size=(16, 16))
    images, labels, classes = load_imagefolder_tensor(tmp_path / "split", cache=False)
    assert images.shape == (4, 3, 16, 16) and classes == ["cat", "dog"] and labels.tolist() == [0, 0, 1, 1]
    p0 = sorted(arrays)[0]
    err = (images[0].permute(1, 2, 0).float() - torch.from_numpy(arrays[p0]).float()).abs().mean()
    assert err < 6  # lossy JPEG, but the same image (a different image differs by tens)
    bad = tmp_path / "split" / "dog" / "0005.jpg"
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(ValueError, match="0005.jpg"):
        load_imagefolder_tensor(tmp_path / "split", cache=False)
    bad.unlink()
    PIL.fromarray(np.zeros((20, 16, 3), np.uint8)).save(tmp_path / "split" / "dog" / "0006.jpg")
    with pytest.raises(ValueError, match="0006.jpg"):
        load_imagefolder_tensor(tmp_path / "split", cache=False)
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        load_imagefolder_tensor(tmp_path / "missing")


def test_imagenet_style_imagefolder_lazy(tmp_path: Path) -> None:
    _write_imagefolder(tmp_path / "imagenet" / "train", n=2, size=(40, 30), ext="jpg", classes=("n01", "n02", "n03"))
    _write_imagefolder(tmp_path / "imagenet" / "val", n=1, size=(50, 36), ext="png", classes=("n01", "n02", "n03"))
    tr = build_dataset("imagefolder", tmp_path, "train", image_size=24)
    va = build_dataset("imagefolder", tmp_path, "test", image_size=24)
    assert tr.num_classes == 3 and len(tr.dataset) == 6 and len(va.dataset) == 3
    x, y = tr.dataset[5]
    assert x.shape == (3, 24, 24) and y == 2 and x.dtype == torch.float32
    xv, _ = va.dataset[0]
    assert xv.shape == (3, 24, 24)
    with pytest.raises(FileNotFoundError, match="val"):
        build_dataset("imagefolder", tmp_path, "test", path="nothing_here")


def test_tensor_dataset_shape_checks() -> None:
    with pytest.raises(ValueError, match="images"):
        TensorImageDataset(torch.zeros(3, 8, 8), torch.zeros(3), lambda x, g: x)
    with pytest.raises(ValueError, match="labels"):
        TensorImageDataset(torch.zeros(3, 1, 8, 8), torch.zeros(4), lambda x, g: x)


@pytest.mark.data
def test_real_cifar10_test_split(cifar10_root: Path) -> None:
    te = build_dataset("cifar10", cifar10_root.parent, "test")
    assert len(te.dataset) == 10_000 and te.extra["layout"] == "imagefolder"
    assert te.class_names == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    assert torch.bincount(te.dataset.labels).tolist() == [1000] * 10
    x, _ = te.dataset.get_batch(torch.arange(0, 10_000, 50))
    assert abs(float(x.mean())) < 0.2 and 0.8 < float(x.std()) < 1.2  # CIFAR normalization constants fit


def test_resize_transform_and_cifar_size(tmp_path: Path) -> None:
    """Resize upsamples a batch bilinearly (constant images stay constant); data.kwargs.size makes
    CIFAR batches size x size after crop/flip, with the input shape reported accordingly."""
    from reldrop.data.transforms import Resize

    x = torch.full((2, 3, 32, 32), 0.25)
    y = Resize(48)(x)
    assert y.shape == (2, 3, 48, 48) and torch.allclose(y, torch.full_like(y, 0.25))
    assert Resize(32)(x) is x
    ramp = torch.linspace(0, 1, 32).expand(1, 1, 32, 32)
    assert torch.allclose(Resize(64)(ramp).mean(), ramp.mean(), atol=1e-6)  # no brightness shift
    with pytest.raises(ValueError, match="size"):
        Resize(0)
    write_cifar_pickle(tmp_path)
    for split, train_tf in (("train", True), ("test", False)):
        info = build_dataset("cifar10", tmp_path, split, train_transform=train_tf, size=48)
        assert info.input_shape == (3, 48, 48)
        xb, _ = info.dataset.get_batch(torch.arange(3), generator=torch.Generator().manual_seed(0))
        assert xb.shape == (3, 3, 48, 48)


def test_cifar_custom_normalization(tmp_path: Path) -> None:
    """data.kwargs mean/std replace the CIFAR statistics (the pixels and the reported info), both or
    neither, three values each."""
    data, _ = write_cifar_pickle(tmp_path)
    info = build_dataset("cifar10", tmp_path, "test", train_transform=False, mean=[0.5] * 3, std=[0.5] * 3)
    assert info.mean == (0.5, 0.5, 0.5) and info.std == (0.5, 0.5, 0.5)
    xb, _ = info.dataset.get_batch(torch.arange(2))
    raw = torch.from_numpy(data[-6:][:2].reshape(2, 3, 32, 32)).double() / 255
    assert torch.allclose(xb.double(), (raw - 0.5) / 0.5, atol=1e-6)
    default = build_dataset("cifar10", tmp_path, "test", train_transform=False)
    assert default.mean != info.mean
    with pytest.raises(ValueError, match="both mean and std"):
        build_dataset("cifar10", tmp_path, "test", train_transform=False, mean=[0.5] * 3)
    with pytest.raises(ValueError, match="3 values"):
        build_dataset("cifar10", tmp_path, "test", train_transform=False, mean=[0.5], std=[0.5])
