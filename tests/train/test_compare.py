"""reldrop compare, the training side: variants x seeds, grid expansion, equal compute, extra test sets."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from reldrop.train.compare import expand_variants, read_metrics, run_compare
from reldrop.train.config import load_config


def test_expand_variants_grid_and_overrides() -> None:
    cfg = load_config(None, [])
    cfg["compare"]["variants"] = [
        {"name": "baseline", "aug": {"name": "none"}},
        {"name": "random", "aug": {"name": "random"}, "set": ["aug.beta=0.15"]},
        {"name": "RelDrop", "aug": {"name": "reldrop"}, "grid": {"aug.alpha": [0, 0.5], "aug.beta": [0.15, 0.85]}},
    ]
    out = dict(expand_variants(cfg))
    assert list(out) == ["baseline", "random", "RelDrop alpha=0 beta=0.15", "RelDrop alpha=0 beta=0.85",
                         "RelDrop alpha=0.5 beta=0.15", "RelDrop alpha=0.5 beta=0.85"]
    assert out["random"]["aug"]["beta"] == 0.15 and out["random"]["aug"]["name"] == "random"
    g = out["RelDrop alpha=0.5 beta=0.85"]["aug"]
    assert (g["name"], g["alpha"], g["beta"]) == ("reldrop", 0.5, 0.85)
    assert out["baseline"]["optim"] == cfg["optim"]  # the rest of the config is inherited
    cfg["compare"]["variants"] = [{"name": "a"}, {"name": "a"}]
    with pytest.raises(ValueError, match="duplicate"):
        expand_variants(cfg)


def test_epochs_scale_fixed_and_auto_equal_compute(tmp_path: Path, make_cfg: Any) -> None:
    cfg = make_cfg(tmp_path, train__epochs=2, data__subset=100, data__test_subset=50)
    cfg["compare"]["variants"] = [
        {"name": "baseline x2", "aug": {"name": "none"}, "epochs_scale": 1.5},
        {"name": "equal compute", "aug": {"name": "none"}, "epochs_scale": "auto"},
        {"name": "baseline", "aug": {"name": "none"}},
        {"name": "RelDrop", "aug": {"name": "reldrop"}}]
    out = tmp_path / "cmp"
    res = run_compare(cfg, out=out, seeds=[0], quiet=True, plot=False)
    assert res["files"] == [] and not (out / "results.csv").exists()  # the tables are the command layer's
    rows = {r["variant"]: r for r in res["rows"]}
    assert rows["baseline x2"]["epochs"] == 3 and rows["baseline"]["epochs"] == 2  # round(2 * 1.5)
    scale = json.loads((out / "epochs_scale.json").read_text())["equal compute"]
    t = {v: float(np.mean([m["train_time"] for m in read_metrics(out / v / "seed0")])) for v in ("baseline", "RelDrop")}
    assert scale["baseline"] == "baseline" and scale["reference"] == "RelDrop"  # never the scaled variant
    assert scale["factor"] == pytest.approx(t["RelDrop"] / t["baseline"], rel=1e-12)
    assert rows["equal compute"]["epochs"] == scale["epochs"] == max(1, round(2 * scale["factor"]))
    assert rows["baseline"]["p_vs_baseline"] is None  # the unscaled run is the baseline of the table
    # a resumed comparison keeps the stored decision (the measured times of a rerun would differ)
    (out / "epochs_scale.json").write_text(json.dumps({"equal compute": dict(scale, factor=9.0)}))
    again = run_compare(cfg, out=out, seeds=[0], quiet=True, plot=False)
    assert {r["variant"]: r["epochs"] for r in again["rows"]}["equal compute"] == scale["epochs"]


@pytest.mark.parametrize("entry, match", [
    ({"epochs_scale": 0}, "number > 0 or 'auto'"), ({"epochs_scale": "twice"}, "number > 0 or 'auto'"),
    ({"epochs_scale": 2, "epochs_scale_ref": "RelDrop"}, "goes with epochs_scale: auto"),
])
def test_epochs_scale_bad_values(tmp_path: Path, make_cfg: Any, entry: dict, match: str) -> None:
    cfg = make_cfg(tmp_path, train__epochs=1)
    cfg["compare"]["variants"] = [{"name": "baseline", "aug": {"name": "none"}}, {"name": "b2", "aug": {"name": "none"}, **entry}]
    with pytest.raises(ValueError, match=match):
        run_compare(cfg, out=tmp_path / "cmp", seeds=[0], quiet=True, plot=False)


def test_epochs_scale_auto_needs_its_reference_runs(tmp_path: Path, make_cfg: Any) -> None:
    cfg = make_cfg(tmp_path, train__epochs=1, data__subset=60, data__test_subset=30)
    cfg["compare"]["variants"] = [{"name": "baseline", "aug": {"name": "none"}}, {"name": "RelDrop", "aug": {"name": "reldrop"}},
                                  {"name": "eq", "aug": {"name": "none"}, "epochs_scale": "auto"}]
    with pytest.raises(ValueError, match="finished runs of both are needed"):
        run_compare(cfg, out=tmp_path / "cmp", seeds=[0], only=["eq"], quiet=True, plot=False)
    cfg["compare"]["variants"] = cfg["compare"]["variants"][:1] + cfg["compare"]["variants"][2:]
    with pytest.raises(ValueError, match="needs a baseline and a reference"):
        run_compare(cfg, out=tmp_path / "cmp2", seeds=[0], quiet=True, plot=False)


def test_test_sets_can_replace_the_test_subset(tmp_path: Path, make_cfg: Any) -> None:
    """``{full: {test_subset: null}}`` scores the final model on the whole test split (digits: 360 images)."""
    from reldrop.data import build_dataset
    from reldrop.runs import load_checkpoint
    from reldrop.train.evaluate import evaluate
    from reldrop.train.factory import build_model

    cfg = make_cfg(tmp_path, train__epochs=1, data__subset=100, data__test_subset=50)
    cfg["compare"]["variants"] = [{"name": "baseline", "aug": {"name": "none"}}]
    cfg["compare"]["test_sets"] = {"full": {"test_subset": None}, "same50": {"test_subset": 50}}
    res = run_compare(cfg, out=tmp_path / "cmp", seeds=[0], quiet=True, plot=False)
    row = res["rows"][0]
    assert row["test_same50_acc_mean"] == pytest.approx(row["final_test_acc_mean"], abs=1e-9)
    info = build_dataset("digits", tmp_path, "test", train_transform=False)
    model = build_model(cfg, info)
    model.load_state_dict(load_checkpoint(tmp_path / "cmp" / "baseline" / "seed0" / "last.pt")["model"])
    model.eval()
    full = evaluate(model, info.dataset, info.num_classes, device=torch.device("cpu"), batch_size=512)
    assert full["test_n"] == 360 and row["test_full_acc_mean"] == pytest.approx(full["test_acc"], abs=1e-9)
    cfg["compare"]["test_sets"] = {"bad": {"test_subset": 0}}
    with pytest.raises(ValueError, match="test_subset must be a positive int"):
        run_compare(cfg, out=tmp_path / "cmp", seeds=[0], quiet=True, plot=False)
