"""The run directory of a training run: its name, what produced it (``env.json``), seeding, the
best/last checkpoint repair after a kill, and the metrics log (``metrics.jsonl`` + ``metrics.csv``)."""
from __future__ import annotations

import csv
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
from typing import Any, Mapping

import numpy as np
import torch

from .._version import __version__
from .files import atomic_open, atomic_write_bytes, atomic_write_text, load_checkpoint, read_json

__all__ = ["resolve_run_dir", "environment", "seed_all", "repair_best", "read_env", "MetricsLogger"]


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
    env = {
        **_git_commit(),
        "reldrop": __version__,
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


def seed_all(seed: int) -> None:
    """Seed python, numpy and torch with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def repair_best(run_dir: Path, last_path: Path, last: Mapping[str, Any], quiet: bool) -> None:
    """Make ``best.pt`` hold the epoch ``last.pt`` records as best.

    Checkpoints are written last.pt, then best.pt. A kill between the two leaves last.pt saying
    ``best_epoch == epoch`` while best.pt holds an older epoch: last.pt then *is* the best model and is
    copied over best.pt. (When best_epoch < epoch, best.pt was completed before last.pt of a later
    epoch was started, so it is already right.)
    """
    best_path = run_dir / "best.pt"
    if last_path.resolve() == best_path.resolve():
        return
    best_epoch, unreadable = None, None
    if best_path.is_file():
        try:
            best_epoch = int(load_checkpoint(best_path)["epoch"])
        except (ValueError, KeyError, TypeError) as err:
            best_epoch, unreadable = None, err
    if int(last["best_epoch"]) != int(last["epoch"]):
        if unreadable is not None:  # best.pt of an older epoch is lost (0 bytes, truncated): never keep a broken one
            keep = best_path.with_name("best.pt.corrupt")
            os.replace(best_path, keep)
            warnings.warn(f"{best_path} is unreadable ({unreadable}); kept it as {keep}. The best epoch "
                          f"({last['best_epoch']}) cannot be recovered: best.pt is written again at the next "
                          "improvement, and evaluate uses last.pt until then", stacklevel=3)
        return
    if best_epoch == int(last["epoch"]):
        return
    atomic_write_bytes(best_path, last_path.read_bytes())
    if not quiet:
        print(f"[{run_dir.name}] best.pt held epoch {best_epoch}, but epoch {last['epoch']} is the best "
              f"(killed between last.pt and best.pt): copied last.pt to best.pt", file=sys.stderr, flush=True)


def read_env(path: Path) -> dict[str, Any]:
    """The ``env.json`` of a resumed run ({} when missing). One that is not valid JSON (cut short by a
    kill in versions that wrote it in place) is kept as ``env.json.corrupt`` and the run continues
    with a warning naming it: env.json describes the run, nothing is restored from it."""
    if not path.is_file():
        return {}
    try:
        old = read_json(path)
    except ValueError as err:
        keep = path.with_name(path.name + ".corrupt")
        os.replace(path, keep)
        warnings.warn(f"{err}; kept it as {keep} and started a new env.json", stacklevel=3)
        return {}
    return old if isinstance(old, dict) else {}


class MetricsLogger:
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
        atomic_write_text(self.jsonl, "".join(json.dumps(r) + "\n" for r in self.rows))

    def log(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        self._write_jsonl()
        keys: list[str] = []
        for r in self.rows:
            keys.extend(k for k in r if k not in keys)
        with atomic_open(self.run_dir / "metrics.csv", "w", newline="") as f:
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
