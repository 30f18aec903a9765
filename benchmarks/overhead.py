"""Cost of a RelDrop training step relative to a plain one (issue 3).

One process; per model the four step kinds are timed *interleaved* (round-robin, the order
rotated every round) after warm-up, and the median over the timed rounds is reported:

* ``baseline``       forward + backward + SGD step on x
* ``re``             ``reldrop.random_erase(x, p=0.5)`` then the baseline step on the result
* ``reldrop_zennit`` ``x_aug = RelDrop(model, backend="zennit", p=0.5)(x, y)`` (``--p``; method: the
                     modality's default, ``epsilon_flat`` for images, ``zplus_flat`` for points)
                     then the baseline step on ``x_aug``
* ``reldrop_fast``   the same with ``backend="fast"`` (``auto`` for models the fast backend does
                     not handle; the JSON says which backend ran)

Both RelDrop variants draw the same per-sample coins in a given round (same generator seed),
so they attribute the same number of samples. Models: ResNet-18 (torchvision, 3×3 stem, no
max-pool = ``resnet18_cifar``) at batch 128 on 32×32 (ResNet-50 likewise, ``resnet50_cifar``, in
``--models all``), the ResNet-20-style CIFAR net
(``resnet20_cifar``, 0.27 M parameters) at batch 128, and PointNet++ SSG at batch 24 × 1024
points when ``reldrop.models.build("pointnet2_ssg")`` exists (``modality="points"``); in ``--models all``
or ``--models vit_tiny`` timm's ViT-Tiny on 32×32 (``vit_tiny_cifar``, patch 4): zennit refuses
ViTs, so both RelDrop kinds run the ``vit`` backend's CP-LRP (the JSON's ``backend_used`` says so);
in ``--models all`` or ``--models efficientnet_lite0`` timm's EfficientNet-Lite0 (random init, timing
only) at 64×64, batch 64 (``--batch`` overrides), channels_last weights as in the finetuning config;
``--models zoo``: timm's convnext_atto, efficientnet_b0, mobilenetv3_small_100, regnety_002 and Swin-T
(4-px windows) at 64×64, batch 32, random init, which only the ``graph`` backend attributes (zennit
refuses them: its column falls back to ``auto`` too; the JSON's ``backend_used`` says so).
Inputs are random (timing only). Memory: CUDA peak allocated per step kind; on CPU the peak
RSS growth during a step (sampled every 2 ms by a thread).

Usage::

    python benchmarks/overhead.py                  # full run (batch 128, 7 timed rounds)
    python benchmarks/overhead.py --quick --json out.json
    python benchmarks/overhead.py --device cuda --amp --models all   # what benchmarks/gpu_check.sh runs
    python benchmarks/overhead.py --profile resnet18   # torch.profiler table of one fast RelDrop step
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
from typing import Any, Callable

import torch
import torch.nn.functional as F

import reldrop
from reldrop import models

KINDS = ("baseline", "re", "reldrop_zennit", "reldrop_fast")
#: every model row (``--models all``); ResNet-50 is the torchvision bottleneck net with the CIFAR stem
MODELS = ("resnet18", "resnet20", "resnet50", "pointnet2_ssg", "vit_tiny", "efficientnet_lite0")
#: timm models of the model zoo (random init, the graph engine under ``auto``): 64 px, batch 32;
#: ``--models zoo`` runs them all. Constructor kwargs where 64 px needs them (Swin: 4-px windows).
ZOO = {"convnext_atto": {}, "efficientnet_b0": {}, "mobilenetv3_small_100": {}, "regnety_002": {},
       "swin_tiny_patch4_window7_224": {"img_size": 64, "window_size": 4}}
#: image side per model (default 32); EfficientNet-Lite0 runs at the finetuning resolution
SIDE = {"efficientnet_lite0": 64, **{n: 64 for n in ZOO}}
#: image batch per model when --batch is not given (default: 128, quick 64)
BATCH = {"efficientnet_lite0": 64, **{n: 32 for n in ZOO}}


class RSSPeak:
    """Peak resident-set growth (bytes) during a ``with`` block, sampled from /proc (Linux)."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()

    @staticmethod
    def rss() -> int:
        try:
            with open("/proc/self/statm") as fh:
                return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:  # pragma: no cover - non-Linux
            return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss() - self.start)
            time.sleep(self.interval)

    def __enter__(self) -> "RSSPeak":
        self.start = self.rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss() - self.start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_config(name: str, batch: int, points: int, device: torch.device, seed: int = 0
                ) -> dict[str, Any] | None:
    """Model, optimizer, data and RelDrop kwargs for one benchmark config (None if unavailable)."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    if name == "pointnet2_ssg":
        if "pointnet2_ssg" not in models.names():
            return None
        model = models.build("pointnet2_ssg", num_classes=40)
        x = torch.randn(batch, points, 3, generator=g)
        x = x / x.norm(dim=-1).amax(dim=1).clamp_min(1e-6)[:, None, None]
        y = torch.randint(0, 40, (batch,), generator=g)
        modality, lr_kw = "points", {}
    else:
        if name in ZOO:
            import timm

            model = timm.create_model(name, pretrained=False, num_classes=10, **ZOO[name])
        else:
            reg = {"resnet18": "resnet18_cifar", "resnet20": "resnet20_cifar", "resnet50": "resnet50_cifar",
                   "vit_tiny": "vit_tiny_cifar", "efficientnet_lite0": "efficientnet_lite0"}[name]
            model = models.build(reg, num_classes=10)
        side = SIDE.get(name, 32)
        x = torch.randn(batch, 3, side, side, generator=g)
        if name == "efficientnet_lite0":  # as in training (train.channels_last): NHWC weights, ~2x faster on CPU
            model = model.to(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (batch,), generator=g)
        modality, lr_kw = "image", {}
    model = model.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4, **lr_kw)
    return {"model": model, "opt": opt, "x": x.to(device), "y": y.to(device), "modality": modality}


def make_steps(cfg: dict[str, Any], amp: bool, device: torch.device, p: float = 0.5
               ) -> dict[str, Callable[[int], None]]:
    model, opt, x, y, modality = cfg["model"], cfg["opt"], cfg["x"], cfg["y"], cfg["modality"]
    scaler = torch.amp.GradScaler("cuda") if amp and device.type == "cuda" else None

    def train_step(xb: torch.Tensor) -> None:
        model.train()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, enabled=amp and device.type == "cuda"):
            out = model(xb)
            out = out[0] if isinstance(out, (tuple, list)) else out
            loss = F.cross_entropy(out, y)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()

    gens = {}
    fns = {}
    used = {}
    for kind, backend in (("reldrop_zennit", "zennit"), ("reldrop_fast", "fast")):
        gen = torch.Generator(device=device).manual_seed(0)
        gens[kind] = gen
        try:
            fn = reldrop.RelDrop(model, modality=modality, method=None, backend=backend,
                                 p=p, generator=gen)
            _ = fn.attributor  # build now (fails early if the backend cannot handle the model)
        except ValueError:
            fn = reldrop.RelDrop(model, modality=modality, method=None, backend="auto", p=p, generator=gen)
        fns[kind] = fn
        used[kind] = fn.attributor.backend
    re_gen = torch.Generator(device=device).manual_seed(0)

    def baseline(r: int) -> None:
        train_step(x)

    def re(r: int) -> None:
        re_gen.manual_seed(r)
        if modality == "image":
            xa, _ = reldrop.random_erase(x, p=0.5, generator=re_gen)
        else:  # random point dropout (alpha = 1): the points-mode "RE" analogue
            xa, _ = reldrop.relevance_point_drop(x, torch.zeros(x.shape[:2], device=x.device),
                                                 alpha=1.0, beta=0.15, generator=re_gen)
        train_step(xa)

    def make_reldrop(kind: str) -> Callable[[int], None]:
        fn, gen = fns[kind], gens[kind]

        def step(r: int) -> None:
            gen.manual_seed(r)  # same coins for both backends in round r
            train_step(fn(x, y))
        return step

    cfg["backends"] = used
    return {"baseline": baseline, "re": re, "reldrop_zennit": make_reldrop("reldrop_zennit"),
            "reldrop_fast": make_reldrop("reldrop_fast")}


def run_config(name: str, cfg: dict[str, Any], steps: dict[str, Callable[[int], None]], warmup: int,
               rounds: int, device: torch.device) -> dict[str, Any]:
    times: dict[str, list[float]] = {k: [] for k in KINDS}
    mem: dict[str, int] = {k: 0 for k in KINDS}
    for r in range(warmup + rounds):
        order = KINDS[r % 4:] + KINDS[: r % 4]  # rotate: no kind always runs first/last
        for kind in order:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                base = torch.cuda.memory_allocated(device)
            _sync(device)
            with RSSPeak() if device.type == "cpu" else _Null() as rss:
                t0 = time.perf_counter()
                steps[kind](r)
                _sync(device)
                dt = time.perf_counter() - t0
            if device.type == "cuda":
                peak = torch.cuda.max_memory_allocated(device) - base
            else:
                peak = rss.peak
            if r >= warmup:
                times[kind].append(dt)
                mem[kind] = max(mem[kind], peak)
    med = {k: statistics.median(v) for k, v in times.items()}
    b = med["baseline"]
    out: dict[str, Any] = {
        "baseline_s": med["baseline"], "re_s": med["re"],
        "reldrop_zennit_s": med["reldrop_zennit"], "reldrop_fast_s": med["reldrop_fast"],
        "ratio_re": med["re"] / b, "ratio_zennit": med["reldrop_zennit"] / b,
        "ratio_fast": med["reldrop_fast"] / b,
        "backend_used": cfg["backends"],
        "batch": int(cfg["x"].shape[0]), "rounds": rounds, "warmup": warmup,
        "all_s": times,
    }
    key = "peak_mem_bytes" if device.type == "cuda" else "max_rss_growth_bytes"
    out[key] = mem
    out["mem_ratio_fast"] = mem["reldrop_fast"] / mem["baseline"] if mem["baseline"] else None
    return out


class _Null:
    def __enter__(self) -> "_Null":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None


def profile_fast(cfg: dict[str, Any], steps: dict[str, Callable[[int], None]]) -> None:
    from torch.profiler import ProfilerActivity, profile

    for r in range(2):
        steps["reldrop_fast"](r)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        steps["reldrop_fast"](2)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller batches, fewer rounds (< 60 s on 2 cores)")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default cpu)")
    ap.add_argument("--json", default=None, metavar="PATH", help="write the results as JSON")
    ap.add_argument("--models", default=None,
                    help=f"comma list of {', '.join(MODELS)} or of ZOO's timm models, or 'all', or 'zoo' "
                         "(default: resnet18,resnet20,pointnet2_ssg; --quick: resnet18,resnet20)")
    ap.add_argument("--rounds", type=int, default=None, help="timed rounds (default 7, quick 5)")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up rounds (default 2, quick 1)")
    ap.add_argument("--batch", type=int, default=None, help="image batch (default 128, quick 64)")
    ap.add_argument("--amp", action="store_true", help="CUDA autocast (fp16) for the training step")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--profile", default=None, metavar="MODEL", help="profile one fast RelDrop step and exit")
    ap.add_argument("--p", type=float, default=0.5,
                    help="RelDrop's per-sample probability (default 0.5 = the images default; points default to 1.0)")
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    rounds = args.rounds or (5 if args.quick else 7)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    img_batch = args.batch or (64 if args.quick else 128)
    pts_batch, n_points = (8, 512) if args.quick else (24, 1024)

    if args.profile:
        cfg = make_config(args.profile, img_batch if args.profile != "pointnet2_ssg" else pts_batch,
                          n_points, device)
        if cfg is None:
            print(f"{args.profile} is not available", file=sys.stderr)
            return 2
        profile_fast(cfg, make_steps(cfg, args.amp, device, args.p))
        return 0

    try:
        import zennit

        zennit_version = zennit.__version__ if hasattr(zennit, "__version__") else "unknown"
    except Exception:  # pragma: no cover
        zennit_version = None
    try:
        from importlib.metadata import version

        zennit_version = version("zennit")
    except Exception:
        pass
    result: dict[str, Any] = {
        "meta": {
            "torch": torch.__version__, "zennit": zennit_version, "python": platform.python_version(),
            "device": str(device), "machine": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "amp": bool(args.amp),
            "quick": bool(args.quick), "loadavg_start": os.getloadavg(), "p": args.p,
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        }
    }
    t_start = time.perf_counter()
    rows = []
    if args.models is None:  # --quick leaves PointNet++ out to stay under a minute on 2 cores
        args.models = "resnet18,resnet20" if args.quick else "resnet18,resnet20,pointnet2_ssg"
    if args.models == "all":
        args.models = ",".join(MODELS)
    elif args.models == "zoo":
        args.models = ",".join(ZOO)
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        batch = pts_batch if name == "pointnet2_ssg" else (args.batch or BATCH.get(name, img_batch))
        cfg = make_config(name, batch, n_points, device)
        if cfg is None:
            print(f"[skip] {name}: not available")
            continue
        steps = make_steps(cfg, args.amp, device, args.p)
        t0 = time.perf_counter()
        res = run_config(name, cfg, steps, warmup, rounds, device)
        res["wall_s"] = time.perf_counter() - t0
        result[name] = res
        rows.append((name, res))
        if args.json:  # written after every config, so a long run that is cut short keeps its results
            with open(args.json, "w") as fh:
                json.dump(result, fh, indent=2)
        print(f"[done] {name} in {res['wall_s']:.1f}s: baseline {res['baseline_s']:.3f}s, RE {res['re_s']:.3f}s, "
              f"zennit {res['reldrop_zennit_s']:.3f}s, fast {res['reldrop_fast_s']:.3f}s; ratio_re "
              f"{res['ratio_re']:.2f}, ratio_zennit {res['ratio_zennit']:.2f}, ratio_fast {res['ratio_fast']:.2f}",
              flush=True)
        del cfg, steps
    result["meta"]["loadavg_end"] = os.getloadavg()
    result["meta"]["total_s"] = time.perf_counter() - t_start

    memkey = "peak_mem_bytes" if device.type == "cuda" else "max_rss_growth_bytes"
    print(f"\ntorch {torch.__version__}, zennit {zennit_version}, device {device}, RelDrop p={args.p}"
          f"{' (AMP)' if args.amp else ''}, threads {torch.get_num_threads()}, "
          f"load avg {result['meta']['loadavg_start'][0]:.1f} -> {result['meta']['loadavg_end'][0]:.1f}")
    print(f"{'model':14s} {'batch':>5s} {'base s':>8s} {'RE s':>8s} {'zennit s':>9s} {'fast s':>8s} "
          f"{'x RE':>6s} {'x zennit':>8s} {'x fast':>7s} {'mem base MB':>11s} {'mem fast MB':>11s}")
    for name, r in rows:
        mem = r[memkey]
        print(f"{name:14s} {r['batch']:5d} {r['baseline_s']:8.3f} {r['re_s']:8.3f} {r['reldrop_zennit_s']:9.3f} "
              f"{r['reldrop_fast_s']:8.3f} {r['ratio_re']:6.2f} {r['ratio_zennit']:8.2f} {r['ratio_fast']:7.2f} "
              f"{mem['baseline'] / 2**20:11.1f} {mem['reldrop_fast'] / 2**20:11.1f}"
              + ("" if r["backend_used"] == {"reldrop_zennit": "zennit", "reldrop_fast": "fast"} else
                 f"  (backends: zennit kind -> {r['backend_used']['reldrop_zennit']}, "
                 f"fast kind -> {r['backend_used']['reldrop_fast']})"))
    print(f"total {result['meta']['total_s']:.1f}s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
