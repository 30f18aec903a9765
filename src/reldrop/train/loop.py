"""The training engine: one loop for every modality (images, point clouds), one run directory per run.

:func:`train` takes a resolved config (see :mod:`reldrop.train.config`), builds the datasets
(:func:`reldrop.data.build_dataset`), the model (:func:`reldrop.models.build`), optimizer,
schedule and augmentation, and trains. Augmentation is a callable ``aug(x, y) -> x`` applied to
the normalized batch on the device (``None`` for no augmentation); see :func:`build_augmentation`.

Run directory (``cfg["out"]``)::

    config.yaml     the resolved config
    env.json        git commit, versions (python, torch, zennit, numpy), device, world size, argv
    metrics.jsonl   one JSON object per epoch (accuracies in %, losses, lr, times, throughput)
    metrics.csv     the same table as CSV
    last.pt         full training state after the latest epoch
    best.pt         the same, for the epoch with the best test top-1 accuracy (written after last.pt)

Every file above is written atomically (:mod:`reldrop.runs`: temp file + ``os.replace``), so a kill
at any moment leaves complete files; checkpoints are read with ``torch.load(weights_only=True)``.
    tb/             TensorBoard events (``train.tensorboard: true``)

Resume (``resume=True``/a path): model, optimizer, scheduler, AMP scaler, epoch, best score and the
torch/CUDA/numpy/python RNG states are restored; the per-epoch data order, data augmentation and
erasing generators are re-derived from ``(seed, epoch)``, so on CPU a resumed run reproduces an
uninterrupted run's metrics exactly.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import runs
from ..augment import attribution_info, build_augmentation
from ..runs import MetricsLogger, environment, load_checkpoint, read_env, repair_best, resolve_run_dir, save_checkpoint, seed_all
from .aug_schedule import aug_state
from .config import dump_config, validate
from .distributed import DistInfo, init_distributed, shard_indices, wrap_model
from .evaluate import Meter, autocast, evaluate, iter_batches, subset_index
from .factory import build_model, build_optimizer, build_scheduler

__all__ = ["train", "derive_seed", "METRIC_KEYS"]

METRIC_KEYS = ("epoch", "lr", "train_loss", "train_acc", "train_top5", "train_macro", "test_loss", "test_acc",
               "test_top5", "test_macro", "gap")


def derive_seed(seed: int, epoch: int, stream: int) -> int:
    """A 63-bit seed for ``stream`` (0 data order, 1 data augmentation, 2 erasing) of ``epoch``."""
    return (int(seed) * 1_000_003 + int(epoch) * 7_919 + int(stream) * 104_729 + 12_345) % (2**63 - 1)


def _progress(cfg_value: Any, quiet: bool, is_main: bool) -> bool:
    if quiet or not is_main:
        return False
    if cfg_value == "auto":
        return sys.stderr.isatty()
    return bool(cfg_value)


def _stats_add(acc: dict[str, Any], stats: Any) -> None:
    if not isinstance(stats, Mapping):
        return
    for k, v in stats.items():
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            acc[k] = acc.get(k, 0) + v.detach().double()
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            acc[k] = acc.get(k, 0) + v


def train(cfg: Mapping[str, Any], *, resume: bool | str | os.PathLike[str] = False, quiet: bool = False,
          data_root: str | os.PathLike[str] | None = None, epochs: int | None = None,
          stop_after: int | None = None) -> dict[str, Any]:
    """Train per ``cfg``; returns ``{"run_dir", "final": last metrics row, "best_acc", "best_epoch", ...}``.

    ``resume``: True -> continue from ``<out>/last.pt``; a path (run dir or ``.pt``) -> continue
    from there (the run directory is the checkpoint's folder). A resumed run keeps the config
    saved in its checkpoint; ``epochs`` may extend it (note: this changes a cosine schedule's length).
    ``stop_after``: train at most this many epochs in this call (simulates a killed run in tests).
    Works under torchrun (DDP).
    """
    from reldrop.data import build_dataset
    from reldrop.data import data_root as _data_root

    validate(cfg)
    cfg = json.loads(json.dumps(cfg))  # private copy, plain types
    ckpt: dict[str, Any] | None = None
    if resume:
        if resume is True:
            if not cfg.get("out"):
                raise ValueError("resume=True needs cfg['out'] (the run directory); or pass the run directory path")
            ckpt_path = Path(cfg["out"]) / "last.pt"
        else:
            ckpt_path = Path(resume)
            if ckpt_path.is_dir():
                ckpt_path = ckpt_path / "last.pt"
        ckpt = load_checkpoint(ckpt_path)
        saved = ckpt["config"]
        saved["out"] = str(ckpt_path.parent)
        cfg = saved  # a resumed run keeps its config
    if epochs is not None:
        cfg["train"]["epochs"] = int(epochs)

    info = init_distributed(cfg["device"])
    device = info.device
    threads = cfg["train"].get("threads")
    if threads and device.type == "cpu":
        torch.set_num_threads(int(threads))
    run_dir = resolve_run_dir(cfg)
    cfg["out"] = str(run_dir)
    if ckpt is None and (run_dir / "last.pt").exists():  # checked on every rank, so none waits for a dead rank 0
        raise FileExistsError(f"run directory {run_dir} already holds a run (last.pt); "
                              "use --resume to continue it or choose another --out")
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        runs.clean_stale_temps(run_dir)  # .last.pt.tmp<pid> etc. of a killed earlier process

    seed = int(cfg["seed"])
    seed_all(seed)  # same model init on every rank
    root = _data_root(data_root or cfg["data"].get("root"))
    dkw = dict(cfg["data"].get("kwargs") or {})
    if cfg["data"].get("subset") is not None:
        dkw.setdefault("subset", int(cfg["data"]["subset"]))
    try:
        train_info = build_dataset(cfg["data"]["name"], root, "train", **dkw)
    except TypeError as err:  # a typo in data.kwargs (every builder rejects unknown keys)
        raise ValueError(f"config data.kwargs {dict(cfg['data'].get('kwargs') or {})} for dataset "
                         f"{cfg['data']['name']!r}: {err}") from err
    test_info = build_dataset(cfg["data"]["name"], root, "test", **dkw)
    clean_train = None
    n_clean = int(cfg["train"].get("eval_train_samples") or 0)
    if n_clean:
        clean_train = build_dataset(cfg["data"]["name"], root, "train", train_transform=False, **dkw)

    # a resumed run takes its weights from last.pt, not from model.init (which may be gone by now)
    model = build_model(cfg if ckpt is None else {**cfg, "model": {**cfg["model"], "init": None}},
                        train_info).to(device)
    net = wrap_model(model, info)
    opt = build_optimizer(cfg, model)
    sched = build_scheduler(cfg, opt)
    amp = cfg["train"]["amp"]
    use_scaler = device.type == "cuda" and (amp == "fp16" or (amp == "auto" and not torch.cuda.is_bf16_supported()))
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    gen_device = device if device.type == "cuda" else torch.device("cpu")
    aug_gen = torch.Generator(device=gen_device)
    aug = build_augmentation(cfg["aug"], net, train_info.modality, generator=aug_gen)

    start_epoch, best_acc, best_epoch = 0, -1.0, 0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        start_epoch, best_acc, best_epoch = int(ckpt["epoch"]), float(ckpt["best_acc"]), int(ckpt["best_epoch"])
        runs.set_rng_state(ckpt["rng"][min(info.rank, len(ckpt["rng"]) - 1)])
        if info.is_main and cfg["train"]["save_best"]:
            repair_best(run_dir, ckpt_path, ckpt, quiet)
    else:
        seed_all(seed + 7_777 * info.rank)  # per-rank stream for dropout etc. after the shared init

    logger = None
    if info.is_main:
        dump_config(cfg, run_dir / "config.yaml")
        env = environment(device, info.world_size)
        env["config_hash"] = runs.config_hash(cfg)
        if ckpt is not None:
            old = read_env(run_dir / "env.json")
            env = {**old, "resumed": old.get("resumed", []) + [{"epoch": start_epoch, **env}]}
        attribution = attribution_info(aug)
        if attribution is not None:
            env["attribution"] = attribution
            if not quiet:
                print(f"[{run_dir.name}] RelDrop relevance: {attribution['method']} via the "
                      f"{attribution['backend']} backend", file=sys.stderr, flush=True)
        runs.atomic_write_json(run_dir / "env.json", env, indent=2, default=str)
        logger = MetricsLogger(run_dir, bool(cfg["train"]["tensorboard"]), start_epoch)

    ds, num_classes = train_info.dataset, train_info.num_classes
    bs, epochs = int(cfg["train"]["batch_size"]), int(cfg["train"]["epochs"])
    show = _progress(cfg["train"]["progress"], quiet, info.is_main)
    sync_time = device.type == "cuda" and bool(cfg["train"]["time_aug_sync"])
    grad_clip = cfg["train"].get("grad_clip")
    last_row: dict[str, Any] = {}
    test_index = None
    if cfg["data"].get("test_subset"):
        test_index = subset_index(test_info.dataset, int(cfg["data"]["test_subset"]))
    clean_index = None
    if clean_train is not None:
        g = torch.Generator().manual_seed(derive_seed(seed, 0, 3))
        clean_index = torch.randperm(len(clean_train.dataset), generator=g)[:n_clean].sort().values

    try:
        end = epochs if stop_after is None else min(epochs, start_epoch + int(stop_after))
        for epoch in range(start_epoch, end):
            t_epoch = time.perf_counter()
            net.train()
            order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(derive_seed(seed, epoch, 0)))
            index = shard_indices(order, info.rank, info.world_size)
            data_gen = torch.Generator().manual_seed(derive_seed(seed, epoch, 1 + 100 * info.rank))
            aug_gen.manual_seed(derive_seed(seed, epoch, 2 + 100 * info.rank))
            aug_on, aug_p = aug_state(cfg["aug"], epoch)  # a function of the epoch: resumes exactly
            aug_on = aug is not None and aug_on
            if aug is not None and aug_p is not None:
                aug.p = aug_p  # type: ignore[attr-defined]
            meter = Meter(num_classes, device)
            aug_time, stats = 0.0, {}
            lr = opt.param_groups[0]["lr"]
            n_batches = math.ceil(index.numel() / bs)
            bar = None
            if show:
                from tqdm import tqdm

                bar = tqdm(total=n_batches, desc=f"epoch {epoch + 1}/{epochs}", leave=False, dynamic_ncols=True)
            t_train = time.perf_counter()
            for x, y in iter_batches(ds, index, bs, device=device, generator=data_gen,
                                      num_workers=int(cfg["data"]["num_workers"]),
                                      drop_last=bool(cfg["train"]["drop_last"])):
                if aug_on:
                    if sync_time:
                        torch.cuda.synchronize(device)
                    t0 = time.perf_counter()
                    x = aug(x, y)  # type: ignore[misc]
                    if sync_time:
                        torch.cuda.synchronize(device)
                    aug_time += time.perf_counter() - t0
                    _stats_add(stats, getattr(aug, "last_stats", None))
                with autocast(device, amp):
                    logits = net(x)
                    loss = F.cross_entropy(logits.float(), y)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if grad_clip:
                    scaler.unscale_(opt)
                    nn.utils.clip_grad_norm_(model.parameters(), float(grad_clip))
                scaler.step(opt)
                scaler.update()
                meter.update(logits, y, loss.detach() * y.numel())
                if bar is not None:
                    bar.update(1)
            if bar is not None:
                bar.close()
            train_time = time.perf_counter() - t_train
            sched.step()
            tr = meter.result(info, "train_")
            t_eval = time.perf_counter()
            te = evaluate(net, test_info.dataset, num_classes, device=device,
                          batch_size=int(cfg["train"]["eval_batch_size"]), info=info, amp=amp,
                          num_workers=int(cfg["data"]["num_workers"]), index=test_index)
            row: dict[str, Any] = {"epoch": epoch + 1, "lr": lr}
            row.update({k: v for k, v in tr.items() if k != "train_n"})
            row.update({k: v for k, v in te.items() if k != "test_n"})
            row["gap"] = row["train_acc"] - row["test_acc"]
            if clean_train is not None:
                cl = evaluate(net, clean_train.dataset, num_classes, device=device,
                              batch_size=int(cfg["train"]["eval_batch_size"]), info=info, amp=amp,
                              index=clean_index, prefix="train_clean_")
                row["train_clean_acc"] = cl["train_clean_acc"]
                row["train_clean_loss"] = cl["train_clean_loss"]
                row["gap_clean"] = row["train_clean_acc"] - row["test_acc"]
            eval_time = time.perf_counter() - t_eval
            n_seen = tr["train_n"]
            row.update({"train_time": train_time, "eval_time": eval_time, "aug_time": aug_time,
                        "epoch_time": time.perf_counter() - t_epoch,
                        "throughput": n_seen / max(train_time, 1e-9), "world_size": info.world_size})
            if aug is not None:
                row["aug_enabled"], row["aug_p"] = aug_on, float(getattr(aug, "p", float("nan")))
            for k, v in stats.items():
                row[f"aug_{k}"] = float(v)
            if stats.get("candidates"):  # RelDrop-3D: fraction of points dropped this epoch
                row["aug_dropped_fraction"] = float(stats["dropped"]) / float(stats["candidates"])
            last_row = row
            if info.is_main:
                assert logger is not None
                logger.log(row)
                improved = row["test_acc"] > best_acc
                if improved:
                    best_acc, best_epoch = row["test_acc"], epoch + 1
                state = {"model": model.state_dict(), "optimizer": opt.state_dict(),
                         "scheduler": sched.state_dict(), "scaler": scaler.state_dict(), "epoch": epoch + 1,
                         "best_acc": best_acc, "best_epoch": best_epoch, "rng": _gather_rng(info),
                         "config": cfg, "metrics": row}
                # last.pt first: it records best_epoch, and when that is this epoch it holds the best
                # model itself, so a kill before best.pt is written is repaired on resume (repair_best)
                save_checkpoint(state, run_dir / "last.pt")
                if improved and cfg["train"]["save_best"]:
                    save_checkpoint(state, run_dir / "best.pt")
                if not quiet:
                    print(f"[{run_dir.name}] epoch {epoch + 1}/{epochs} lr {lr:.4g} "
                          f"train {row['train_acc']:.2f}% loss {row['train_loss']:.4f} | "
                          f"test {row['test_acc']:.2f}% (top5 {row['test_top5']:.2f}, macro {row['test_macro']:.2f}) "
                          f"| {row['epoch_time']:.1f}s, aug {aug_time:.1f}s, {row['throughput']:.0f} img/s",
                          file=sys.stderr, flush=True)
            else:
                _gather_rng(info)
                if row["test_acc"] > best_acc:
                    best_acc, best_epoch = row["test_acc"], epoch + 1
    finally:
        if logger is not None:
            logger.close()
    if not last_row and logger is not None and logger.rows:
        last_row = logger.rows[-1]
    result = {"run_dir": str(run_dir), "final": last_row, "best_acc": best_acc, "best_epoch": best_epoch,
              "rank": info.rank, "world_size": info.world_size}
    return result


def _gather_rng(info: DistInfo) -> list[dict[str, Any]]:
    """RNG states of every rank (index = rank); gathered to all ranks under DDP."""
    state = runs.rng_state()
    if not info.distributed:
        return [state]
    import torch.distributed as dist

    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, state)
    return out

