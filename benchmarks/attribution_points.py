"""Time z⁺/Flat attribution of the point-cloud models, zennit vs the fast backend - a script, not a test.

    python benchmarks/attribution_points.py                       # SSG, 12 x 1024 points, CPU
    python benchmarks/attribution_points.py --models pointnet2_ssg,pointnet2_msg,pointnet --json out.json

Median seconds per call (Attributor built once) of the zennit and the fast backend, the max
relative difference between them (per sample, max|ΔR| / max|R|), and for the fast backend where
the time goes: sampling + grouping (FPS, ball query, gathers), the shared-MLP forwards, the
backward through the MLPs (z⁺ GEMMs) and the rest. Random weights and inputs (timing only).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any, Callable

import torch

from reldrop import models
from reldrop.attribution import Attributor
from reldrop.attribution.backends.points import lrp as fast_points
from reldrop.models import pointnet2


def timeit(fn: Callable[[], Any], steps: int) -> float:
    fn()
    ts = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def phases(att: Attributor, x: torch.Tensor, y: torch.Tensor, steps: int) -> dict[str, float]:
    """Seconds per call spent in each phase of the fast backend (functions wrapped by name)."""
    spent: dict[str, float] = {}
    patched = [(fast_points, "_run", "mlp_forward"), (fast_points, "_back", "mlp_backward"),
               (pointnet2, "farthest_point_sample", "sampling_grouping"),
               (pointnet2, "ball_query", "sampling_grouping"), (pointnet2, "_group", "sampling_grouping")]
    originals = [(mod, name, getattr(mod, name)) for mod, name, _ in patched]

    def wrap(fn: Callable[..., Any], key: str) -> Callable[..., Any]:
        def inner(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[key] = spent.get(key, 0.0) + time.perf_counter() - t0
        return inner

    try:
        for (mod, name, key), (_, _, fn) in zip(patched, originals):
            setattr(mod, name, wrap(fn, key))
        att(x, y)
        spent.clear()
        t0 = time.perf_counter()
        for _ in range(steps):
            att(x, y)
        total = (time.perf_counter() - t0) / steps
    finally:
        for mod, name, fn in originals:
            setattr(mod, name, fn)
    out = {k: v / steps for k, v in spent.items()}
    out["other"] = total - sum(out.values())
    out["total"] = total
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="pointnet2_ssg", help="comma list of pointnet2_ssg, pointnet2_msg, pointnet")
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--points", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    result: dict[str, Any] = {"torch": torch.__version__, "threads": torch.get_num_threads(),
                              "batch": args.batch, "points": args.points}
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        model = models.build(name, num_classes=40)
        x = torch.randn(args.batch, args.points, 3)
        x = x / x.norm(dim=-1).amax(1)[:, None, None]
        y = torch.randint(0, 40, (args.batch,))
        zen = Attributor(model, "zplus_flat", backend="zennit")
        fast = Attributor(model, "zplus_flat", backend="fast")
        r_z, r_f = zen(x, y), fast(x, y)
        diff = float(((r_f - r_z).abs().flatten(1).amax(1) / r_z.abs().flatten(1).amax(1)).max())
        row = {"zennit_s": timeit(lambda zen=zen, x=x, y=y: zen(x, y), args.steps),
               "fast_s": timeit(lambda fast=fast, x=x, y=y: fast(x, y), args.steps),
               "max_rel_diff": diff, "fast_phases_s": phases(fast, x, y, args.steps)}
        row["speedup"] = row["zennit_s"] / row["fast_s"]
        result[name] = row
        ph = ", ".join(f"{k} {v:.3f}" for k, v in row["fast_phases_s"].items())
        print(f"{name}: zennit {row['zennit_s']:.3f} s, fast {row['fast_s']:.3f} s ({row['speedup']:.1f}x), "
              f"max rel diff {diff:.1e}; fast phases: {ph}", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
