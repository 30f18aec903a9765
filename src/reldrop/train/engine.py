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

import contextlib
import csv
import inspect
import json
import math
import os
import platform
import random
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import runs
from .aug_schedule import aug_state
from .config import dump_config, validate
from .distributed import DistInfo, all_reduce_sum, cleanup, init_distributed, shard_indices, wrap_model

__all__ = ["train", "build_augmentation", "RandomErasing", "evaluate", "derive_seed", "resolve_run_dir",
           "save_checkpoint", "load_checkpoint", "METRIC_KEYS"]

Aug = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: the deterministic metric columns (identical between an uninterrupted and a resumed CPU run)
METRIC_KEYS = ("epoch", "lr", "train_loss", "train_acc", "train_top5", "train_macro", "test_loss", "test_acc",
               "test_top5", "test_macro", "gap")


def derive_seed(seed: int, epoch: int, stream: int) -> int:
    """A 63-bit seed for ``stream`` (0 data order, 1 data augmentation, 2 erasing) of ``epoch``."""
    return (int(seed) * 1_000_003 + int(epoch) * 7_919 + int(stream) * 104_729 + 12_345) % (2**63 - 1)


# ---------------------------------------------------------------------------------------------
# augmentation


class RandomErasing:
    """Random Erasing (Zhong et al.) on a normalized batch: :func:`reldrop.random_erase` with the RelDrop block law."""

    def __init__(self, *, p: float = 0.5, scale: tuple[float, float] = (0.02, 0.4),
                 ratio: tuple[float, float] = (0.3, 1 / 0.3), value: Any = 0.0, border: str = "clip",
                 generator: torch.Generator | None = None, count: int = 1, max_count: int | None = None) -> None:
        self.p, self.scale, self.ratio, self.value, self.border = p, tuple(scale), tuple(ratio), value, border
        self.count, self.max_count = count, max_count
        self.generator = generator
        self.enabled = True
        self.last_stats: dict[str, Any] = {}

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        from reldrop.masks import random_erase

        if not self.enabled:
            return x
        out, _ = random_erase(x, p=self.p, scale=self.scale, ratio=self.ratio, value=self.value,
                              border=self.border, generator=self.generator, count=self.count,
                              max_count=self.max_count)
        return out

    def __repr__(self) -> str:
        return f"RandomErasing(p={self.p}, scale={self.scale}, ratio={self.ratio}, value={self.value!r})"


def build_augmentation(aug_cfg: Mapping[str, Any], model: nn.Module, modality: str,
                       generator: torch.Generator | None = None) -> Aug | None:
    """The augmentation callable ``aug(x, y) -> x`` for ``aug_cfg`` (``None`` for ``name: none``).

    * ``re``: Random Erasing, same block law as RelDrop, uniform random centre (images).
    * ``reldrop``: ``reldrop.RelDrop(model, modality=..., method=, p=, scale=, ratio=, epsilon=, ...)``
      (images: relevance-centred block; points: α/β point dropout).
    * ``random``: images -> Random Erasing; points -> RelDrop with α = 1 (pure random point dropout).
    """
    name = aug_cfg["name"]
    if name == "none":
        return None
    if name == "re" or (name == "random" and modality == "image"):
        if modality != "image":
            raise ValueError("aug.name 're' (Random Erasing) is for images; use 'random' for point clouds")
        return RandomErasing(p=aug_cfg["p"], scale=tuple(aug_cfg["scale"]), ratio=tuple(aug_cfg["ratio"]),
                             value=aug_cfg["value"], border=aug_cfg["border"], generator=generator,
                             count=aug_cfg.get("count", 1), max_count=aug_cfg.get("max_count"))
    from reldrop import RelDrop

    kw: dict[str, Any] = dict(modality=modality, method=aug_cfg["method"], backend=aug_cfg["backend"],
                              generator=generator)
    if modality == "image":
        kw.update(p=aug_cfg["p"], scale=tuple(aug_cfg["scale"]), ratio=tuple(aug_cfg["ratio"]),
                  value=aug_cfg["value"], border=aug_cfg["border"], count=aug_cfg.get("count", 1),
                  max_count=aug_cfg.get("max_count"))
    else:
        if aug_cfg.get("count", 1) != 1 or aug_cfg.get("max_count") is not None:
            raise ValueError("aug.count / aug.max_count (blocks per image) apply to images, not point clouds")
        kw.update(alpha=1.0 if name == "random" else aug_cfg["alpha"], beta=aug_cfg["beta"])
        if name == "random":
            kw.pop("method")
    if kw.get("method") not in (None, "auto"):
        from reldrop.attribution.presets import get_preset

        if "epsilon" in get_preset(kw["method"]).kwargs:  # the presets that take an ε
            kw["epsilon"] = aug_cfg["epsilon"]
    kw.update(aug_cfg.get("kwargs") or {})
    params = inspect.signature(RelDrop).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        dropped = [k for k in kw if k not in params]
        if dropped:
            warnings.warn(f"RelDrop does not accept {dropped}; ignored", stacklevel=2)
        kw = {k: v for k, v in kw.items() if k in params}
    try:
        return RelDrop(model, **kw)
    except TypeError as err:  # a typo in aug.kwargs: name the config key, no traceback
        raise ValueError(f"config aug.kwargs {dict(aug_cfg.get('kwargs') or {})}: {err}") from err


def _attribution_info(aug: Any) -> dict[str, str] | None:
    """``{"method", "backend"}`` of a RelDrop augmentation that computes relevance (None otherwise:
    no augmentation, Random Erasing, pure random point dropout). Builds the attributor now."""
    if getattr(aug, "alpha", None) == 1.0 and getattr(aug, "modality", None) == "points":
        return None
    att = getattr(aug, "attributor", None) if hasattr(type(aug), "attributor") else None
    if att is None:
        return None
    return {"method": str(att.method), "backend": str(att.backend)}


# ---------------------------------------------------------------------------------------------
# run directory, environment, checkpoints


def resolve_run_dir(cfg: Mapping[str, Any]) -> Path:
    """``cfg["out"]``, else ``runs/<name>-<aug>-s<seed>-<UTC timestamp>``."""
    if cfg.get("out"):
        return Path(cfg["out"])
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return Path("runs") / f"{cfg['name']}-{cfg['aug']['name']}-s{cfg['seed']}-{stamp}"


def _git_commit() -> dict[str, Any]:
    repo = Path(__file__).resolve().parents[3]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=10).stdout.strip() != ""
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    return {"git_commit": commit, "git_dirty": dirty}


def environment(device: torch.device, world_size: int = 1) -> dict[str, Any]:
    """What produced a run: git commit, versions, device, world size, command line."""
    try:
        import zennit

        zennit_version = getattr(zennit, "__version__", None)
        if zennit_version is None:
            from importlib.metadata import version

            zennit_version = version("zennit")
    except Exception:
        zennit_version = None
    import reldrop

    env = {
        **_git_commit(),
        "reldrop": reldrop.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "zennit": zennit_version,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "hostname": platform.node(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "cpu_threads": torch.get_num_threads(),
        "world_size": world_size,
        "argv": sys.argv,
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return env


def save_checkpoint(state: Mapping[str, Any], path: Path) -> None:
    """``torch.save`` to a temp file in the same folder, then ``os.replace`` (atomic; :func:`reldrop.runs.save_checkpoint`)."""
    runs.save_checkpoint(state, path)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a training checkpoint with ``torch.load(weights_only=True)`` (:func:`reldrop.runs.load_checkpoint`:
    no pickled code runs; errors name the file)."""
    return runs.load_checkpoint(path)


def _rng_state() -> dict[str, Any]:
    return runs.rng_state()


def _set_rng_state(s: Mapping[str, Any]) -> None:
    runs.set_rng_state(s)


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------------
# batches


def _iter_batches(ds: Any, index: torch.Tensor, batch_size: int, *, device: torch.device,
                  generator: torch.Generator | None, num_workers: int, drop_last: bool
                  ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches ``(x, y)`` on ``device`` in the order of ``index``; in-memory datasets build them as tensors."""
    n = index.numel()
    stop = (n // batch_size) * batch_size if drop_last else n
    if hasattr(ds, "get_batch"):
        for s in range(0, stop, batch_size):
            yield ds.get_batch(index[s:s + batch_size], generator=generator, device=device)
        return
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, sampler=index.tolist(), num_workers=num_workers,
                                         drop_last=drop_last, pin_memory=device.type == "cuda",
                                         persistent_workers=False)
    for x, y in loader:
        yield x.to(device, non_blocking=True).float(), torch.as_tensor(y).to(device, non_blocking=True).long().view(-1)


class _Meter:
    """On-device accumulators for loss, top-1/top-5 and the confusion matrix (no host syncs per step)."""

    def __init__(self, num_classes: int, device: torch.device) -> None:
        self.k = num_classes
        self.conf = torch.zeros(num_classes * num_classes, dtype=torch.long, device=device)
        self.sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, top5 correct, count

    @torch.no_grad()
    def update(self, logits: torch.Tensor, y: torch.Tensor, loss_sum: torch.Tensor) -> None:
        logits = logits.detach().float()
        pred = logits.argmax(1)
        self.conf += torch.bincount(y * self.k + pred, minlength=self.k * self.k)
        k5 = min(5, logits.shape[1])
        top5 = (logits.topk(k5, 1).indices == y[:, None]).any(1).sum()
        self.sums += torch.stack([loss_sum.detach().double(), top5.double(),
                                  torch.tensor(float(y.numel()), dtype=torch.float64, device=y.device)])

    def result(self, info: DistInfo | None = None, prefix: str = "") -> dict[str, float]:
        conf, sums = self.conf.clone(), self.sums.clone()
        if info is not None:
            all_reduce_sum(conf, info)
            all_reduce_sum(sums, info)
        conf = conf.view(self.k, self.k).double().cpu()
        loss_sum, top5, count = sums.cpu().tolist()
        count = max(count, 1.0)
        per_class_n = conf.sum(1)
        present = per_class_n > 0
        recall = conf.diag()[present] / per_class_n[present]
        return {f"{prefix}loss": loss_sum / count, f"{prefix}acc": 100.0 * float(conf.diag().sum()) / count,
                f"{prefix}top5": 100.0 * top5 / count,
                f"{prefix}macro": 100.0 * float(recall.mean()) if present.any() else float("nan"),
                f"{prefix}n": int(sums[2].item())}


def _autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    if device.type != "cuda" or amp == "none":
        return contextlib.nullcontext()
    if amp == "auto":
        amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


@torch.no_grad()
def evaluate(model: nn.Module, ds: Any, num_classes: int, *, device: torch.device, batch_size: int = 512,
             info: DistInfo | None = None, amp: str = "none", num_workers: int = 0,
             index: torch.Tensor | None = None, prefix: str = "test_") -> dict[str, float]:
    """Loss, top-1, top-5 and class-mean (macro) accuracy (%) of ``model`` over the whole ``ds`` (eval mode).

    Under DDP every rank evaluates ``index[rank::world]`` and the confusion matrices are summed.
    """
    info = info or DistInfo(device=device)
    was_training = model.training
    model.eval()
    index = torch.arange(len(ds)) if index is None else index
    index = shard_indices(index, info.rank, info.world_size, pad=False)
    meter = _Meter(num_classes, device)
    for x, y in _iter_batches(ds, index, batch_size, device=device, generator=None, num_workers=num_workers,
                              drop_last=False):
        with _autocast(device, amp):
            logits = model(x)
        meter.update(logits, y, F.cross_entropy(logits.float(), y, reduction="sum"))
    model.train(was_training)
    return meter.result(info, prefix)


# ---------------------------------------------------------------------------------------------
# optimizer / schedule / model


def build_optimizer(cfg: Mapping[str, Any], model: nn.Module) -> torch.optim.Optimizer:
    o = cfg["optim"]
    if o["name"] == "sgd":
        return torch.optim.SGD(model.parameters(), lr=o["lr"], momentum=o["momentum"],
                               weight_decay=o["weight_decay"], nesterov=bool(o["nesterov"]))
    cls = torch.optim.AdamW if o["name"] == "adamw" else torch.optim.Adam
    return cls(model.parameters(), lr=o["lr"], weight_decay=o["weight_decay"])


def build_scheduler(cfg: Mapping[str, Any], opt: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-epoch schedule: cosine to ``min_lr`` over the epochs (after linear warm-up), StepLR, or constant."""
    s, epochs = cfg["sched"], cfg["train"]["epochs"]
    warm = min(int(s["warmup_epochs"]), max(epochs - 1, 0))
    if s["name"] == "cosine":
        main: Any = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs - warm, 1), eta_min=s["min_lr"])
    elif s["name"] == "step":
        main = torch.optim.lr_scheduler.StepLR(opt, step_size=int(s["step_size"]), gamma=float(s["gamma"]))
    else:
        main = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0)
    if warm == 0:
        return main
    ramp = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1.0 / (warm + 1), total_iters=warm)
    return torch.optim.lr_scheduler.SequentialLR(opt, [ramp, main], milestones=[warm])


def build_model(cfg: Mapping[str, Any], info_data: Any) -> nn.Module:
    """``reldrop.models.build(model.name, num_classes, in_channels, **model.kwargs)`` + optional ``model.init``."""
    from reldrop import models

    kw = dict(cfg["model"].get("kwargs") or {})
    shape = tuple(info_data.input_shape)
    kw.setdefault("in_channels", shape[0] if info_data.modality == "image" else shape[-1])
    try:
        model = models.build(cfg["model"]["name"], num_classes=info_data.num_classes, **kw)
    except TypeError as err:  # a typo in model.kwargs
        raise ValueError(f"config model.kwargs {dict(cfg['model'].get('kwargs') or {})} for model "
                         f"{cfg['model']['name']!r}: {err}") from err
    if cfg["model"].get("init"):
        from reldrop.models.checkpoint import load_init

        load_init(model, cfg["model"]["init"], strict=bool(cfg["model"].get("init_strict", True)),
                  reinit_head=bool(cfg["model"].get("reinit_head", False)))
    return model


# ---------------------------------------------------------------------------------------------
# logging


class _Logger:
    """``metrics.jsonl`` + ``metrics.csv`` (+ TensorBoard). Both files are rewritten whole and atomically
    every epoch (:mod:`reldrop.runs`), so a kill at any moment leaves the previous or the new complete file."""

    def __init__(self, run_dir: Path, tensorboard: bool, start_epoch: int) -> None:
        self.run_dir = run_dir
        self.jsonl = run_dir / "metrics.jsonl"
        self.rows: list[dict[str, Any]] = []
        if self.jsonl.is_file():  # resume: keep only the epochs the checkpoint covers
            self.rows = [r for r in _read_rows(self.jsonl) if r["epoch"] <= start_epoch]
            self._write_jsonl()
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tb"))
            except ImportError:
                warnings.warn("TensorBoard requested but the tensorboard package is missing "
                              "(pip install reldrop[tensorboard]); continuing without it", stacklevel=2)

    def _write_jsonl(self) -> None:
        runs.atomic_write_text(self.jsonl, "".join(json.dumps(r) + "\n" for r in self.rows))

    def log(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        self._write_jsonl()
        keys: list[str] = []
        for r in self.rows:
            keys.extend(k for k in r if k not in keys)
        with runs.atomic_open(self.run_dir / "metrics.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(self.rows)
        if self.tb is not None:
            for k, v in row.items():
                if k != "epoch" and isinstance(v, (int, float)) and math.isfinite(v):
                    self.tb.add_scalar(k, v, row["epoch"])
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a ``metrics.jsonl``; a cut-short last line (a kill inside an older, non-atomic append)
    is dropped with a warning; a bad line elsewhere is an error naming the file and line."""
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    rows = []
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            if i == len(lines) - 1:
                warnings.warn(f"{path}: dropping a cut-short last line ({err})", stacklevel=3)
                break
            raise ValueError(f"{path} line {i + 1} is not valid JSON ({err})") from err
    return rows


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


# ---------------------------------------------------------------------------------------------
# the loop


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
    _seed_all(seed)  # same model init on every rank
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
        _set_rng_state(ckpt["rng"][min(info.rank, len(ckpt["rng"]) - 1)])
        if info.is_main and cfg["train"]["save_best"]:
            _repair_best(run_dir, ckpt_path, ckpt, quiet)
    else:
        _seed_all(seed + 7_777 * info.rank)  # per-rank stream for dropout etc. after the shared init

    logger = None
    if info.is_main:
        dump_config(cfg, run_dir / "config.yaml")
        env = environment(device, info.world_size)
        env["config_hash"] = runs.config_hash(cfg)
        if ckpt is not None:
            old = _read_env(run_dir / "env.json")
            env = {**old, "resumed": old.get("resumed", []) + [{"epoch": start_epoch, **env}]}
        attribution = _attribution_info(aug)
        if attribution is not None:
            env["attribution"] = attribution
            if not quiet:
                print(f"[{run_dir.name}] RelDrop relevance: {attribution['method']} via the "
                      f"{attribution['backend']} backend", file=sys.stderr, flush=True)
        runs.atomic_write_json(run_dir / "env.json", env, indent=2, default=str)
        logger = _Logger(run_dir, bool(cfg["train"]["tensorboard"]), start_epoch)

    ds, num_classes = train_info.dataset, train_info.num_classes
    bs, epochs = int(cfg["train"]["batch_size"]), int(cfg["train"]["epochs"])
    show = _progress(cfg["train"]["progress"], quiet, info.is_main)
    sync_time = device.type == "cuda" and bool(cfg["train"]["time_aug_sync"])
    grad_clip = cfg["train"].get("grad_clip")
    last_row: dict[str, Any] = {}
    test_index = None
    if cfg["data"].get("test_subset"):
        test_index = _subset_index(test_info.dataset, int(cfg["data"]["test_subset"]))
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
            meter = _Meter(num_classes, device)
            aug_time, stats = 0.0, {}
            lr = opt.param_groups[0]["lr"]
            n_batches = math.ceil(index.numel() / bs)
            bar = None
            if show:
                from tqdm import tqdm

                bar = tqdm(total=n_batches, desc=f"epoch {epoch + 1}/{epochs}", leave=False, dynamic_ncols=True)
            t_train = time.perf_counter()
            for x, y in _iter_batches(ds, index, bs, device=device, generator=data_gen,
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
                with _autocast(device, amp):
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
                # model itself, so a kill before best.pt is written is repaired on resume (_repair_best)
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


def _repair_best(run_dir: Path, last_path: Path, last: Mapping[str, Any], quiet: bool) -> None:
    """Make ``best.pt`` hold the epoch ``last.pt`` records as best.

    Checkpoints are written last.pt, then best.pt. A kill between the two leaves last.pt saying
    ``best_epoch == epoch`` while best.pt holds an older epoch: last.pt then *is* the best model and is
    copied over best.pt. (When best_epoch < epoch, best.pt was completed before last.pt of a later
    epoch was started, so it is already right.)
    """
    best_path = run_dir / "best.pt"
    if int(last["best_epoch"]) != int(last["epoch"]) or last_path.resolve() == best_path.resolve():
        return
    best_epoch = None
    if best_path.is_file():
        try:
            best_epoch = int(load_checkpoint(best_path)["epoch"])
        except (ValueError, KeyError, TypeError):
            best_epoch = None
    if best_epoch == int(last["epoch"]):
        return
    runs.atomic_write_bytes(best_path, last_path.read_bytes())
    if not quiet:
        print(f"[{run_dir.name}] best.pt held epoch {best_epoch}, but epoch {last['epoch']} is the best "
              f"(killed between last.pt and best.pt): copied last.pt to best.pt", file=sys.stderr, flush=True)


def _read_env(path: Path) -> dict[str, Any]:
    """The ``env.json`` of a resumed run ({} when missing). One that is not valid JSON (cut short by a
    kill in versions that wrote it in place) is kept as ``env.json.corrupt`` and the run continues
    with a warning naming it: env.json describes the run, nothing is restored from it."""
    if not path.is_file():
        return {}
    try:
        old = runs.read_json(path)
    except ValueError as err:
        keep = path.with_name(path.name + ".corrupt")
        os.replace(path, keep)
        warnings.warn(f"{err}; kept it as {keep} and started a new env.json", stacklevel=3)
        return {}
    return old if isinstance(old, dict) else {}


def _subset_index(ds: Any, n: int) -> torch.Tensor:
    """Class-balanced (when ``ds.labels`` exists) subset of ``n`` indices of ``ds``, fixed seed 0, sorted."""
    labels = getattr(ds, "labels", None)
    if labels is not None:
        from reldrop.data.tensor_dataset import class_balanced_subset

        return class_balanced_subset(torch.as_tensor(labels), n, seed=0)
    g = torch.Generator().manual_seed(0)
    return torch.randperm(len(ds), generator=g)[:n].sort().values


def _gather_rng(info: DistInfo) -> list[dict[str, Any]]:
    """RNG states of every rank (index = rank); gathered to all ranks under DDP."""
    state = _rng_state()
    if not info.distributed:
        return [state]
    import torch.distributed as dist

    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, state)
    return out


def shutdown() -> None:
    """Tear down the process group (call at the end of a torchrun script)."""
    cleanup()
