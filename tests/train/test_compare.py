"""reldrop compare: variants x seeds, results.md/csv, curves.png, grid expansion, resume of a comparison."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from reldrop.train.compare import expand_variants, moving_average, read_metrics, run_compare
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


def test_moving_average() -> None:
    y = [0.0, 10.0, 20.0, 30.0, 40.0, 50.0]
    ma = moving_average(y, 3)
    assert np.allclose(ma, [5, 10, 20, 30, 40, 45])  # centred, shrinking at the ends
    assert np.allclose(moving_average(y, 5)[2], 20) and np.allclose(moving_average(y, 4)[0], 10)
    assert np.allclose(moving_average(y, 1), y)


def test_compare_writes_table_curves_and_resumes(tmp_path: Path, make_cfg: Any) -> None:
    cfg = make_cfg(tmp_path, train__epochs=2, data__subset=100, data__test_subset=60)
    cfg["compare"]["variants"] = [{"name": "baseline", "aug": {"name": "none"}}, {"name": "RE", "aug": {"name": "re"}}]
    out = tmp_path / "cmp"
    res = run_compare(cfg, out=out, seeds=[0, 1], quiet=True)
    for f in ("results.md", "results.csv", "runs.csv", "curves.png"):
        assert (out / f).is_file() and (out / f).stat().st_size > 0
    assert (out / "baseline" / "seed1" / "metrics.jsonl").is_file()
    with open(out / "runs.csv") as f:
        runs = list(csv.DictReader(f))
    with open(out / "results.csv") as f:
        rows = {r["variant"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"baseline", "RE"} and len(runs) == 4
    for name in ("baseline", "RE"):
        finals = [float(r["final_test_acc"]) for r in runs if r["variant"] == name]
        assert float(rows[name]["final_test_acc_mean"]) == pytest.approx(np.mean(finals), abs=1e-3)
        assert float(rows[name]["final_test_acc_std"]) == pytest.approx(np.std(finals, ddof=1), abs=1e-3)
    md = (out / "results.md").read_text()
    assert "| baseline | 2 | 2 |" in md and "±" in md and "gap" in md
    # seeds differ -> runs differ
    assert runs[0]["final_train_acc"] != runs[1]["final_train_acc"] or runs[0]["final_test_acc"] != runs[1]["final_test_acc"]
    # re-running reuses finished runs (no retraining: last.pt untouched)
    ckpt = out / "RE" / "seed0" / "last.pt"
    mtime = ckpt.stat().st_mtime_ns
    res2 = run_compare(cfg, out=out, seeds=[0, 1], quiet=True, plot=False)
    assert ckpt.stat().st_mtime_ns == mtime
    assert res2["rows"] == res["rows"]


def test_compare_cli_on_digits_subset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from reldrop.cli import main

    out = tmp_path / "cli"
    rc = main(["compare", "--preset", "digits", "--out", str(out), "--seeds", "3", "--variants", "baseline",
               "--epochs", "1", "--set", "data.subset=100", "model.kwargs={width: 4}", "--quiet"])
    assert rc == 0
    text = capsys.readouterr().out
    assert f"results written to {out}" in text and "| baseline | 1 | 1 |" in text
    assert main(["compare", "--preset", "digits", "--variants", "nope", "--out", str(out), "--quiet"]) == 2


def test_compare_statistics_columns_and_test_sets(tmp_path: Path, make_cfg: Any) -> None:
    from reldrop.stats import describe, paired_test

    cfg = make_cfg(tmp_path, train__epochs=1, data__subset=100, data__test_subset=60)
    cfg["compare"]["variants"] = [{"name": "baseline", "aug": {"name": "none"}}, {"name": "RE", "aug": {"name": "re"}},
                                  {"name": "RelDrop", "aug": {"name": "reldrop"}}]
    # digits ignores `shift` at test time: this extra test set must reproduce the final test accuracy
    cfg["compare"]["test_sets"] = {"noshift": {"shift": 0}}
    out = tmp_path / "cmp"
    run_compare(cfg, out=out, seeds=[0, 1, 2], quiet=True, plot=False)
    with open(out / "results.csv") as f:
        rows = {r["variant"]: r for r in csv.DictReader(f)}
    with open(out / "runs.csv") as f:
        runs = list(csv.DictReader(f))
    for col in ("ci95_low", "ci95_high", "p_vs_baseline", "p_vs_re", "significant_vs_baseline", "significant_vs_re",
                "p_holm_vs_baseline", "p_holm_vs_re", "test_noshift_acc_p_holm_vs_baseline"):
        assert col in rows["baseline"]
    finals = {v: [read_metrics(r["run_dir"])[-1]["test_acc"] for r in runs if r["variant"] == v] for v in rows}
    for v, vals in finals.items():
        s = describe(vals)
        assert float(rows[v]["ci95_low"]) == pytest.approx(s.ci95_low, rel=1e-9)
        assert float(rows[v]["ci95_high"]) == pytest.approx(s.ci95_high, rel=1e-9)
        assert float(rows[v]["test_noshift_acc_mean"]) == pytest.approx(float(rows[v]["final_test_acc_mean"]), abs=1e-9)
    assert rows["baseline"]["p_vs_baseline"] == "" and rows["baseline"]["p_vs_re"] == ""
    assert rows["RE"]["p_vs_re"] == "" and rows["RelDrop"]["p_vs_re"] != ""
    assert rows["RE"]["p_vs_baseline"] != "" and rows["RE"]["significant_vs_baseline"] in ("yes", "no")
    ref = paired_test(finals["RelDrop"], finals["RE"])
    if ref.p == ref.p:  # defined unless the three differences are equal
        assert float(rows["RelDrop"]["p_vs_re"]) == pytest.approx(ref.p, rel=1e-9)
    assert float(rows["RelDrop"]["p_perm_vs_re"]) == ref.p_perm
    from reldrop.stats import holm

    cell = [rows["RE"]["p_vs_baseline"], rows["RelDrop"]["p_vs_baseline"], rows["RelDrop"]["p_vs_re"]]
    expect = holm([float(c) if c else None for c in cell])
    got = [rows["RE"]["p_holm_vs_baseline"], rows["RelDrop"]["p_holm_vs_baseline"], rows["RelDrop"]["p_holm_vs_re"]]
    assert [float(g) if g else None for g in got] == pytest.approx(expect, rel=1e-9)
    md = (out / "results.md").read_text()
    assert "p (Holm)" in md
    assert "95 % CI" in md and "sign-flip" in md and "Test set `noshift`" in md
    assert (out / "RE" / "seed0" / "test_sets.json").is_file()


@pytest.mark.parametrize("epochs", [2, 12])
def test_plot_curves_short_and_long_runs(tmp_path: Path, epochs: int) -> None:
    """curves.png for runs shorter than two smoothing windows (plain mean per epoch) and longer
    ones (moving average); seeds give a band. The figure is a real PNG of the expected size."""
    from reldrop.train.compare import plot_curves

    rng = torch.Generator().manual_seed(0)
    runs = [{"variant": v, "metrics": [{"epoch": e + 1, "train_acc": 30 + 3 * e + float(torch.rand(1, generator=rng)),
                                        "test_acc": 25 + 2 * e + float(torch.rand(1, generator=rng))}
                                       for e in range(epochs)]}
            for v in ("baseline", "RelDrop") for _ in range(2)]
    path = plot_curves(runs, tmp_path / "curves.png", title="t")
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    assert (width, height) == (1440, 552)


def test_epochs_scale_fixed_and_auto_equal_compute(tmp_path: Path, make_cfg: Any) -> None:
    cfg = make_cfg(tmp_path, train__epochs=2, data__subset=100, data__test_subset=50)
    cfg["compare"]["variants"] = [
        {"name": "baseline x2", "aug": {"name": "none"}, "epochs_scale": 1.5},
        {"name": "equal compute", "aug": {"name": "none"}, "epochs_scale": "auto"},
        {"name": "baseline", "aug": {"name": "none"}},
        {"name": "RelDrop", "aug": {"name": "reldrop"}}]
    out = tmp_path / "cmp"
    res = run_compare(cfg, out=out, seeds=[0], quiet=True, plot=False)
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
