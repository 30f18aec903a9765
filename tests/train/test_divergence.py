"""Issue 21 items 5 and 13: a diverged run stops (clear message naming epoch and step, non-zero exit),
is never saved as best, and RelDrop's NaN relevance is blamed on the model, not on the relevance."""
from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from run_helpers import CLI, one_line_error, tiny_cfg

from reldrop.cli import main
from reldrop.data.registry import DatasetInfo, register_dataset
from reldrop.runs.files import load_checkpoint
from reldrop.train import loop
from reldrop.train.divergence import TrainingDivergedError
from reldrop.train.loop import train


def _nan_losses_at(monkeypatch: pytest.MonkeyPatch, calls: set[int]) -> dict[str, int]:
    """The training loss of the given (0-based, counted over the run) steps is NaN."""
    count = {"n": 0}

    def cross_entropy(logits: torch.Tensor, y: torch.Tensor, *a: Any, **k: Any) -> torch.Tensor:
        loss = F.cross_entropy(logits, y, *a, **k)
        i = count["n"]
        count["n"] += 1
        return loss * float("nan") if i in calls else loss

    monkeypatch.setattr(loop, "F", types.SimpleNamespace(cross_entropy=cross_entropy))
    return count


def test_a_nan_loss_stops_the_run_before_the_epoch_is_saved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tiny_cfg(tmp_path / "run", epochs=3)  # 60 images, batch 30: 2 steps per epoch
    _nan_losses_at(monkeypatch, {3})  # epoch 2, step 2
    with pytest.raises(TrainingDivergedError, match=r"non-finite loss at epoch 2, step 2"):
        train(cfg, quiet=True)
    run = tmp_path / "run"
    assert load_checkpoint(run / "last.pt")["epoch"] == 1  # the last finite epoch
    best = load_checkpoint(run / "best.pt")
    assert best["epoch"] == 1 and all(torch.isfinite(v).all() for v in best["model"].values() if v.is_floating_point())
    assert [int(line.split('"epoch": ')[1].split(",")[0]) for line in
            (run / "metrics.jsonl").read_text().splitlines()] == [1]


def test_a_run_that_diverges_at_once_exits_non_zero_and_saves_no_best(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(CLI + ["--set", "optim.lr=1000000.0", "data.subset=200", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "training diverged" in err and "epoch 1, step" in err and one_line_error(err)
    assert not (out / "best.pt").exists() and not (out / "last.pt").exists()


def test_max_bad_steps_skips_a_few_bad_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tiny_cfg(tmp_path / "run", "train.max_bad_steps=1", epochs=2)
    _nan_losses_at(monkeypatch, {0, 2})  # one bad step in each epoch: skipped
    res = train(cfg, quiet=True)
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    assert res["final"]["epoch"] == 2 and all(torch.isfinite(v).all() for v in last["model"].values()
                                              if v.is_floating_point())
    cfg = tiny_cfg(tmp_path / "run2", "train.max_bad_steps=1", epochs=1)
    _nan_losses_at(monkeypatch, {0, 1})  # two in one epoch: more than allowed
    with pytest.raises(TrainingDivergedError, match=r"epoch 1, step 2 after skipping 1 bad step"):
        train(cfg, quiet=True)


def test_reldrop_divergence_blames_the_model_not_the_relevance(tmp_path: Path) -> None:
    cfg = tiny_cfg(tmp_path / "run", "aug.name=reldrop", "aug.p=1.0", "optim.lr=1000000.0", "data.subset=200")
    with pytest.raises(TrainingDivergedError, match=r"training diverged: .*epoch 1, step \d+") as info:
        train(cfg, quiet=True)
    assert not str(info.value).startswith("relevance")
    assert not (tmp_path / "run" / "best.pt").exists()


class _Huge(torch.utils.data.Dataset):
    """Point clouds with huge finite coordinates (a broken ModelNet file: 5.5e37)."""

    def __len__(self) -> int:
        return 12

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.full((16, 3), 5.5e37) * (1 + i % 3), i % 3


def _huge(root: Path, split: str, *, train_transform: bool, subset: int | None = None, **_: Any) -> DatasetInfo:
    return DatasetInfo(dataset=_Huge(), num_classes=3, class_names=["a", "b", "c"], modality="points",
                       input_shape=(16, 3))


try:
    register_dataset("_test_huge_points")(_huge)
except ValueError:
    pass


def test_huge_point_coordinates_stop_the_run(tmp_path: Path) -> None:
    """(_test_point_mlp: registered by tests/train/conftest.py)"""
    cfg = tiny_cfg(tmp_path / "run", "data.name=_test_huge_points", "data.subset=null", "data.test_subset=null",
                   "model.name=_test_point_mlp", "model.kwargs={}", "train.batch_size=4", epochs=1)
    with pytest.raises(TrainingDivergedError, match=r"non-finite loss at epoch 1, step \d"):
        train(cfg, quiet=True)
    assert not (tmp_path / "run" / "best.pt").exists()


@pytest.mark.parametrize("override", ["optim.momentum=.nan", "optim.lr=.inf", "optim.weight_decay=.nan",
                                      "train.grad_clip=.inf", "aug.epsilon=.nan", "sched.gamma=.nan"])
def test_non_finite_hyperparameters_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                override: str) -> None:
    assert main(CLI + ["--set", override, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert override.split("=")[0] in err and "finite" in err and one_line_error(err)
    assert not (tmp_path / "run").exists()
