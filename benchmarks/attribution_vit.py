"""Seconds per attribution call of the ViT backend: CP-LRP vs AttnLRP (issue 14).

One process, random inputs, ``vit_tiny_cifar`` (timm ViT-Tiny, 32×32, 4×4 patches), eval mode;
the two methods are timed interleaved (alternating order) after one warm-up call each, and the
median over the timed rounds is printed (and written with ``--json``).

Usage::

    python benchmarks/attribution_vit.py --batch 32 --rounds 7 --threads 1
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

from reldrop.attribution.backends.vit import ViTLRP
from reldrop.models import build


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=32, help="samples per call (default 32 = half of 64 at p=0.5)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None, metavar="PATH")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dev = torch.device(args.device)
    model = build("vit_tiny_cifar", num_classes=10).to(dev).eval()
    x = torch.randn(args.batch, 3, 32, 32, device=dev)
    y = torch.randint(0, 10, (args.batch,), device=dev)
    methods = ("cp_lrp", "attnlrp")
    fns = {m: ViTLRP(model, m) for m in methods}
    times: dict[str, list[float]] = {m: [] for m in methods}
    load0 = os.getloadavg()
    for m in methods:
        fns[m](x, y)  # warm-up
    for r in range(args.rounds):
        for m in (methods if r % 2 == 0 else methods[::-1]):
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t0 = time.perf_counter()
            fns[m](x, y)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            times[m].append(time.perf_counter() - t0)
    med = {m: statistics.median(v) for m, v in times.items()}
    out = {"median_s": med, "ratio_attnlrp_over_cp_lrp": med["attnlrp"] / med["cp_lrp"], "all_s": times,
           "batch": args.batch, "rounds": args.rounds, "threads": torch.get_num_threads(), "device": str(dev),
           "torch": torch.__version__, "loadavg_start": load0, "loadavg_end": os.getloadavg()}
    print(f"batch {args.batch}, threads {torch.get_num_threads()}, load avg {load0[0]:.1f} -> "
          f"{out['loadavg_end'][0]:.1f}: cp_lrp {med['cp_lrp']:.3f} s, attnlrp {med['attnlrp']:.3f} s "
          f"({out['ratio_attnlrp_over_cp_lrp']:.2f}x)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
