"""`reldrop evaluate --metrics zeroshot --zeroshot-root DIR` end to end on fixture folders written here.

A 10-class "ImageNet" (wnids n00000000..n00000009) of uniform-colour images and a model that reads
the class off the red value, so every expected number is known by construction.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from PIL import Image

from reldrop.cli import main
from reldrop.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from reldrop.metrics.zeroshot import find_zeroshot_folders, ood_detection
from reldrop.models import register

N = 10
WNIDS = [f"n{k:08d}" for k in range(N)]
RED = [round(255 * k / (N - 1)) for k in range(N)]  # class k <-> red value RED[k]


class _RedToClass(nn.Module):
    """Logit k = -1000 |red - RED[k] / 255| on the un-normalized red channel's mean."""

    def __init__(self, num_classes: int = N, in_channels: int = 3) -> None:
        super().__init__()
        self.register_buffer("centres", torch.tensor(RED[:num_classes], dtype=torch.float32) / 255)
        self.scale = nn.Parameter(torch.tensor(1000.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        red = x[:, 0].flatten(1).mean(1, keepdim=True) * IMAGENET_STD[0] + IMAGENET_MEAN[0]
        return -self.scale * (red - self.centres).abs()


try:
    register("_test_red_to_class")(lambda num_classes=N, in_channels=3: _RedToClass(num_classes, in_channels))
except ValueError:  # already registered
    pass


def _images(folder: Path, colours: list[int]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, c in enumerate(colours):
        Image.new("RGB", (8, 8), (RED[c], 40, 200)).save(folder / f"{i}.png")


def _fixture(tmp_path: Path) -> tuple[Path, Path]:
    from reldrop.data import build_dataset
    from reldrop.train.config import DEFAULTS
    from reldrop.train.factory import build_model

    data = tmp_path / "data"
    for k, w in enumerate(WNIDS):
        _images(data / "tinynet" / "train" / w, [k])
        _images(data / "tinynet" / "val" / w, [k, k])
    zs = tmp_path / "zeroshot"
    # ImageNet-R: classes (1, 3, 7). Folder 1 holds a colour-0 image: class 0 is outside R's class
    # mask, so the masked argmax is class 1 (right); folder 3 holds a colour-9 image -> 7 (wrong).
    _images(zs / "imagenet-r" / WNIDS[1], [1, 0])
    _images(zs / "imagenet-r" / WNIDS[3], [3, 9])
    _images(zs / "imagenet-r" / WNIDS[7], [7])
    # ImageNet-A, named as some mirrors do; a README beside the wnid folders is ignored
    _images(zs / "ImageNet_A" / WNIDS[0], [0, 0])
    _images(zs / "ImageNet_A" / WNIDS[9], [9])
    (zs / "ImageNet_A" / "README.txt").write_text("200 classes")
    # ImageNet-O: classes (2, 4, 6); two images halfway between two of them (max softmax 0.5 over O's
    # class mask), one exactly of class 4 (1.0)
    _images(zs / "imagenet-o" / WNIDS[2], [3])
    _images(zs / "imagenet-o" / WNIDS[4], [4])
    _images(zs / "imagenet-o" / WNIDS[6], [5])
    cfg = copy.deepcopy(DEFAULTS)
    cfg["data"].update(name="imagefolder", root=str(data), kwargs={"path": "tinynet", "image_size": 8})
    cfg["model"].update(name="_test_red_to_class", kwargs={})
    info = build_dataset("imagefolder", data, "test", train_transform=False, path="tinynet", image_size=8)
    assert info.class_names == WNIDS
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"model": build_model(cfg, info).state_dict(), "config": cfg, "epoch": 1}, run / "best.pt")
    return run, zs


def test_evaluate_zeroshot_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run, zs = _fixture(tmp_path)
    assert main(["evaluate", "--checkpoint", str(run), "--metrics", "acc,zeroshot", "--zeroshot-root", str(zs),
                 "--limit", "0", "--batch-size", "4"]) == 0
    out = capsys.readouterr().out
    assert "ImageNet-R 80.00%" in out and "ImageNet-A 100.00%" in out and "ImageNet-O AUROC 0.833" in out
    m = json.loads((run / "eval" / "metrics.json").read_text())
    assert m["acc"]["accuracy"] == 100.0
    z = m["zeroshot"]
    assert z["r"] == {"accuracy": 80.0, "n": 5, "classes": 3}  # 60 % without the class mask
    assert z["a"] == {"accuracy": 100.0, "n": 3, "classes": 2}
    # in-distribution: the 6 val images of O's classes 2, 4, 6 (max softmax 1.0 over O's class mask)
    expected = ood_detection(torch.ones(6), torch.tensor([0.5, 1.0, 0.5]))
    assert expected["auroc"] == pytest.approx(15 / 18)  # 12 pairs ranked right, 6 ties
    assert z["o"]["n_in"] == 6 and z["o"]["n_out"] == 3 and z["o"]["classes"] == 3
    assert z["o"]["auroc"] == pytest.approx(expected["auroc"]) and z["o"]["aupr"] == pytest.approx(expected["aupr"])


def test_zeroshot_errors_are_clear(tmp_path: Path) -> None:
    run, zs = _fixture(tmp_path)
    base = ["evaluate", "--checkpoint", str(run), "--metrics", "zeroshot", "--limit", "0"]
    with pytest.raises(SystemExit, match="--zeroshot-root"):
        main(base)
    with pytest.raises(SystemExit, match="zero-shot root not found"):
        main(base + ["--zeroshot-root", str(tmp_path / "nowhere")])
    import shutil

    shutil.rmtree(zs / "imagenet-o")
    with pytest.raises(SystemExit, match="missing under .*: imagenet-o .*--zeroshot-sets"):
        main(base + ["--zeroshot-root", str(zs)])
    assert main(base + ["--zeroshot-root", str(zs), "--zeroshot-sets", "r,a"]) == 0  # the sets present
    with pytest.raises(SystemExit, match="unknown zero-shot sets"):
        main(base + ["--zeroshot-root", str(zs), "--zeroshot-sets", "r,c"])
    _images(zs / "imagenet-o" / "n99999999", [1])  # a class the model does not know
    with pytest.raises(SystemExit, match="imagenet-o: its class folders must be wnids"):
        main(base + ["--zeroshot-root", str(zs)])
    assert set(find_zeroshot_folders(zs)) == {"r", "a", "o"}
