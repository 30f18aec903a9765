"""The graph engine against the hand-written backends: same relevance? how much slower or faster?

For every model a hand-written backend covers, one ``Attributor`` per backend (``graph`` and the
hand-written one: ``fast`` for the CNNs, ``vit`` for the ViT), timed interleaved (median of
``--rounds`` calls after a warm-up) on one random batch in train mode, as RelDrop calls it; and the
largest difference of the two relevance maps relative to max|R| (float32).

    python benchmarks/graph_vs_handwritten.py [--models resnet20,resnet18,efficientnet_lite0,vit_tiny]
        [--rounds 7] [--threads 1] [--json OUT]

The issue's rule: retire a hand-written backend where the graph engine computes the same and is
within 10 % of its time; keep it where it is measurably faster, and say by how much.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

import torch

from reldrop import models
from reldrop.attribution import Attributor

#: model -> (registry name, side, batch, hand-written backend, method)
CONFIGS: dict[str, tuple[str, int, int, str, str]] = {
    "resnet20": ("resnet20_cifar", 32, 128, "fast", "epsilon_flat"),
    "resnet18": ("resnet18_cifar", 32, 64, "fast", "epsilon_flat"),
    "efficientnet_lite0": ("efficientnet_lite0", 64, 64, "fast", "epsilon_flat"),
    "mobilenet_v2": ("mobilenet_v2", 32, 64, "fast", "epsilon_flat"),
    "vit_tiny": ("vit_tiny_cifar", 32, 64, "vit", "cp_lrp"),
}


def run(name: str, rounds: int, warmup: int) -> dict[str, Any]:
    reg, side, batch, hand, method = CONFIGS[name]
    torch.manual_seed(0)
    model = models.build(reg, num_classes=10).train()
    x = torch.randn(batch, 3, side, side)
    y = torch.randint(0, 10, (batch,))
    atts = {b: Attributor(model, method, backend=b) for b in (hand, "graph")}
    times: dict[str, list[float]] = {b: [] for b in atts}
    for r in range(warmup + rounds):
        for b in (list(atts) if r % 2 == 0 else list(atts)[::-1]):
            t0 = time.perf_counter()
            atts[b](x, y)
            dt = time.perf_counter() - t0
            if r >= warmup:
                times[b].append(dt)
    r_hand, r_graph = atts[hand](x, y), atts["graph"](x, y)
    rel = float((r_hand - r_graph).abs().max() / r_hand.abs().max().clamp_min(1e-30))
    med = {b: statistics.median(v) for b, v in times.items()}
    return {"model": name, "batch": batch, "side": side, "method": method, "handwritten": hand,
            "handwritten_s": med[hand], "graph_s": med["graph"], "graph_over_handwritten": med["graph"] / med[hand],
            "max_rel_diff": rel, "all_s": times}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(CONFIGS))
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    print(f"torch {torch.__version__}, threads {args.threads}, load avg {os.getloadavg()[0]:.2f}")
    print("| model | batch × side | method | hand-written | hand-written s | graph s | graph / hand-written | max |ΔR| / max |R| |")
    print("|---|---|---|---|---|---|---|---|")
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        row = run(name, args.rounds, args.warmup)
        rows.append(row)
        print(f"| {name} | {row['batch']} × {row['side']} | {row['method']} | {row['handwritten']} | "
              f"{row['handwritten_s']:.3f} | {row['graph_s']:.3f} | {row['graph_over_handwritten']:.2f} | "
              f"{row['max_rel_diff']:.1e} |", flush=True)
    print(f"load avg at the end {os.getloadavg()[0]:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": args.threads, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
