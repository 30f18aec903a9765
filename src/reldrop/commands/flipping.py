"""Fig. 4 for trained point-cloud run directories: point-flipping curves of several runs in one figure.

``python -m reldrop.commands.flipping LABEL=RUN_DIR ... --out DIR``; the metric itself is
:func:`reldrop.metrics.flipping.point_flipping_dataset`.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Mapping

import torch

from ..metrics.flipping import point_flipping_dataset
from ..train.load import load_run
from ..viz.pointclouds import plot_flipping_curves

__all__ = ["flipping_report", "main"]


def flipping_report(runs: Mapping[str, str], out_dir: str, *, step_size: int = 32, steps: int | None = None,
                    mode: str = "fixed", relevance: str = "zplus_flat", limit: int | None = None,
                    batch_size: int = 32, device: str = "cpu", data_root: str | None = None,
                    seed: int = 0) -> dict[str, Any]:
    """Fig. 4 for trained run directories: ``{label: run_dir}`` → flipping curves (``mode`` order and
    the random-order control) on the first ``limit`` test clouds (all when ``None``), one PNG
    (``flipping.png``) and ``flipping.json`` (curves and AUCs) in ``out_dir``. Returns the JSON dict."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ordered, controls, report = {}, {}, {}
    for label, run_dir in runs.items():
        loaded = load_run(run_dir, device=device, data_root=data_root)
        if loaded.test.modality != "points":
            raise ValueError(f"{run_dir}: point flipping needs a point-cloud run, got modality {loaded.test.modality!r}")
        kw: dict[str, Any] = dict(step_size=step_size, steps=steps, batch_size=batch_size, device=device,
                                  max_samples=limit, seed=seed)
        ordered[label] = point_flipping_dataset(loaded.model, loaded.test.dataset, relevance=relevance, mode=mode, **kw)
        controls[label] = point_flipping_dataset(loaded.model, loaded.test.dataset, mode="random", **kw)
        report[label] = {"run_dir": str(run_dir), mode: ordered[label].to_dict(), "random": controls[label].to_dict()}
    plot_flipping_curves(ordered, out / "flipping.png", controls=controls,
                         title=f"Point flipping ({relevance}, {mode} order; dashed: random order)")
    (out / "flipping.json").write_text(json.dumps(report, indent=1))
    return report


def main(argv: list[str] | None = None) -> int:
    """``python -m reldrop.commands.flipping LABEL=RUN_DIR ... --out DIR``: Fig. 4 for trained point runs."""
    ap = argparse.ArgumentParser(prog="python -m reldrop.commands.flipping", description=main.__doc__)
    ap.add_argument("runs", nargs="+", metavar="LABEL=RUN_DIR")
    ap.add_argument("--out", required=True)
    ap.add_argument("--step-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--mode", choices=("fixed", "recompute"), default="fixed")
    ap.add_argument("--method", default="zplus_flat")
    ap.add_argument("--limit", type=int, default=None, help="first N test clouds (default: all)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    runs = {}
    for item in args.runs:
        label, sep, path = item.rpartition("=")  # labels may contain "=", paths rarely do
        runs[label if sep else item] = path if sep else item
    report = flipping_report(runs, args.out, step_size=args.step_size, steps=args.steps, mode=args.mode,
                             relevance=args.method, limit=args.limit, batch_size=args.batch_size,
                             device=args.device, data_root=args.data_root)
    for label, r in report.items():
        print(f"{label}: {args.mode} AUC {r[args.mode]['auc']:.4f}  random AUC {r['random']['auc']:.4f}  "
              f"(n={r[args.mode]['n']})")
    print(f"-> {args.out}/flipping.png, flipping.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
