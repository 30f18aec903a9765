"""The training engine: one loop for every modality (images, point clouds), one run directory per run.

:func:`train` takes a resolved config (see :mod:`reldrop.train.config`), builds the datasets
(:func:`reldrop.data.build_dataset`), the model (:func:`reldrop.models.build`), optimizer,
schedule and augmentation, and trains. Augmentation is a callable ``aug(x, y) -> x`` applied to
the normalized batch on the device (``None`` for no augmentation); see :func:`build_augmentation`.

Run directory (``cfg["out"]``)::

    run.json        the marker: run id, command, config hash (a folder without it is not a run)
    .reldrop.lock   held while a process writes the folder (pid, host, start time; reldrop.runs.lock)
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import runs
from ..augment import attribution_info
from ..mixing import soft_target_cross_entropy
from ..runs import MetricsLogger, environment, load_checkpoint, read_env, repair_best, resolve_run_dir, save_checkpoint, seed_all
from ..runs.files import RunWriteError
from ..runs.lock import acquire_run_lock, check_fresh_run_dir, write_marker
from .aug_schedule import aug_state
from .config import dump_config, validate
from .distributed import DistInfo, init_distributed, shard_indices, wrap_model
from .divergence import guard_for
from .evaluate import Meter, autocast, evaluate, iter_batches, subset_index
from .factory import build_augmentation, build_model, build_optimizer, build_scheduler

__all__ = ["train", "derive_seed", "METRIC_KEYS"]

#: the deterministic metric columns (identical between an uninterrupted and a resumed CPU run)
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


@dataclass
class _Run:
    """What one training run holds between epochs (built by :func:`_setup`)."""

    cfg: dict[str, Any]
    info: DistInfo
    run_dir: Path
    train_info: Any
    test_info: Any
    clean_train: Any
    model: nn.Module
    net: nn.Module
    opt: torch.optim.Optimizer
    sched: Any
    scaler: Any
    aug: Any
    aug_gen: torch.Generator
    quiet: bool
    test_index: torch.Tensor | None = None
    clean_index: torch.Tensor | None = None
    start_epoch: int = 0
    best_acc: float = -1.0
    best_epoch: int = 0
    logger: MetricsLogger | None = None


def _resolve_config(cfg: Mapping[str, Any], resume: bool | str | os.PathLike[str], epochs: int | None
                    ) -> tuple[dict[str, Any], dict[str, Any] | None, Path | None]:
    """``(config, checkpoint or None, checkpoint path or None)``: a resumed run keeps its saved config."""
    validate(cfg)
    config: dict[str, Any] = json.loads(json.dumps(cfg))  # private copy, plain types
    ckpt: dict[str, Any] | None = None
    ckpt_path: Path | None = None
    if resume:
        if resume is True:
            if not config.get("out"):
                raise ValueError("resume=True needs cfg['out'] (the run directory); or pass the run directory path")
            ckpt_path = Path(config["out"]) / "last.pt"
        else:
            ckpt_path = Path(resume)
            if ckpt_path.is_dir():
                ckpt_path = ckpt_path / "last.pt"
        _check_resume_out(config.get("out"), ckpt_path)
        ckpt = load_checkpoint(ckpt_path)
        saved = ckpt["config"]
        saved["out"] = str(ckpt_path.parent)
        config = saved  # a resumed run keeps its config
    if epochs is not None:
        config["train"]["epochs"] = int(epochs)
    return config, ckpt, ckpt_path


def _check_resume_out(out: Any, ckpt_path: Path) -> None:
    """``--resume A/last.pt --out B``: a resumed run continues in the checkpoint's folder; another --out is refused."""
    if out and Path(out).resolve() != ckpt_path.parent.resolve():
        raise ValueError(f"--resume {ckpt_path} continues the run in {ckpt_path.parent}, but --out is {out}: a resumed "
                         "run stays in its folder. Drop --out (or give the same folder); to branch off a run into a "
                         "new folder, copy that folder first")


def _check_out_outside_data(run_dir: Path, cfg: Mapping[str, Any], data_root: Any) -> None:
    """Refuse a run directory inside the data root (an ImageFolder would scan it as one more class)."""
    from reldrop.data import data_root as _data_root

    root = Path(_data_root(data_root or cfg["data"].get("root"))).resolve()
    here, out = Path.cwd().resolve(), run_dir.resolve()
    if root != out and root in out.parents and not (root == here or root in here.parents):
        raise ValueError(f"--out {run_dir} lies inside the data root {root}: a dataset folder would read the run "
                         "directory as data (e.g. one more ImageFolder class); choose an --out outside it")


def _prepare_run_dir(cfg: dict[str, Any], info: DistInfo, resuming: bool, *, data_root: Any = None,
                     force: bool = False, quiet: bool = False) -> tuple[Path, Any]:
    """Resolve ``cfg["out"]``; refuse a folder that is not a reldrop run, a run that would be overwritten
    and a run in use; create the folder, lock it (rank 0), mark it (``run.json``) and drop stale temp files.
    Returns ``(run directory, the lock or None)``."""
    run_dir = resolve_run_dir(cfg)
    cfg["out"] = str(run_dir)
    _check_out_outside_data(run_dir, cfg, data_root)
    if not resuming:  # checked on every rank, so none waits for a dead rank 0
        check_fresh_run_dir(run_dir)
    if not info.is_main:
        return run_dir, None
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # read-only mount, a regular file on the way, ...
        raise RunWriteError(f"cannot create run directory {run_dir}: {err.strerror or err}") from err
    lock = acquire_run_lock(run_dir, take_stale=resuming or force, quiet=quiet)
    try:
        if not resuming:
            check_fresh_run_dir(run_dir)  # again under the lock: another process may have finished meanwhile
        write_marker(run_dir, runs.config_hash(cfg), resumed=resuming)
        runs.clean_stale_temps(run_dir)  # .last.pt.reldrop-tmp<pid> etc. of a killed earlier process
    except BaseException:
        lock.release()
        raise
    return run_dir, lock


def _build_data(cfg: Mapping[str, Any], data_root: str | os.PathLike[str] | None) -> tuple[Any, Any, Any]:
    """``(train, test, clean train or None)`` dataset infos of the config."""
    from reldrop.data import build_dataset
    from reldrop.data import data_root as _data_root

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
    _check_same_classes(train_info, test_info, cfg["data"]["name"])
    clean_train = None
    if int(cfg["train"].get("eval_train_samples") or 0):
        clean_train = build_dataset(cfg["data"]["name"], root, "train", train_transform=False, **dkw)
    return train_info, test_info, clean_train


def _check_same_classes(train_info: Any, test_info: Any, name: str) -> None:
    """The train and test splits must label the same classes the same way (a renamed test class folder
    would score a model against shifted labels)."""
    a, b = list(train_info.class_names or []), list(test_info.class_names or [])
    if train_info.num_classes != test_info.num_classes or (a and b and a != b):
        diff = [f"{i}: {x!r} vs {y!r}" for i, (x, y) in enumerate(zip(a, b)) if x != y][:4]
        raise ValueError(f"dataset {name!r}: the train split has {train_info.num_classes} classes and the test split "
                         f"{test_info.num_classes}" + (f"; class names differ ({', '.join(diff)})" if diff else "")
                         + ": both splits must have the same classes")


def _setup(cfg: dict[str, Any], ckpt: dict[str, Any] | None, data_root: str | os.PathLike[str] | None,
           quiet: bool, locks: list[Any] | None = None, force: bool = False) -> _Run:
    """Device, run directory, data, model, optimizer, schedule, AMP scaler and augmentation.
    The run directory's lock (rank 0) is appended to ``locks`` (the caller releases it)."""
    info = init_distributed(cfg["device"])
    device = info.device
    threads = cfg["train"].get("threads")
    if threads and device.type == "cpu":
        torch.set_num_threads(int(threads))
    run_dir, lock = _prepare_run_dir(cfg, info, ckpt is not None, data_root=data_root, force=force, quiet=quiet)
    if lock is not None and locks is not None:
        locks.append(lock)
    seed = int(cfg["seed"])
    seed_all(seed)  # same model init on every rank
    train_info, test_info, clean_train = _build_data(cfg, data_root)
    # a resumed run takes its weights from last.pt, not from model.init (which may be gone by now)
    model = build_model(cfg if ckpt is None else {**cfg, "model": {**cfg["model"], "init": None}},
                        train_info).to(device)
    if cfg["train"].get("channels_last"):  # NHWC weights: oneDNN convs (depthwise above all) run ~2x faster on CPU
        model = model.to(memory_format=torch.channels_last)
    net = wrap_model(model, info)
    opt = build_optimizer(cfg, model)
    sched = build_scheduler(cfg, opt)
    amp = cfg["train"]["amp"]
    use_scaler = device.type == "cuda" and (amp == "fp16" or (amp == "auto" and not torch.cuda.is_bf16_supported()))
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    aug_gen = torch.Generator(device=device if device.type == "cuda" else torch.device("cpu"))
    aug = build_augmentation(cfg["aug"], net, train_info.modality, generator=aug_gen, num_classes=train_info.num_classes)
    run = _Run(cfg=cfg, info=info, run_dir=run_dir, train_info=train_info, test_info=test_info,
               clean_train=clean_train, model=model, net=net, opt=opt, sched=sched, scaler=scaler, aug=aug,
               aug_gen=aug_gen, quiet=quiet)
    if cfg["data"].get("test_subset"):
        run.test_index = subset_index(test_info.dataset, int(cfg["data"]["test_subset"]))
    if clean_train is not None:
        g = torch.Generator().manual_seed(derive_seed(seed, 0, 3))
        n_clean = int(cfg["train"]["eval_train_samples"])
        run.clean_index = torch.randperm(len(clean_train.dataset), generator=g)[:n_clean].sort().values
    return run


def _resume(run: _Run, ckpt: dict[str, Any] | None, ckpt_path: Path | None) -> None:
    """Restore model, optimizer, schedule, scaler, epoch, best score and RNG states; or seed a fresh run's ranks."""
    if ckpt is None:
        seed_all(int(run.cfg["seed"]) + 7_777 * run.info.rank)  # per-rank stream for dropout etc. after the shared init
        return
    run.model.load_state_dict(ckpt["model"])
    run.opt.load_state_dict(ckpt["optimizer"])
    run.sched.load_state_dict(ckpt["scheduler"])
    run.scaler.load_state_dict(ckpt["scaler"])
    run.start_epoch, run.best_acc, run.best_epoch = int(ckpt["epoch"]), float(ckpt["best_acc"]), int(ckpt["best_epoch"])
    runs.set_rng_state(ckpt["rng"][min(run.info.rank, len(ckpt["rng"]) - 1)])
    if run.info.is_main and run.cfg["train"]["save_best"]:
        assert ckpt_path is not None
        repair_best(run.run_dir, ckpt_path, ckpt, run.quiet)


def _start_log(run: _Run, resumed: bool) -> None:
    """Rank 0: ``config.yaml``, ``env.json`` (a resume appends to its ``resumed`` list) and the metrics log."""
    if not run.info.is_main:
        return
    cfg, run_dir = run.cfg, run.run_dir
    dump_config(cfg, run_dir / "config.yaml")
    env = environment(run.info.device, run.info.world_size)
    env["config_hash"] = runs.config_hash(cfg)
    if resumed:
        old = read_env(run_dir / "env.json")
        env = {**old, "resumed": old.get("resumed", []) + [{"epoch": run.start_epoch, **env}]}
    try:
        attribution = attribution_info(run.aug)  # builds RelDrop's attributor: bad aug options fail here
    except TypeError as err:
        raise ValueError(f"config aug (method {cfg['aug'].get('method')!r}, aug.epsilon, aug.kwargs): {err}") from err
    if attribution is not None:
        env["attribution"] = attribution
        if not run.quiet:
            print(f"[{run_dir.name}] RelDrop relevance: {attribution['method']} via the "
                  f"{attribution['backend']} backend", file=sys.stderr, flush=True)
    runs.atomic_write_json(run_dir / "env.json", env, indent=2, default=str)
    run.logger = MetricsLogger(run_dir, bool(cfg["train"]["tensorboard"]), run.start_epoch)


def _train_epoch(run: _Run, epoch: int) -> dict[str, Any]:
    """One pass over the training data; the epoch's row so far (lr, train metrics, times, augmentation stats)."""
    cfg, info, device, aug = run.cfg, run.info, run.info.device, run.aug
    seed, bs, epochs = int(cfg["seed"]), int(cfg["train"]["batch_size"]), int(cfg["train"]["epochs"])
    sync_time = device.type == "cuda" and bool(cfg["train"]["time_aug_sync"])
    grad_clip = cfg["train"].get("grad_clip")
    ds = run.train_info.dataset
    run.net.train()
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(derive_seed(seed, epoch, 0)))
    index = shard_indices(order, info.rank, info.world_size)
    data_gen = torch.Generator().manual_seed(derive_seed(seed, epoch, 1 + 100 * info.rank))
    run.aug_gen.manual_seed(derive_seed(seed, epoch, 2 + 100 * info.rank))
    aug_on, aug_p = aug_state(cfg["aug"], epoch)  # a function of the epoch: resumes exactly
    aug_on = aug is not None and aug_on
    if aug is not None and aug_p is not None:
        aug.p = aug_p
    meter = Meter(run.train_info.num_classes, device)
    guard = guard_for(cfg, device)  # a non-finite loss stops the run before this epoch is saved
    guard.reset(epoch)
    stats: dict[str, Any] = {}  # the augmentation's counters, summed over the epoch
    aug_time = 0.0
    lr = run.opt.param_groups[0]["lr"]
    bar = None
    if _progress(cfg["train"]["progress"], run.quiet, info.is_main):
        from tqdm import tqdm

        bar = tqdm(total=math.ceil(index.numel() / bs), desc=f"epoch {epoch + 1}/{epochs}", leave=False,
                   dynamic_ncols=True)
    t_train = time.perf_counter()
    mixes = bool(getattr(aug, "mixes_labels", False))  # Mixup/CutMix: soft targets, soft-target cross-entropy
    for step, (x, y) in enumerate(iter_batches(ds, index, bs, device=device, generator=data_gen,
                                               num_workers=int(cfg["data"]["num_workers"]),
                                               drop_last=bool(cfg["train"]["drop_last"]))):
        soft = None
        if aug_on:
            if sync_time:
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            try:
                if mixes:
                    x, soft = aug(x, y)
                else:
                    x = aug(x, y)
            except ValueError as err:  # NaN relevance of a diverged model: blame the model, not the relevance
                guard.blame(err, step, run.model, x)
                raise
            if sync_time:
                torch.cuda.synchronize(device)
            aug_time += time.perf_counter() - t0
            _stats_add(stats, getattr(aug, "last_stats", None))
        with autocast(device, cfg["train"]["amp"]):
            logits = run.net(x)
            loss = F.cross_entropy(logits.float(), y) if soft is None else soft_target_cross_entropy(logits.float(), soft)
        if guard.skip(loss, x, step):
            continue
        run.opt.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        if grad_clip:
            run.scaler.unscale_(run.opt)
            nn.utils.clip_grad_norm_(run.model.parameters(), float(grad_clip))
        run.scaler.step(run.opt)
        run.scaler.update()
        meter.update(logits, y, loss.detach() * y.numel())
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    guard.check()
    train_time = time.perf_counter() - t_train
    run.sched.step()
    tr = meter.result(info, "train_")
    row: dict[str, Any] = {"epoch": epoch + 1, "lr": lr}
    row.update({k: v for k, v in tr.items() if k != "train_n"})
    row.update({"train_n": tr["train_n"], "train_time": train_time, "aug_time": aug_time, "aug_on": aug_on,
                "aug_stats": stats})
    return row


def _evaluate_epoch(run: _Run, row: dict[str, Any], t_epoch: float) -> dict[str, Any]:
    """The epoch's full metrics row: test (and clean train) metrics, gaps, times, throughput, augmentation."""
    cfg, info, device, aug = run.cfg, run.info, run.info.device, run.aug
    n_seen, train_time, aug_time = row.pop("train_n"), row.pop("train_time"), row.pop("aug_time")
    aug_on, stats = row.pop("aug_on"), row.pop("aug_stats")
    num_classes, amp = run.train_info.num_classes, cfg["train"]["amp"]
    t_eval = time.perf_counter()
    te = evaluate(run.net, run.test_info.dataset, num_classes, device=device,
                  batch_size=int(cfg["train"]["eval_batch_size"]), info=info, amp=amp,
                  num_workers=int(cfg["data"]["num_workers"]), index=run.test_index)
    row.update({k: v for k, v in te.items() if k != "test_n"})
    row["gap"] = row["train_acc"] - row["test_acc"]
    if run.clean_train is not None:
        cl = evaluate(run.net, run.clean_train.dataset, num_classes, device=device,
                      batch_size=int(cfg["train"]["eval_batch_size"]), info=info, amp=amp,
                      index=run.clean_index, prefix="train_clean_")
        row["train_clean_acc"] = cl["train_clean_acc"]
        row["train_clean_loss"] = cl["train_clean_loss"]
        row["gap_clean"] = row["train_clean_acc"] - row["test_acc"]
    eval_time = time.perf_counter() - t_eval
    row.update({"train_time": train_time, "eval_time": eval_time, "aug_time": aug_time,
                "epoch_time": time.perf_counter() - t_epoch,
                "throughput": n_seen / max(train_time, 1e-9), "world_size": info.world_size})
    if aug is not None:
        row["aug_enabled"], row["aug_p"] = aug_on, float(getattr(aug, "p", float("nan")))
    for k, v in stats.items():
        row[f"aug_{k}"] = float(v)
    if stats.get("selected") and "fallback" in stats:  # RelDrop: share of augmented samples at a random centre
        row["aug_fallback_share"] = float(stats["fallback"]) / float(stats["selected"])
    if stats.get("candidates"):  # RelDrop-3D: fraction of points dropped this epoch
        row["aug_dropped_fraction"] = float(stats["dropped"]) / float(stats["candidates"])
    return row


def _log_and_checkpoint(run: _Run, row: dict[str, Any], epoch: int) -> None:
    """Rank 0: log the row, update the best score, write ``last.pt`` then (a new best) ``best.pt``, print."""
    if not run.info.is_main:
        _gather_rng(run.info)
        if row["test_acc"] > run.best_acc:
            run.best_acc, run.best_epoch = row["test_acc"], epoch + 1
        return
    assert run.logger is not None
    run.logger.log(row)
    improved = row["test_acc"] > run.best_acc
    if improved:
        run.best_acc, run.best_epoch = row["test_acc"], epoch + 1
    state = {"model": run.model.state_dict(), "optimizer": run.opt.state_dict(),
             "scheduler": run.sched.state_dict(), "scaler": run.scaler.state_dict(), "epoch": epoch + 1,
             "best_acc": run.best_acc, "best_epoch": run.best_epoch, "rng": _gather_rng(run.info),
             "config": run.cfg, "metrics": row}
    # last.pt first: it records best_epoch, and when that is this epoch it holds the best
    # model itself, so a kill before best.pt is written is repaired on resume (repair_best)
    save_checkpoint(state, run.run_dir / "last.pt")
    if improved and run.cfg["train"]["save_best"]:
        save_checkpoint(state, run.run_dir / "best.pt")
    if not run.quiet:
        epochs = int(run.cfg["train"]["epochs"])
        print(f"[{run.run_dir.name}] epoch {epoch + 1}/{epochs} lr {row['lr']:.4g} "
              f"train {row['train_acc']:.2f}% loss {row['train_loss']:.4f} | "
              f"test {row['test_acc']:.2f}% (top5 {row['test_top5']:.2f}, macro {row['test_macro']:.2f}) "
              f"| {row['epoch_time']:.1f}s, aug {row['aug_time']:.1f}s, {row['throughput']:.0f} img/s",
              file=sys.stderr, flush=True)


def train(cfg: Mapping[str, Any], *, resume: bool | str | os.PathLike[str] = False, quiet: bool = False,
          data_root: str | os.PathLike[str] | None = None, epochs: int | None = None,
          stop_after: int | None = None, force: bool = False) -> dict[str, Any]:
    """Train per ``cfg``; returns ``{"run_dir", "final": last metrics row, "best_acc", "best_epoch", ...}``.

    ``resume``: True -> continue from ``<out>/last.pt``; a path (run dir or ``.pt``) -> continue
    from there (the run directory is the checkpoint's folder). A resumed run keeps the config
    saved in its checkpoint; ``epochs`` may extend it (note: this changes a cosine schedule's length).
    ``stop_after``: train at most this many epochs in this call (simulates a killed run in tests).
    ``force``: take over a stale lock (left by a killed process) of a run directory that is not resumed.
    The run directory is locked while this call writes it (:mod:`reldrop.runs.lock`); a
    non-finite training loss raises :class:`~reldrop.train.divergence.TrainingDivergedError` before
    its epoch is saved; a KeyboardInterrupt carries the run directory as ``err.run_dir``.
    Works under torchrun (DDP).
    """
    cfg, ckpt, ckpt_path = _resolve_config(cfg, resume, epochs)
    locks: list[Any] = []
    run: _Run | None = None
    last_row: dict[str, Any] = {}
    try:
        run = _setup(cfg, ckpt, data_root, quiet, locks, force)
        _resume(run, ckpt, ckpt_path)
        _start_log(run, ckpt is not None)
        n_epochs = int(run.cfg["train"]["epochs"])
        end = n_epochs if stop_after is None else min(n_epochs, run.start_epoch + int(stop_after))
        for epoch in range(run.start_epoch, end):
            t_epoch = time.perf_counter()
            row = _evaluate_epoch(run, _train_epoch(run, epoch), t_epoch)
            last_row = row
            _log_and_checkpoint(run, row, epoch)
    except KeyboardInterrupt as err:  # the CLI prints one line with the resume command
        err.run_dir = cfg.get("out")  # type: ignore[attr-defined]
        raise
    finally:
        if run is not None and run.logger is not None:
            run.logger.close()
        for lock in locks:
            lock.release()
    if not last_row and run.logger is not None and run.logger.rows:
        last_row = run.logger.rows[-1]
    return {"run_dir": str(run.run_dir), "final": last_row, "best_acc": run.best_acc, "best_epoch": run.best_epoch,
            "rank": run.info.rank, "world_size": run.info.world_size}


def _gather_rng(info: DistInfo) -> list[dict[str, Any]]:
    """RNG states of every rank (index = rank); gathered to all ranks under DDP."""
    state = runs.rng_state()
    if not info.distributed:
        return [state]
    import torch.distributed as dist

    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, state)
    return out

