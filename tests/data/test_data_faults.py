"""Issue 21 items 4, 11, 15, 16 (data): train and test label the same classes, --out never lies in the
data, an empty class, a symlink loop and a decompression bomb are one clear error, point-cloud caches
built by two processes at once, decoy patch sizes are ints, and RRA reads a run's data.kwargs.path."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from run_helpers import CLI, one_line_error

from reldrop.cli import main
from reldrop.data import build_dataset
from reldrop.data.imagefolder import load_image, load_imagefolder_tensor

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _fake_cifar(base: Path, per_class: int = 2) -> Path:
    """A CIFAR-10 ImageFolder layout ``base/{train,test}/<class>/*.png`` of random 32x32 images."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in CLASSES:
            (base / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(base / split / c / f"{i}.png")
    return base


@pytest.fixture
def cifar_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RELDROP_CACHE_DIR", str(tmp_path / "cache"))
    _fake_cifar(tmp_path / "data" / "cifar10")
    return tmp_path / "data"


def _cifar_cli(root: Path, out: Path, *more: str) -> list[str]:
    return ["train", "--epochs", "1", "--set", "data.name=cifar10", "model.kwargs={width: 4}", "train.batch_size=10",
            "train.threads=1", *more, "--data-root", str(root), "--out", str(out), "--quiet"]


@pytest.mark.parametrize("rename", ["zcat", "Cat"])
def test_a_renamed_test_class_folder_is_refused(cifar_root: Path, tmp_path: Path, rename: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    (cifar_root / "cifar10" / "test" / "cat").rename(cifar_root / "cifar10" / "test" / rename)
    with pytest.raises(ValueError, match=rf"class folders of .*differ.*{rename}"):
        build_dataset("cifar10", cifar_root, "test")
    assert main(_cifar_cli(cifar_root, tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert "class folders" in err and one_line_error(err)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_out_inside_the_data_folder_is_refused(cifar_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = cifar_root / "cifar10" / "train" / "myrun"
    assert main(_cifar_cli(cifar_root, out)) == 2
    err = capsys.readouterr().err
    assert "inside the data root" in err and one_line_error(err)
    assert not out.exists()


def test_a_class_without_training_images_is_refused(cifar_root: Path, capsys: pytest.CaptureFixture[str],
                                                    tmp_path: Path) -> None:
    for f in (cifar_root / "cifar10" / "train" / "dog").iterdir():
        f.unlink()
    with pytest.raises(ValueError, match=r"train/dog hold no images"):
        build_dataset("cifar10", cifar_root, "train")
    assert main(_cifar_cli(cifar_root, tmp_path / "run")) == 2
    assert "dog" in capsys.readouterr().err


def test_a_symlink_loop_in_a_data_folder_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELDROP_CACHE_DIR", str(tmp_path / "cache"))
    base = _fake_cifar(tmp_path / "data" / "cifar10", per_class=1)
    loop = base / "train" / "cat" / "loop.png"
    os.symlink(loop, loop)  # ELOOP
    with pytest.raises(ValueError, match=r"loop\.png.*symbolic links"):
        load_imagefolder_tensor(base / "train")


def test_a_decompression_bomb_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    path = tmp_path / "bomb.png"
    Image.new("RGB", (64, 64)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 4096 pixels > 2 x the limit: DecompressionBombError
    with pytest.raises(ValueError, match=r"bomb\.png is too large to decode safely"):
        load_image(path)


@pytest.mark.parametrize("size", [2.5, True, "2"])
def test_decoy_patch_size_must_be_an_int(tmp_path: Path, size: object) -> None:
    with pytest.raises(ValueError, match="patch_size must be an int"):
        build_dataset("decoy_digits", tmp_path, "test", patch_size=size)


def _build_cache(cache: str, barrier: "mp.synchronize.Barrier", q: "mp.Queue") -> None:
    os.environ["RELDROP_CACHE_DIR"] = cache
    from reldrop.data import modelnet

    real = modelnet.np.save

    def save_then_wait(file: object, arr: object, *a: object, **k: object) -> None:
        real(file, arr, *a, **k)
        barrier.wait(60)  # both processes have written their temp file before either moves it

    modelnet.np.save = save_then_wait
    try:
        prep = modelnet.PointPrep(npoints=8, sampling="first", use_normals=False, normalize=True, seed=0)
        arrays = [np.random.default_rng(i).normal(size=(32, 3)).astype(np.float32) for i in range(4)]
        out = modelnet.prepare_arrays({"format": "test", "split": "train", "files": []},
                                      lambda: (arrays, [f"f{i}" for i in range(4)]), prep, cache=True)
        q.put(("ok", tuple(out.shape)))
    except BaseException as err:  # report to the parent
        q.put(("error", f"{type(err).__name__}: {err}"))


def test_two_processes_building_one_point_cache(tmp_path: Path) -> None:
    ctx = mp.get_context("fork")
    barrier, q = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_build_cache, args=(str(tmp_path), barrier, q)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [q.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(60)
    assert results == [("ok", (4, 8, 3))] * 2
    assert [p.name for p in (tmp_path / "points").iterdir()] == [next((tmp_path / "points").iterdir()).name]


def test_rra_reads_the_runs_data_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A CIFAR-10 run trained from ``data.kwargs.path=mycifar`` (no ``cifar10`` folder): RRA finds its tiles."""
    monkeypatch.setenv("RELDROP_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "data"
    _fake_cifar(root / "mycifar")
    out = tmp_path / "run"
    assert main(_cifar_cli(root, out, "data.kwargs.path=mycifar")) == 0
    assert main(["evaluate", "--checkpoint", str(out), "--metrics", "rra", "--rra-size", "8", "--threads", "1",
                 "--heatmap-samples", "1"]) == 0
    assert json.loads((out / "eval" / "metrics.json").read_text())["rra"]["mean"] >= 0
    assert torch.isfinite(torch.tensor(json.loads((out / "eval" / "metrics.json").read_text())["rra"]["mean"]))


def test_cli_train_of_the_digits_preset_still_accepts_its_own_folder_layout(tmp_path: Path) -> None:
    """The data-root check does not refuse the usual layout (runs next to, not inside, the data)."""
    assert main(CLI + ["--out", str(tmp_path / "runs" / "a")]) == 0


def test_imagenet_style_folders_need_the_same_classes_in_train_and_val(tmp_path: Path) -> None:
    from PIL import Image

    for split, names in (("train", ["n01", "n02"]), ("val", ["n01", "n03"])):
        for c in names:
            (tmp_path / "imagenet" / split / c).mkdir(parents=True)
            Image.new("RGB", (8, 8)).save(tmp_path / "imagenet" / split / c / "a.png")
    with pytest.raises(ValueError, match=r"only in val: \['n03'\]"):
        build_dataset("imagefolder", tmp_path, "test")  # the val folder is the test split
