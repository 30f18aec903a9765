"""Time one training step per augmentation (none / RE / RelDrop) for a config, to plan CPU-sized runs.

    python benchmarks/train_step.py --config configs/cifar10_cpu_small.yaml --steps 5 --threads 1
    python benchmarks/train_step.py --preset digits

Reports the median seconds per step (batch from the config), the augmentation share, and the
median seconds per eval batch; numbers depend heavily on machine load (report it with them).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F

from reldrop.data import build_dataset, data_root
from reldrop.train.config import load_config
from reldrop.train.factory import build_augmentation
from reldrop.train.factory import build_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", "--preset", dest="config", default="digits")
    ap.add_argument("--set", nargs="*", default=[])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data-root", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cfg = load_config(a.config, a.set)
    dkw = dict(cfg["data"]["kwargs"] or {})
    info = build_dataset(cfg["data"]["name"], data_root(a.data_root or cfg["data"]["root"]), "train", **dkw)
    bs = cfg["train"]["batch_size"]
    g = torch.Generator().manual_seed(0)
    print(f"config {cfg['name']}: model {cfg['model']['name']}, batch {bs}, threads {a.threads}, "
          f"load average {os.getloadavg()[0]:.1f}")
    for aug_name in ("none", "re", "reldrop"):
        torch.manual_seed(0)
        model = build_model(cfg, info)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        aug = build_augmentation(dict(cfg["aug"], name=aug_name), model, info.modality, generator=g)
        steps, aug_t = [], []
        for i in range(a.steps + 1):
            idx = torch.randint(0, len(info.dataset), (bs,), generator=g)
            x, y = info.dataset.get_batch(idx, generator=g)
            t0 = time.perf_counter()
            if aug is not None:
                x = aug(x, y)
            t1 = time.perf_counter()
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if i:  # first step is warm-up
                steps.append(time.perf_counter() - t0)
                aug_t.append(t1 - t0)
        print(f"  aug={aug_name:8s} {statistics.median(steps):7.3f} s/step  (augmentation {statistics.median(aug_t):.3f} s)")
    model.eval()
    ev = []
    with torch.no_grad():
        for _ in range(3):
            x, _ = info.dataset.get_batch(torch.arange(min(cfg["train"]["eval_batch_size"], len(info.dataset))))
            t0 = time.perf_counter()
            model(x)
            ev.append(time.perf_counter() - t0)
    print(f"  eval batch of {x.shape[0]}: {statistics.median(ev):.3f} s")


if __name__ == "__main__":
    main()
