"""reldrop compare, the command side: results.md/csv, runs.csv, curves.png, statistics columns, the CLI, resume."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from reldrop.commands.compare import run_compare
from reldrop.train.compare import read_metrics


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
