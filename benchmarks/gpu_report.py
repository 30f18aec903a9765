"""Merge the parts of ``benchmarks/gpu_check.sh`` into ``results_gpu.json`` and a Markdown table.

Inputs (any may be missing; the report says so):

* ``--tests``: the JUnit XML of the CUDA-only tests (pytest ``--junitxml``)
* ``--overhead``: ``benchmarks/overhead.py --device cuda --json`` with AMP off
* ``--overhead-amp``: the same with ``--amp``
* ``--throughput``: run directories of the short real-data ``reldrop train`` runs (``metrics.jsonl``)

    python benchmarks/gpu_report.py --tests t.xml --overhead o.json --overhead-amp oa.json \\
        --throughput runs/none runs/re runs/reldrop --json benchmarks/results_gpu.json --md benchmarks/results_gpu.md
"""
from __future__ import annotations

import argparse
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Sequence

__all__ = ["junit_summary", "throughput_summary", "build_report", "markdown"]


def junit_summary(path: str | Path) -> dict[str, Any]:
    """``{"passed", "failed", "errors", "skipped", "failures": [names]}`` from a pytest JUnit XML file."""
    root = ET.parse(path).getroot()
    cases = root.iter("testcase")
    out: dict[str, Any] = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0, "failures": []}
    for case in cases:
        name = f"{case.get('classname')}::{case.get('name')}"
        if case.find("failure") is not None:
            out["failed"] += 1
            out["failures"].append(name)
        elif case.find("error") is not None:
            out["errors"] += 1
            out["failures"].append(name)
        elif case.find("skipped") is not None:
            out["skipped"] += 1
        else:
            out["passed"] += 1
    return out


def throughput_summary(run_dirs: Sequence[str | Path]) -> dict[str, Any]:
    """Per run directory (named by its aug): images/s of the last epoch, epoch and aug seconds, test acc."""
    out: dict[str, Any] = {}
    for d in map(Path, run_dirs):
        rows = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines() if line.strip()]
        last = rows[-1]
        out[d.name] = {k: last.get(k) for k in ("throughput", "train_time", "aug_time", "test_acc", "epoch")}
    return out


def build_report(meta: dict[str, Any], tests: dict[str, Any] | None, overhead: dict[str, Any] | None,
                 overhead_amp: dict[str, Any] | None, throughput: dict[str, Any] | None) -> dict[str, Any]:
    """The ``results_gpu.json`` object: ``meta`` plus each part (None where it did not run)."""
    return {"meta": meta, "tests": tests, "overhead": overhead, "overhead_amp": overhead_amp,
            "throughput": throughput}


def _overhead_rows(res: dict[str, Any] | None, amp: str) -> list[str]:
    if not res:
        return []
    rows = []
    for name, r in res.items():
        if name == "meta" or not isinstance(r, dict) or "baseline_s" not in r:
            continue
        mem = r.get("peak_mem_bytes") or r.get("max_rss_growth_bytes") or {}
        fast = r.get("backend_used", {}).get("reldrop_fast", "?")
        rows.append(f"| {name} | {amp} | {r['batch']} | {1e3 * r['baseline_s']:.1f} | {1e3 * r['re_s']:.1f} | "
                    f"{1e3 * r['reldrop_zennit_s']:.1f} | {1e3 * r['reldrop_fast_s']:.1f} ({fast}) | "
                    f"{r['ratio_fast']:.2f} | {mem.get('baseline', 0) / 2**20:.0f} | "
                    f"{mem.get('reldrop_fast', 0) / 2**20:.0f} |")
    return rows


def markdown(report: dict[str, Any]) -> str:
    """A Markdown summary: CUDA tests, per-step overhead (AMP off/on, peak memory), real-data throughput."""
    meta = report["meta"]
    lines = [f"GPU check: {meta.get('gpu', '?')}, torch {meta.get('torch', '?')}, {meta.get('date', '')}", ""]
    t = report.get("tests")
    if t:
        lines.append(f"CUDA-only tests: {t['passed']} passed, {t['failed']} failed, {t['errors']} errors, "
                     f"{t['skipped']} skipped" + (f" (failing: {', '.join(t['failures'])})" if t["failures"] else ""))
    else:
        lines.append("CUDA-only tests: did not run")
    lines += ["", "| model | AMP | batch | baseline ms | RE ms | RelDrop zennit ms | RelDrop fast ms (backend) | "
              "x fast | peak MB baseline | peak MB fast |", "|---|---|---|---|---|---|---|---|---|---|"]
    rows = _overhead_rows(report.get("overhead"), "off") + _overhead_rows(report.get("overhead_amp"), "on")
    lines += rows if rows else ["| (overhead.py did not run) | | | | | | | | | |"]
    tp = report.get("throughput")
    lines += [""]
    if tp:
        lines += [f"Real-data training throughput ({meta.get('throughput_config', '?')}, one epoch):", "",
                  "| aug | images/s | train s | aug s | test acc % |", "|---|---|---|---|---|"]
        for name, r in tp.items():
            lines.append(f"| {name} | {r['throughput']:.0f} | {r['train_time']:.1f} | {r['aug_time']:.1f} | "
                         f"{r['test_acc']:.2f} |")
    else:
        lines.append("Real-data throughput: did not run")
    return "\n".join(lines) + "\n"


def _load(path: str | None) -> dict[str, Any] | None:
    if not path or not Path(path).is_file():
        return None
    return json.loads(Path(path).read_text())


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tests", default=None)
    ap.add_argument("--overhead", default=None)
    ap.add_argument("--overhead-amp", default=None)
    ap.add_argument("--throughput", nargs="*", default=[])
    ap.add_argument("--meta", default="{}", help="JSON object of facts about the machine and the run")
    ap.add_argument("--json", required=True)
    ap.add_argument("--md", required=True)
    a = ap.parse_args(argv)
    tests = junit_summary(a.tests) if a.tests and Path(a.tests).is_file() else None
    runs = [d for d in a.throughput if (Path(d) / "metrics.jsonl").is_file()]
    report = build_report(json.loads(a.meta), tests, _load(a.overhead), _load(a.overhead_amp),
                          throughput_summary(runs) if runs else None)
    Path(a.json).write_text(json.dumps(report, indent=2))
    md = markdown(report)
    Path(a.md).write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
