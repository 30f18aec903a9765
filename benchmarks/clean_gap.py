"""Clean train accuracy and train–test gap of the finished runs of a ``reldrop compare`` directory.

The ``gap`` column of results.md uses the running accuracy on the *augmented* training batches
(as the paper's Fig. 2), which erasing lowers by construction. This script evaluates each run's
final model (``last.pt``, eval mode) on its training subset WITHOUT any augmentation and on the
test set, so the gap measures memorization only:

    python benchmarks/clean_gap.py runs/cifar_cpu/overfit500 --data-root ../shared/data

Writes ``clean_gap.csv`` and ``clean_gap.md`` into the compare directory.
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import torch
import yaml

from reldrop.data import build_dataset, data_root
from reldrop.runs import load_checkpoint
from reldrop.train.evaluate import evaluate, subset_index
from reldrop.train.factory import build_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("compare_dir", type=Path)
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    rows = []
    cache: dict = {}
    for ckpt_path in sorted(a.compare_dir.glob("*/seed*/last.pt")):
        run = ckpt_path.parent
        ck = load_checkpoint(ckpt_path)
        cfg = ck["config"]
        dkw = dict(cfg["data"]["kwargs"] or {})
        if cfg["data"]["subset"] is not None:
            dkw["subset"] = cfg["data"]["subset"]
        key = yaml.safe_dump(cfg["data"])
        if key not in cache:
            root = data_root(a.data_root or cfg["data"]["root"])
            tr = build_dataset(cfg["data"]["name"], root, "train", train_transform=False, **dkw)
            te = build_dataset(cfg["data"]["name"], root, "test", **dkw)
            tidx = subset_index(te.dataset, cfg["data"]["test_subset"]) if cfg["data"]["test_subset"] else None
            cache[key] = (tr, te, tidx)
        tr, te, tidx = cache[key]
        model = build_model(dict(cfg, model=dict(cfg["model"], init=None)), tr)
        model.load_state_dict(ck["model"])
        dev = torch.device("cpu")
        r_tr = evaluate(model, tr.dataset, tr.num_classes, device=dev, batch_size=500, prefix="train_")
        r_te = evaluate(model, te.dataset, te.num_classes, device=dev, batch_size=500, index=tidx)
        rows.append({"variant": run.parent.name, "seed": run.name, "epoch": ck["epoch"],
                     "clean_train_acc": r_tr["train_acc"], "test_acc": r_te["test_acc"],
                     "clean_gap": r_tr["train_acc"] - r_te["test_acc"]})
        print(rows[-1], flush=True)
    with open(a.compare_dir / "clean_gap.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    lines = ["| variant | seeds | clean train acc % | test acc % | clean train–test gap (pt) |", "|---|---|---|---|---|"]
    order = list(dict.fromkeys(r["variant"] for r in rows))
    meta = a.compare_dir / "compare.json"
    if meta.is_file():  # the variants' order in the config (baseline, RE, RelDrop)
        import json
        import re

        named = [re.sub(r"[^A-Za-z0-9_.=-]+", "_", v).strip("_") for v in json.loads(meta.read_text())["variants"]]
        order = [v for v in named if v in order] + [v for v in order if v not in named]
    for v in order:
        rs = [r for r in rows if r["variant"] == v]

        def pm(k: str, rs: list = rs) -> str:
            x = np.array([r[k] for r in rs])
            return f"{x.mean():.2f} ± {x.std(ddof=1) if len(x) > 1 else 0.0:.2f}"

        lines.append(f"| {v} | {len(rs)} | {pm('clean_train_acc')} | {pm('test_acc')} | {pm('clean_gap')} |")
    (a.compare_dir / "clean_gap.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
