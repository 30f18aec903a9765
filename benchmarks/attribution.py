"""Time attribution backends on ResNet-18 (3x3 stem, no maxpool) - a script, not a test.

    python benchmarks/attribution.py                    # batch 64, 32x32, CPU, 3 timed calls
    python benchmarks/attribution.py --quick            # batch 8, 1 timed call
    python benchmarks/attribution.py --device cuda --json out.json

Reports the median seconds per call of: zennit ``epsilon_flat`` (Attributor built once, so the
time is register-canonize-forward-backward-remove per call), the fast backend when it supports
the model, and plain gradient x input (the floor of any one-backward method), plus a plain
forward+backward+SGD training step for scale. Random weights and inputs (timing only).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn as nn
import torchvision

from reldrop.attribution import Attributor


def resnet18_3x3(num_classes: int = 10) -> nn.Module:
    m = torchvision.models.resnet18(num_classes=num_classes)
    m.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    m.maxpool = nn.Identity()
    return m


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timeit(fn, device: torch.device, steps: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: leave)")
    parser.add_argument("--quick", action="store_true", help="batch 8, 1 timed call")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()
    if args.quick:
        args.batch, args.steps = 8, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = resnet18_3x3().to(device)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    results: dict[str, float | str | int] = {
        "batch": args.batch, "size": args.size, "device": str(device), "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }

    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    def train_step() -> None:
        model.train()
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    results["train_step_s"] = timeit(train_step, device, args.steps)
    model.eval()
    zennit_attr = Attributor(model, "epsilon_flat", backend="zennit")
    results["zennit_epsilon_flat_s"] = timeit(lambda: zennit_attr(x, y), device, args.steps)
    gxi = Attributor(model, "gradient_x_input", backend="zennit")
    results["gradient_x_input_s"] = timeit(lambda: gxi(x, y), device, args.steps)
    auto = Attributor(model, "epsilon_flat")
    if auto.backend == "fast":
        results["fast_epsilon_flat_s"] = timeit(lambda: auto(x, y), device, args.steps)
    for key, value in results.items():
        print(f"{key:>24}: {value:.4f}" if isinstance(value, float) else f"{key:>24}: {value}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
