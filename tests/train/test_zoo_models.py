"""Issue 19 item 6: a timm/<name> model from the config trains and loads like the registry's models."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("timm")


def test_cli_config_trains_and_evaluates_a_timm_model(tmp_path: Path, make_cfg: Any):
    from reldrop.train.loop import train

    cfg = make_cfg(tmp_path, model__name="timm/test_resnet", model__kwargs={}, aug__name="reldrop",
                   data__subset=100, data__test_subset=50, train__epochs=1)
    res = train(cfg, quiet=True)
    rows = [json.loads(line) for line in (Path(res["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["aug_selected"] > 0 and 0 <= rows[0]["test_acc"] <= 100
    from reldrop.train.load import load_run

    run = load_run(res["run_dir"])
    model = run.model
    assert type(model).__name__ == "ResNet" and type(model).__module__.startswith("timm.")


def test_cli_train_runs_a_timm_model_and_unknown_names_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from reldrop.cli import main

    base = ["train", "--preset", "digits", "--epochs", "1", "--set", "train.threads=1", "train.progress=false",
            "data.subset=100", "data.test_subset=50"]
    assert main(base + ["--out", str(tmp_path / "ok"), "--set", "model.name=timm/test_resnet"]) == 0
    assert (tmp_path / "ok" / "last.pt").exists()
    capsys.readouterr()
    assert main(base + ["--out", str(tmp_path / "bad"), "--set", "model.name=timm/no_such_net"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown model 'timm/no_such_net'" in err and "Traceback" not in err
    assert main(base + ["--out", str(tmp_path / "pre"), "--set", "model.name=torchvision/resnet18",
                        "model.kwargs={weights: DEFAULT}"]) == 2
    assert "--init" in capsys.readouterr().err
