"""benchmarks/coverage.py on two tiny models: a covered one and a refused one, JSON and markdown."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

pytest.importorskip("timm")


def test_coverage_rows_json_and_markdown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import coverage as bench

    monkeypatch.setattr(bench, "STEPS", 3)  # the mechanics, not the 30-step numbers
    monkeypatch.setattr(bench, "SIDE", {"test_resnet": 32, "test_efficientnet": 32})
    out, md = tmp_path / "c.json", tmp_path / "c.md"
    assert bench.main(["--models", "test_resnet,test_efficientnet", "--json", str(out), "--md", str(md)]) == 0
    rows = {r["model"]: r for r in json.loads(out.read_text())["rows"]}
    ok, refused = rows["test_resnet"], rows["test_efficientnet"]
    assert ok["status"] == "covered" and ok["unchanged"] and ok["backend"]
    assert 0.9 <= ok["ratio_init"] <= 1.1 and 0.9 <= ok["ratio_trained"] <= 1.1
    assert refused["status"] == "refused" and "SqueezeExcite" in refused["reason"] and refused["unchanged"]
    text = md.read_text()
    assert "2 models: 1 covered, 1 refused, 0 garbage, 0 crashed" in text
    assert "python benchmarks/coverage.py --models test_resnet,test_efficientnet" in text
