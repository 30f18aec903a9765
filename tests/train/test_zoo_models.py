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
