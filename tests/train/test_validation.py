"""Issue 10 item 11: bad input gets a clear error naming the key/flag, never silence or a raw traceback."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn as nn

import reldrop
from reldrop.cli import main
from reldrop.data import build_dataset
from reldrop.train.config import load_config, validate
from reldrop.train.loop import train

BASE = ["train", "--epochs", "1", "--set", "data.subset=60", "data.test_subset=30", "model.kwargs={width: 4}",
        "--quiet"]


@pytest.mark.parametrize("dataset", ["digits", "cifar10", "imagefolder"])
def test_dataset_kwargs_typos_are_rejected(tmp_path: Path, dataset: str) -> None:
    with pytest.raises(TypeError, match=r"unknown keyword argument\(s\) \['augmnet'\]; known: .*augment|subset"):
        build_dataset(dataset, tmp_path, "train", augmnet=False)


@pytest.mark.parametrize("override, key", [
    ("data.kwargs.augmnet=false", "data.kwargs"),
    ("model.kwargs.widht=3", "model.kwargs"),
    ("sched.min_lr=1", "sched.min_lr"),
    ("sched.step_size=abc", "sched.step_size"),
    ("train.threads=abc", "train.threads"),
    ("train.grad_clip=abc", "train.grad_clip"),
    ("name=../../x", "config name"),
    ("device=gpu", "device"),
])
def test_cli_train_names_the_bad_key(tmp_path: Path, capsys: pytest.CaptureFixture[str], override: str,
                                     key: str) -> None:
    assert main(BASE + ["--out", str(tmp_path / "run"), "--set", override]) == 2
    err = capsys.readouterr().err
    assert "error" in err and key in err and "Traceback" not in err
    assert not (tmp_path / "run" / "last.pt").exists()


def test_aug_kwargs_typo_names_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(BASE + ["--out", str(tmp_path / "run"), "--aug", "reldrop", "--set", "aug.kwargs.foo=1"]) == 2
    err = capsys.readouterr().err
    assert "aug.kwargs" in err and "foo" in err


def test_device_gpu_flag_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(BASE + ["--out", str(tmp_path / "run"), "--device", "gpu"]) == 2
    assert "device" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_evaluate_device_cuda_without_cuda_is_a_clear_error(tmp_path: Path, make_cfg: Any) -> None:
    res = train(make_cfg(tmp_path, train__epochs=1), quiet=True)
    with pytest.raises(SystemExit, match="--device cuda.*CUDA is not available"):
        main(["evaluate", "--checkpoint", res["run_dir"], "--metrics", "acc", "--device", "cuda"])


def test_resume_with_overrides_is_refused_not_ignored(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(BASE + ["--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--epochs", "2", "--set", "optim.lr=0.5", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--set optim.lr=0.5" in err and "ignored" in err
    assert main(["train", "--resume", str(out), "--epochs", "2", "--quiet"]) == 0  # --epochs applies


def test_config_name_cannot_leave_runs(tmp_path: Path) -> None:
    for bad in ("../../x", "a/b", "..", ""):
        with pytest.raises(ValueError, match="config name"):
            validate(load_config(None, [f"name={bad!r}" if bad else "name=''"]))
    validate(load_config(None, ["name=my-run_1.5"]))


def test_reldrop_beta_zero_follows_relevance_point_drop() -> None:
    """Eq. 9 with >=: beta = 0, alpha = 0 drops exactly the points with Rnorm = 1 - in RelDrop as in the function."""
    pts = torch.randn(3, 50, 3, generator=torch.Generator().manual_seed(0))
    rel = torch.zeros(3, 50)
    rel[:, 7] = 1.0  # one most relevant point per cloud
    _, want = reldrop.relevance_point_drop(pts, rel, alpha=0.0, beta=0.0)

    class Fixed:
        def __call__(self, x: torch.Tensor, target: Any) -> torch.Tensor:
            return rel[:, :, None].expand_as(x).clone()

    fn = reldrop.RelDrop(nn.Linear(3, 2), modality="points", alpha=0.0, beta=0.0)
    fn._attributor = Fixed()
    _, got = fn(pts, torch.zeros(3, dtype=torch.long), return_mask=True)
    assert want[:, 7].all() and want.sum() == 3
    assert torch.equal(got, want)
