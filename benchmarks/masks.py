"""Time the pure mask functions per call (CPU by default) against a reference training step.

    python benchmarks/masks.py                 # B=128 at 3x32x32 and 3x224x224, points B=24 x 1024
    python benchmarks/masks.py --threads 2 --step   # also time a ResNet-18 SGD step at 3x32x32
    python benchmarks/masks.py --device cuda

Reports the median and the min over ``--repeat`` calls after a warm-up (milliseconds per call).
On a shared, oversubscribed CPU use ``--threads 1``: OpenMP barriers make tiny ops erratic.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch

from reldrop.masks import random_erase, relevance_erase, relevance_point_drop


def median_ms(fn: Callable[[], object], repeat: int, device: torch.device, warmup: int = 3) -> tuple[float, float]:
    """(median, min) milliseconds per call; the min is the better estimate on a shared, loaded machine."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), min(times)


def image_cases(B: int, H: int, device: torch.device, gen: torch.Generator) -> dict[str, Callable[[], object]]:
    x = torch.randn(B, 3, H, H, device=device)
    r = torch.randn(B, 3, H, H, device=device)
    return {
        "relevance_erase argmax clip value=0": lambda: relevance_erase(x, r, p=0.5, generator=gen),
        "relevance_erase argmax reject": lambda: relevance_erase(x, r, p=0.5, border="reject", generator=gen),
        "relevance_erase topk": lambda: relevance_erase(x, r, p=0.5, centre="topk", generator=gen),
        "relevance_erase value=per-channel": lambda: relevance_erase(x, r, p=0.5, value=[0.1, 0.2, 0.3], generator=gen),
        "relevance_erase value='random'": lambda: relevance_erase(x, r, p=0.5, value="random", generator=gen),
        "random_erase clip value=0": lambda: random_erase(x, p=0.5, generator=gen),
        "(reference) x.clone()": lambda: x.clone(),
    }


def resnet_step(B: int, device: torch.device) -> Callable[[], object]:
    import torchvision

    model = torchvision.models.resnet18(num_classes=10).to(device)
    model.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False).to(device)
    model.maxpool = torch.nn.Identity()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(B, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (B,), device=device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 224])
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave as is)")
    ap.add_argument("--step", action="store_true", help="also time a ResNet-18 (3x3 stem) SGD step at 32x32")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    gen = torch.Generator(device=device).manual_seed(0)
    print(f"device={device} threads={torch.get_num_threads()} torch={torch.__version__} repeat={args.repeat}")
    for H in args.sizes:
        print(f"\nimages B={args.batch} x 3x{H}x{H}")
        for name, fn in image_cases(args.batch, H, device, gen).items():
            med, best = median_ms(fn, args.repeat, device)
            print(f"  {name:40s} median {med:9.3f} ms   min {best:9.3f} ms")
    pts = torch.randn(24, 1024, 3, device=device)
    rel = torch.randn(24, 1024, 3, device=device)
    print("\npoints B=24 x 1024 x 3")
    med, best = median_ms(lambda: relevance_point_drop(pts, rel, generator=gen), args.repeat, device)
    print(f"  {'relevance_point_drop alpha=0.5 beta=0.15':40s} median {med:9.3f} ms   min {best:9.3f} ms")
    if args.step:
        step = resnet_step(args.batch, device)
        med, best = median_ms(step, max(3, args.repeat // 4), device, warmup=1)
        print(f"\n(reference) ResNet-18 SGD step, B={args.batch} x 3x32x32: median {med:9.1f} ms   min {best:9.1f} ms")


if __name__ == "__main__":
    main()
