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

    import torch.nn as nn

    class Recurrent(nn.Module):  # an LSTM: no LRP rule on any backend
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, stride=4)
            self.lstm = nn.LSTM(4, 4, batch_first=True)
            self.fc = nn.Linear(4, 10)

        def forward(self, x):
            seq = self.conv(x).flatten(2).transpose(1, 2)
            return self.fc(self.lstm(seq)[0][:, -1])

    build = bench.build
    monkeypatch.setattr(bench, "build", lambda name: Recurrent() if name == "lstm_net" else build(name))
    monkeypatch.setattr(bench, "STEPS", 3)  # the mechanics, not the 30-step numbers
    monkeypatch.setattr(bench, "SIDE", {"test_resnet": 32, "test_efficientnet": 32, "lstm_net": 32})
    out, md = tmp_path / "c.json", tmp_path / "c.md"
    names = "test_resnet,test_efficientnet,lstm_net"
    assert bench.main(["--models", names, "--json", str(out), "--md", str(md)]) == 0
    rows = {r["model"]: r for r in json.loads(out.read_text())["rows"]}
    for name, backend in (("test_resnet", "graph"), ("test_efficientnet", "graph")):  # timm nets, SE gates: the graph engine
        ok = rows[name]
        assert ok["status"] == "covered" and ok["unchanged"] and ok["backend"] == backend, ok
        assert 0.9 <= ok["ratio_init"] <= 1.1 and 0.9 <= ok["ratio_trained"] <= 1.1
    refused = rows["lstm_net"]
    assert refused["status"] == "refused" and "LSTM" in refused["reason"] and refused["unchanged"], refused
    text = md.read_text()
    assert "3 models: 2 covered, 1 refused, 0 garbage, 0 crashed" in text
    assert f"python benchmarks/coverage.py --models {names}" in text
