"""Time one PointNet++ training step (forward + cross-entropy + backward + AdamW) on this machine.

Two implementations, same parameters, same inputs, measured interleaved (step A, step B, A, B, …)
so that load from other processes hits both alike:

* ``ours``: ``build("pointnet2_ssg")`` — channels-last shared MLPs (Linear + BatchNorm1d on
  ``(B·S·K, C)`` rows, last ReLU after the max-pool), top-k ball query, one gather per group.
* ``straightforward``: ``layout="conv2d"`` (1×1 Conv2d + BatchNorm2d on ``(B, C, K, S)``, the
  reference PyTorch PointNet++ layout) with reference-style sampling/grouping (mask-update FPS,
  full-sort ball query), written here for comparison.

    python benchmarks/pointnet2_step.py [--variant ssg] [--batch 24] [--points 1024] [--steps 5]
    python benchmarks/pointnet2_step.py --model pointnet --points 1024     # ours only
    python benchmarks/pointnet2_step.py --points 512 --npoint 256 64 --no-compare

Prints, per training step after one warm-up step, the median wall time and the median CPU
time (user + system, all threads of this process). On a shared, overloaded machine the wall
time mostly measures the other processes; the CPU time is the work our step needs. With
``--mallopt`` glibc keeps freed memory instead of returning large blocks to the OS, which removes
the page-fault (system) time of the big activations in every step.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import statistics
import time
from typing import Iterator

import torch
import torch.nn.functional as F

import reldrop.models.pointnet2 as P
from reldrop.models import build


@torch.no_grad()
def reference_fps(xyz: torch.Tensor, npoint: int, start: torch.Tensor | None = None) -> torch.Tensor:
    """Reference-style FPS: masked update of the distance array, index written per step."""
    B, N, _ = xyz.shape
    xyz = xyz.detach()
    centroids = torch.zeros(B, npoint, dtype=torch.long)
    distance = torch.ones(B, N) * 1e10
    farthest = torch.zeros(B, dtype=torch.long) if start is None else start
    batch = torch.arange(B)
    for i in range(npoint):
        centroids[:, i] = farthest
        d = torch.sum((xyz - xyz[batch, farthest, :].view(B, 1, 3)) ** 2, -1)
        mask = d < distance
        distance[mask] = d[mask]
        farthest = torch.max(distance, -1)[1]
    return centroids


@torch.no_grad()
def reference_ball_query(radius, nsample, xyz, new_xyz, sqdist=None):  # type: ignore[no-untyped-def]
    """Reference-style ball query: mark out-of-ball indices N, sort the full (B, S, N) array."""
    B, N, _ = xyz.shape
    S = new_xyz.shape[1]
    if sqdist is None:
        sqdist = P.square_distance(new_xyz, xyz)
    idx = torch.arange(N).view(1, 1, N).repeat(B, S, 1)
    idx[sqdist > radius**2] = N
    idx = idx.sort(dim=-1)[0][:, :, :nsample]
    first = idx[:, :, :1].expand(-1, -1, nsample)
    return torch.where(idx == N, first, idx)


@contextlib.contextmanager
def reference_ops() -> Iterator[None]:
    saved = P.farthest_point_sample, P.ball_query
    P.farthest_point_sample, P.ball_query = reference_fps, reference_ball_query
    try:
        yield
    finally:
        P.farthest_point_sample, P.ball_query = saved


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="ssg", choices=["ssg", "msg"])
    ap.add_argument("--batch", type=int, default=24)
    ap.add_argument("--points", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    ap.add_argument("--mallopt", action="store_true", help="glibc: no mmap/trim for big blocks")
    ap.add_argument("--model", default=None, help="registry name (default pointnet2_<variant>)")
    ap.add_argument("--npoint", type=int, nargs=2, default=None, help="PointNet++ centres per level")
    ap.add_argument("--no-compare", action="store_true", help="time ours only")
    args = ap.parse_args()
    if args.mallopt:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, (1 << 31) - 1)  # M_TRIM_THRESHOLD
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(args.batch, args.points, 3)
    x = x / x.norm(dim=-1, keepdim=True).amax(1, keepdim=True)
    y = torch.randint(0, 40, (args.batch,))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"{args.variant} batch {args.batch} x {args.points} points")

    name = args.model or f"pointnet2_{args.variant}"
    kw = {"npoint": tuple(args.npoint)} if args.npoint else {}
    models = {"ours": build(name, num_classes=40, **kw)}
    compare = name.startswith("pointnet2") and not args.no_compare
    if compare:
        models["straightforward"] = build(name, num_classes=40, layout="conv2d", **kw)
        with torch.no_grad():  # same weights in both
            for a, b in zip(models["ours"].state_dict().values(), models["straightforward"].state_dict().values()):
                b.copy_(a.view_as(b))
    print(f"model {name} {kw or ''}")
    ctx = {"ours": contextlib.nullcontext, "straightforward": reference_ops}
    if not compare:
        del ctx["straightforward"]
    opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=1e-4) for k, m in models.items()}
    train: dict[str, list[float]] = {k: [] for k in models}
    cpu: dict[str, list[float]] = {k: [] for k in models}
    for i in range(args.steps + 1):
        for k, m in models.items():
            m.train()
            with ctx[k]():
                c0 = os.times()
                t0 = time.perf_counter()
                opts[k].zero_grad(set_to_none=True)
                F.cross_entropy(m(x), y).backward()
                opts[k].step()
                dt = time.perf_counter() - t0
                c1 = os.times()
            if i > 0:
                train[k].append(dt)
                cpu[k].append(c1.user - c0.user + c1.system - c0.system)
    evals: dict[str, list[float]] = {k: [] for k in models}
    with torch.no_grad():
        for _ in range(3):
            for k, m in models.items():
                m.eval()
                with ctx[k]():
                    t0 = time.perf_counter()
                    m(x)
                    evals[k].append(time.perf_counter() - t0)
    for k in models:
        print(f"{k:16s} train step: wall median {statistics.median(train[k]):.3f} s (min {min(train[k]):.3f}), "
              f"CPU median {statistics.median(cpu[k]):.3f} s, n={len(train[k])}; "
              f"eval forward wall median {statistics.median(evals[k]):.3f} s")
    for kind, d in (("wall", train), ("CPU", cpu)):
        if compare:
            ratio = statistics.median(d["straightforward"]) / statistics.median(d["ours"])
            print(f"speed-up straightforward/ours ({kind} medians): {ratio:.2f}x")
    print(f"load average during the run: {os.getloadavg()}")


if __name__ == "__main__":
    main()
