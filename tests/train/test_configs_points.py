"""The point-cloud configs: paper values, the Table 2 sweep, and a tiny end-to-end RelDrop-3D run."""
from __future__ import annotations

import json

import pytest

from reldrop.train.compare import expand_variants
from reldrop.train.config import apply_overrides, load_config


@pytest.mark.parametrize("name", ["points_modelnet40_paper", "points_modelnet10_paper"])
def test_paper_configs_match_table3(name):
    cfg = load_config(name)
    assert cfg["model"]["name"] == "pointnet2_ssg"
    assert cfg["optim"]["name"] == "adamw" and cfg["optim"]["lr"] == 1e-3 and cfg["optim"]["weight_decay"] == 1e-4
    assert cfg["sched"]["name"] == "step" and cfg["sched"]["step_size"] == 20 and cfg["sched"]["gamma"] == 0.7
    assert cfg["train"]["batch_size"] == 24 and cfg["train"]["epochs"] == 50
    assert cfg["data"]["kwargs"]["npoints"] == 1024 and cfg["aug"]["method"] == "zplus_flat"


def test_table2_sweep_expands_to_baseline_random_and_reldrop_grid():
    variants = expand_variants(load_config("points_modelnet40_paper"))
    augs = sorted((c["aug"]["name"], c["aug"]["alpha"] if c["aug"]["name"] == "reldrop" else 1.0, c["aug"]["beta"])
                  for _, c in variants if c["aug"]["name"] != "none")
    assert len(variants) == 1 + 3 + 6
    assert ("reldrop", 0.5, 0.15) in augs and ("reldrop", 0.0, 0.85) in augs and ("random", 1.0, 0.5) in augs


@pytest.mark.parametrize("name", ["points_shapes", "points_modelnet10_cpu"])
def test_cpu_configs_compare_baseline_random_reldrop(name):
    cfg = load_config(name)
    assert cfg["model"]["name"] == "pointnet"
    names = [c["aug"]["name"] for _, c in expand_variants(cfg)]
    assert names == ["none", "random", "reldrop"]


def test_shapes_preset_trains_end_to_end_with_reldrop(tmp_path):
    from reldrop.train.loop import train

    cfg = apply_overrides(load_config("points_shapes"), [
        "data.subset=44", "data.kwargs.npoints=64", "data.kwargs.num_per_class=4", "train.epochs=1",
        "train.batch_size=22", f"out={tmp_path / 'run'}", "train.threads=null"])
    result = train(cfg, quiet=True)
    row = result["final"]
    assert 0 <= row["test_acc"] <= 100 and "test_macro" in row
    assert row["aug_selected"] > 0  # RelDrop ran on the training batches
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["epoch"] == 1
    # Fig. 4 and Fig. A.1 straight from the run directory
    from reldrop.commands.flipping import flipping_report
    from reldrop.train.load import load_run
    from reldrop.viz.pointclouds import plot_dropped_points_for_model

    report = flipping_report({"tiny": tmp_path / "run"}, tmp_path / "fig4", step_size=16, limit=10)
    assert report["tiny"]["fixed"]["n"] == 10 and len(report["tiny"]["random"]["accuracy"]) == 5
    assert (tmp_path / "fig4" / "flipping.png").stat().st_size > 1000
    loaded = load_run(tmp_path / "run")
    x, y = loaded.test.dataset[0]
    png = plot_dropped_points_for_model(loaded.model, x, y, tmp_path / "figA1.png")
    assert png.stat().st_size > 1000
