"""Issue 21 items 8, 9, 11 (evaluate): one metrics.json never mixes two evaluations; an unreadable
best.pt falls back to last.pt (and is repaired on resume); bad run folders get one-line errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers.faults import MarkerPayload
from run_helpers import tiny_cfg

from reldrop.cli import main
from reldrop.runs.files import load_checkpoint
from reldrop.train.load import load_run
from reldrop.train.loop import train


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("eval") / "run"
    train(tiny_cfg(out, epochs=2), quiet=True)
    return out


def _copy(run: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(run, dst)
    return dst


def test_a_second_evaluation_does_not_keep_the_firsts_metrics(trained: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "eval"
    base = ["evaluate", "--checkpoint", str(trained), "--out", str(out), "--threads", "1"]
    assert main(base + ["--metrics", "acc,morf", "--limit", "20", "--patch-size", "2", "--steps", "4"]) == 0
    first = json.loads((out / "metrics.json").read_text())
    assert "morf" in first
    capsys.readouterr()
    assert main(base + ["--which", "last", "--metrics", "acc"]) == 0
    second = json.loads((out / "metrics.json").read_text())
    assert second["checkpoint"].endswith("last.pt") and second["options"]["limit"] == 500
    assert "morf" not in second and "MoRF" not in capsys.readouterr().out
    # (the same checkpoint and options keep both calls' metrics: tests/metrics/test_suite.py)


def test_a_zero_byte_best_pt_falls_back_to_last_pt(trained: Path, tmp_path: Path) -> None:
    run = _copy(trained, tmp_path / "run")
    (run / "best.pt").write_bytes(b"")
    with pytest.warns(UserWarning, match=r"best\.pt.*using .*last\.pt"):
        loaded = load_run(run)
    assert loaded.checkpoint.name == "last.pt"
    assert main(["evaluate", "--checkpoint", str(run), "--metrics", "acc", "--threads", "1"]) == 0


def test_a_zero_byte_best_pt_is_repaired_on_resume(tmp_path: Path) -> None:
    cfg = tiny_cfg(tmp_path / "run", epochs=2)
    train(cfg, quiet=True, stop_after=1)  # epoch 1 is the best so far: last.pt holds the best model
    (tmp_path / "run" / "best.pt").write_bytes(b"")
    train(cfg, resume=True, quiet=True)
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    assert best["epoch"] == last["best_epoch"]


def test_an_unrecoverable_best_pt_is_moved_aside_on_resume(tmp_path: Path) -> None:
    cfg = tiny_cfg(tmp_path / "run", epochs=3)
    train(cfg, quiet=True, stop_after=1)
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    state["epoch"], state["best_epoch"] = 1, 0  # best.pt would hold an older epoch than last.pt
    torch.save(state, tmp_path / "run" / "last.pt")
    (tmp_path / "run" / "best.pt").write_bytes(b"\x00" * 10)
    with pytest.warns(UserWarning, match=r"best\.pt is unreadable.*best\.pt\.corrupt"):
        train(cfg, resume=True, quiet=True, stop_after=1)
    assert (tmp_path / "run" / "best.pt.corrupt").is_file()
    assert not (tmp_path / "run" / "best.pt").exists() or load_checkpoint(tmp_path / "run" / "best.pt")


@pytest.mark.parametrize("case", ["missing", "empty", "zero_byte", "truncated", "pickled"])
def test_evaluate_of_a_bad_run_folder_is_one_line(trained: Path, tmp_path: Path, case: str) -> None:
    run = tmp_path / "run"
    if case == "empty":
        run.mkdir()
    elif case != "missing":
        run.mkdir()
        data = (trained / "last.pt").read_bytes()
        if case == "zero_byte":
            (run / "last.pt").write_bytes(b"")
        elif case == "truncated":
            (run / "last.pt").write_bytes(data[: len(data) // 2])
        else:
            torch.save({"model": {}, "evil": MarkerPayload(tmp_path / "PWNED")}, run / "last.pt")
    with pytest.raises(SystemExit) as info:
        main(["evaluate", "--checkpoint", str(run), "--metrics", "acc"])
    msg = str(info.value)
    assert msg.startswith("reldrop evaluate: error:") and str(run) in msg and "\n" not in msg.strip()
    assert not (tmp_path / "PWNED").exists()
