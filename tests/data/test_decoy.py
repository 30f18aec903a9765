"""Decoy (shortcut) datasets: patch placement, class coding, rho, test modes, masks, determinism."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers.cifar_files import write_cifar_pickle
from reldrop.data import build_dataset, dataset_names
from reldrop.data.decoy import add_decoy, decoy_colours



def _raw(info) -> torch.Tensor:
    """The stored (unnormalized) images of a TensorImageDataset as float in [0, 1]."""
    x = info.dataset.images
    return x.float() / 255.0 if x.dtype == torch.uint8 else x


def test_registered() -> None:
    assert {"decoy_digits", "decoy_cifar10"} <= set(dataset_names())


def test_add_decoy_places_class_coded_patches_in_corners() -> None:
    n, h, w, p = 400, 8, 8, 2
    images = torch.rand(n, 1, h, w, generator=torch.Generator().manual_seed(0)) * 0.01
    labels = torch.arange(n) % 10
    out, d = add_decoy(images, labels, mode="train", patch_size=p, num_classes=10, seed=3)
    m = d["mask"]
    assert m.shape == (n, h, w) and m.dtype == torch.bool
    assert (m.sum((1, 2)) == p * p).all()  # rho = 1: every image has exactly one p x p patch
    # the patch is one of the four corner squares given by `corner`
    corners = torch.zeros(4, h, w, dtype=torch.bool)
    corners[0, :p, :p] = corners[1, :p, -p:] = corners[2, -p:, :p] = corners[3, -p:, -p:] = True
    assert torch.equal(m, corners[d["corner"]])
    assert set(d["corner"].tolist()) == {0, 1, 2, 3}
    # Decoy-MNIST intensity 255 - 25 y inside the patch, the image untouched outside
    expect = ((255 - 25 * labels).float() / 255).view(n, 1, 1).expand(n, h, w)
    assert torch.equal(out[:, 0][m], expect[m])
    assert torch.equal(out[:, 0][~m], images[:, 0][~m])
    assert torch.equal(d["cls"], labels)
    assert images.abs().max() <= 0.01  # input not modified


def test_add_decoy_test_modes_rho_and_determinism() -> None:
    n = 2000
    images = torch.zeros(n, 3, 32, 32, dtype=torch.uint8)
    labels = torch.arange(n) % 10
    same, ds = add_decoy(images, labels, mode="same", patch_size=4, num_classes=10, seed=1)
    rnd, dr = add_decoy(images, labels, mode="random", patch_size=4, num_classes=10, seed=1)
    none, dn = add_decoy(images, labels, mode="none", patch_size=4, num_classes=10, seed=1)
    assert torch.equal(ds["cls"], labels) and (ds["mask"].sum((1, 2)) == 16).all()
    assert (dr["cls"] != labels).all() and (dr["cls"] >= 0).all() and (dr["cls"] < 10).all()
    counts = torch.bincount((dr["cls"] - labels) % 10, minlength=10)  # offsets 1..9, roughly uniform
    assert counts[0] == 0 and (counts[1:] > 150).all()
    assert torch.equal(none, images) and not dn["mask"].any() and (dn["cls"] == -1).all()
    assert same.dtype == torch.uint8 and int(same[0, 0][ds["mask"][0]][0]) == 255  # class 0 -> 255
    # rho: about rho * n training images carry the patch; images without one are untouched
    half, dh = add_decoy(images, labels, mode="train", patch_size=4, num_classes=10, rho=0.3, seed=5)
    has = dh["mask"].any(2).any(1)
    assert 0.25 < float(has.float().mean()) < 0.35 and (dh["cls"][~has] == -1).all()
    assert torch.equal(half[~has], images[~has])
    again, dh2 = add_decoy(images, labels, mode="train", patch_size=4, num_classes=10, rho=0.3, seed=5)
    assert torch.equal(again, half) and all(torch.equal(dh[k], dh2[k]) for k in dh)
    other, _ = add_decoy(images, labels, mode="train", patch_size=4, num_classes=10, rho=0.3, seed=6)
    assert not torch.equal(other, half)


def test_add_decoy_rejects_bad_arguments() -> None:
    x, y = torch.zeros(2, 1, 8, 8), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="decoy_test"):
        add_decoy(x, y, mode="sometimes", patch_size=2, num_classes=10)
    with pytest.raises(ValueError, match="patch_size"):
        add_decoy(x, y, mode="same", patch_size=9, num_classes=10)
    with pytest.raises(ValueError, match="rho"):
        add_decoy(x, y, mode="train", patch_size=2, num_classes=10, rho=1.5)
    with pytest.raises(ValueError, match="palette"):
        decoy_colours(10, 1, "palette")
    assert decoy_colours(10, 3, "palette").shape == (10, 3)


def test_decoy_digits_splits_and_masks(tmp_path: Path) -> None:
    tr = build_dataset("decoy_digits", tmp_path, "train")
    assert tr.input_shape == (1, 8, 8) and len(tr.dataset) == 1437
    m = tr.extra["decoy_mask"]
    assert m.shape == (1437, 8, 8) and (m.sum((1, 2)) == 4).all() and tr.extra["chance"] == 4 / 64
    raw = _raw(tr)
    y = tr.dataset.labels
    assert torch.allclose(raw[:, 0][m].view(-1, 4), ((255 - 25 * y).float() / 255).view(-1, 1).expand(-1, 4))
    plain = build_dataset("digits", tmp_path, "test")
    clean = build_dataset("decoy_digits", tmp_path, "test", decoy_test="none")
    assert torch.equal(clean.dataset.images, plain.dataset.images) and not clean.extra["decoy_mask"].any()
    x_plain, _ = plain.dataset.get_batch(torch.arange(10))
    x_clean, _ = clean.dataset.get_batch(torch.arange(10))
    assert torch.equal(x_plain, x_clean)  # same normalization as plain digits
    rnd = build_dataset("decoy_digits", tmp_path, "test")  # default test mode: random
    assert rnd.extra["decoy_test"] == "random" and (rnd.extra["decoy_class"] != rnd.dataset.labels).all()
    same = build_dataset("decoy_digits", tmp_path, "test", decoy_test="same", patch_size=3)
    assert (same.extra["decoy_mask"].sum((1, 2)) == 9).all()
    # deterministic, and the train transform (shift 0) leaves the patch where it is
    assert torch.equal(build_dataset("decoy_digits", tmp_path, "train").dataset.images, tr.dataset.images)
    xb, _ = tr.dataset.get_batch(torch.arange(5), generator=torch.Generator().manual_seed(0))
    xe, _ = build_dataset("decoy_digits", tmp_path, "train", train_transform=False).dataset.get_batch(torch.arange(5))
    assert torch.equal(xb, xe)
    sub = build_dataset("decoy_digits", tmp_path, "train", subset=100)
    assert len(sub.dataset) == 100 and sub.extra["decoy_mask"].shape[0] == 100
    assert torch.equal(sub.extra["decoy_class"], sub.dataset.labels)
    with pytest.raises(ValueError, match="decoy_test"):
        build_dataset("decoy_digits", tmp_path, "test", decoy_test="sometimes")


def test_decoy_cifar10_on_pickle_fixture(tmp_path: Path) -> None:
    write_cifar_pickle(tmp_path, n_per_batch=20)
    tr = build_dataset("decoy_cifar10", tmp_path, "train", colour="palette")
    assert tr.input_shape == (3, 32, 32) and len(tr.dataset) == 100 and tr.dataset.images.dtype == torch.uint8
    m = tr.extra["decoy_mask"]
    assert (m.sum((1, 2)) == 16).all()
    y = tr.dataset.labels
    px = tr.dataset.images.permute(0, 2, 3, 1)[m].view(100, 16, 3)
    palette = torch.tensor([[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
                            [140, 86, 75], [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207]],
                           dtype=torch.uint8)
    assert torch.equal(px, palette[y].view(100, 1, 3).expand(100, 16, 3))
    te = build_dataset("decoy_cifar10", tmp_path, "test", decoy_test="same")
    assert len(te.dataset) == 20 and te.extra["chance"] == 16 / 1024
    assert torch.equal(te.extra["decoy_class"], te.dataset.labels)
    plain = build_dataset("cifar10", tmp_path, "test")
    clean = build_dataset("decoy_cifar10", tmp_path, "test", decoy_test="none")
    assert torch.equal(plain.dataset.images, clean.dataset.images)


def test_decoy_presets_resolve() -> None:
    from reldrop.train.compare import expand_variants
    from reldrop.train.config import load_config

    for name, k in (("decoy_digits", 3), ("decoy_cifar10_cpu", 51)):
        cfg = load_config(name)
        assert cfg["compare"]["seeds"] == [0, 1, 2, 3, 4]
        assert cfg["data"]["kwargs"]["decoy_test"] == "none"  # headline: clean test images
        assert cfg["compare"]["test_sets"] == {"random": {"decoy_test": "random"}, "same": {"decoy_test": "same"}}
        v = dict(expand_variants(cfg))
        assert list(v) == ["baseline", "RE", "RelDrop", "RelDrop p=1", "RelDrop topk"]
        assert v["RelDrop p=1"]["aug"]["p"] == 1.0 and v["RelDrop"]["aug"]["p"] == 0.5
        assert v["RelDrop topk"]["aug"]["kwargs"] == {"centre": "topk", "k": k}
    with pytest.raises(ValueError, match="test_sets"):
        load_config("decoy_digits", ["compare.test_sets=[1, 2]"])


def test_decoy_builders_refuse_unknown_kwargs(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="patch_sise"):
        build_dataset("decoy_digits", tmp_path, "test", patch_sise=3)


def test_add_decoy_fixed_corner_puts_every_patch_there_and_keeps_the_other_draws() -> None:
    g = torch.Generator().manual_seed(3)
    images = torch.rand(40, 3, 12, 10, generator=g)
    labels = torch.randint(0, 10, (40,), generator=g)
    rand, d_rand = add_decoy(images, labels, mode="random", patch_size=3, num_classes=10, seed=5)
    for k, name in enumerate(("top_left", "top_right", "bottom_left", "bottom_right")):
        out, d = add_decoy(images, labels, mode="random", patch_size=3, num_classes=10, seed=5, corner=name)
        assert (d["corner"] == k).all()
        top, left = (9 if k >= 2 else 0), (7 if k % 2 else 0)
        expect = torch.zeros(12, 10, dtype=torch.bool)
        expect[top:top + 3, left:left + 3] = True
        assert torch.equal(d["mask"], expect.expand(40, 12, 10))
        assert torch.equal(d["cls"], d_rand["cls"])  # the wrong classes drawn are the same as with random corners
        # outside the patch the image is untouched
        assert torch.equal(out[:, :, ~expect], images[:, :, ~expect])
    with pytest.raises(ValueError, match="corner must be"):
        add_decoy(images, labels, mode="random", patch_size=3, num_classes=10, corner="middle")
