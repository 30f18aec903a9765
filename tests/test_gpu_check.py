"""benchmarks/gpu_check.sh without a GPU says so and exits 0; its report writer on stored results."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_report  # noqa: E402


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_check_without_cuda_says_so_and_exits_0(tmp_path: Path) -> None:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHON=sys.executable, OUT_DIR=str(tmp_path))
    res = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], env=env, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "no CUDA GPU present" in res.stdout
    assert not list(tmp_path.iterdir())  # wrote nothing


def test_gpu_report_merges_the_parts(tmp_path: Path) -> None:
    overhead = json.loads((ROOT / "benchmarks" / "results_cpu_quick.json").read_text())  # same format as CUDA
    (tmp_path / "o.json").write_text(json.dumps(overhead))
    (tmp_path / "t.xml").write_text(
        '<testsuites><testsuite><testcase classname="tests.a" name="test_cuda"/>'
        '<testcase classname="tests.b" name="test_gpu"><failure message="x"/></testcase>'
        '<testcase classname="tests.c" name="test_cuda2"><skipped/></testcase></testsuite></testsuites>')
    run = tmp_path / "reldrop"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "throughput": 1234.5, "train_time": 2.0,
                                                   "aug_time": 0.5, "test_acc": 91.0}) + "\n")
    out_json, out_md = tmp_path / "r.json", tmp_path / "r.md"
    assert gpu_report.main(["--tests", str(tmp_path / "t.xml"), "--overhead", str(tmp_path / "o.json"),
                            "--overhead-amp", str(tmp_path / "missing.json"), "--throughput", str(run),
                            "--meta", '{"gpu": "Test GPU", "throughput_config": "digits"}',
                            "--json", str(out_json), "--md", str(out_md)]) == 0
    rep = json.loads(out_json.read_text())
    assert rep["tests"] == {"passed": 1, "failed": 1, "errors": 0, "skipped": 1, "failures": ["tests.b::test_gpu"]}
    assert rep["overhead_amp"] is None and rep["throughput"]["reldrop"]["throughput"] == 1234.5
    md = out_md.read_text()
    models = [k for k, v in overhead.items() if isinstance(v, dict) and "baseline_s" in v]
    assert models and all(f"| {m} | off | " in md for m in models) and "| on |" not in md
    r = overhead[models[0]]
    assert f"{1e3 * r['baseline_s']:.1f}" in md and "| reldrop | 1234 | 2.0 | 0.5 | 91.00 |" in md
    assert "1 passed, 1 failed, 0 errors, 1 skipped (failing: tests.b::test_gpu)" in md
