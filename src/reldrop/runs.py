"""Run directories on disk: atomic writes, safe checkpoint loading, stale temp files.

The one home of reldrop's disk writes for run state (checkpoints, metrics, ``env.json``, results):

* :func:`atomic_write_bytes` / :func:`atomic_write_text` / :func:`atomic_write_json` /
  :func:`atomic_open` / :func:`save_checkpoint` write to a temp file ``.<name>.tmp<pid>`` in the
  same folder, flush + fsync it, then ``os.replace`` it over the target. A reader (or a process
  that starts after a kill) sees either the whole old file or the whole new one, never a
  truncated mix. A kill during the write leaves the temp file behind; :func:`clean_stale_temps`
  removes such leftovers of dead processes when a run starts or resumes.
* :func:`load_checkpoint` reads with ``torch.load(weights_only=True)``: only tensors, plain
  containers and numbers are unpickled, so a crafted checkpoint cannot run code. Checkpoints of
  reldrop <= 0.x that pickled numpy RNG states load too (numpy arrays are allow-listed for the
  duration of the call only); anything else that needs other globals is refused with an error
  naming the file.
* :func:`read_json` names the file when it is missing or not valid JSON.

Everything here is process-local: nothing changes global torch/pickle settings.
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import math
import os
import platform
import random
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import IO, Any, Iterator, Mapping

import numpy as np
import torch

from ._version import __version__

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_json", "atomic_open", "save_checkpoint",
           "load_checkpoint", "read_json", "clean_stale_temps", "temp_path", "config_hash", "config_diff",
           "rng_state", "set_rng_state", "CheckpointError", "RunConfigMismatchError",
           "saved_config", "CONFIG_HASH_IGNORED", "resolve_run_dir", "environment", "seed_all", "repair_best",
           "read_env", "MetricsLogger"]

PathLike = str | os.PathLike[str]
_TEMP_RE = re.compile(r"^\..+\.tmp(\d*)$")


class CheckpointError(ValueError):
    """A checkpoint file cannot be read safely (corrupt, truncated, or holds pickled code/objects)."""


def temp_path(path: PathLike) -> Path:
    """The temp file used while writing ``path``: ``<dir>/.<name>.tmp<pid>`` (same folder, so
    ``os.replace`` is atomic)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not supported everywhere (e.g. some network file systems)
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "w", **open_kw: Any) -> Iterator[IO[Any]]:
    """``with atomic_open(path, "w", newline="") as f: ...`` writes ``path`` atomically.

    The file object writes to :func:`temp_path`; on a clean exit it is flushed, fsynced and moved
    over ``path``; on an exception the temp file is removed and ``path`` is left as it was.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open supports mode 'w' or 'wb', got {mode!r}")
    path = Path(path)
    tmp = temp_path(path)
    try:
        with open(tmp, mode, **open_kw) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file + ``os.replace``); returns ``path``."""
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: PathLike, obj: Any, **dump_kw: Any) -> Path:
    """``json.dumps(obj, **dump_kw)`` to ``path`` atomically (serialized before the file is touched)."""
    return atomic_write_text(path, json.dumps(obj, **dump_kw))


def read_json(path: PathLike) -> Any:
    """``json.load`` of ``path``; FileNotFoundError / ValueError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); it was probably cut short by a killed "
                         "process - delete or repair it") from err


def save_checkpoint(state: Mapping[str, Any], path: PathLike) -> None:
    """``torch.save(dict(state))`` to ``path`` atomically (temp file in the same folder + ``os.replace``)."""
    with atomic_open(path, "wb") as f:
        torch.save(dict(state), f)


def _numpy_globals() -> list[Any]:
    """numpy's array/dtype reconstructors (old checkpoints pickled numpy RNG states)."""
    core = getattr(np, "_core", None) or np.core  # numpy 2 / numpy 1
    out: list[Any] = [core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]
    return out


def load_checkpoint(path: PathLike) -> dict[str, Any]:
    """Load a checkpoint with ``torch.load(weights_only=True)`` (no pickled code can run).

    Raises FileNotFoundError naming the file when it is missing, :class:`CheckpointError`
    (a ValueError) naming the file when it is truncated/corrupt or needs globals that are not
    tensors, containers or numpy arrays.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        msg = str(err).split("\n\n")[0].strip()
        if "weights_only" in str(err) or "Unsupported global" in str(err):
            raise CheckpointError(
                f"refusing to load checkpoint {path}: it holds pickled objects other than tensors, containers and "
                f"numbers, and reldrop loads checkpoints with torch.load(weights_only=True) so that a file cannot "
                f"run code ({msg}). Only load files you trust; re-save it as a plain state dict "
                f"(torch.save(model.state_dict(), ...)) if you do.") from err
        raise CheckpointError(f"corrupt or unreadable checkpoint: {path} ({type(err).__name__}: {msg})") from err
    return obj


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def clean_stale_temps(folder: PathLike) -> list[Path]:
    """Remove temp files ``.<name>.tmp[<pid>]`` in ``folder`` left by killed writers; returns them.

    A temp file whose pid is still alive (another process writing right now) is kept, unless it is
    this process's own pid (a leftover of an earlier call in this process). Files without a pid
    (older versions wrote ``.metrics.csv.tmp``) are removed.
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        m = _TEMP_RE.match(p.name)
        if m is None or not p.is_file():
            continue
        pid = int(m.group(1)) if m.group(1) else -1
        if pid != os.getpid() and _pid_alive(pid):
            continue
        with contextlib.suppress(OSError):
            p.unlink()
            removed.append(p)
    return removed


# ---------------------------------------------------------------------------------------------
# RNG states as tensors / plain lists (loadable with weights_only=True)


def rng_state() -> dict[str, Any]:
    """torch/CUDA/numpy/python RNG states as tensors, lists and numbers (no numpy objects)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(version), "state": list(py_state), "gauss_next": gauss_next},
    }


def set_rng_state(s: Mapping[str, Any]) -> None:
    """Restore states from :func:`rng_state` (also the old format with numpy tuples)."""
    torch.set_rng_state(s["torch"])
    npst = s["numpy"]
    if isinstance(npst, Mapping):
        np.random.set_state((npst["name"], np.asarray(npst["keys"], dtype=np.int64).astype(np.uint32),
                             int(npst["pos"]), int(npst["has_gauss"]), float(npst["cached_gaussian"])))
    else:
        np.random.set_state(npst)
    py = s["python"]
    if isinstance(py, Mapping):
        random.setstate((int(py["version"]), tuple(int(v) for v in py["state"]), py["gauss_next"]))
    else:
        random.setstate(py)
    if s.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


# ---------------------------------------------------------------------------------------------
# config identity of a run

#: keys (and sections) that say where things are, how they are shown or what else a comparison
#: holds - not what this run trains
CONFIG_HASH_IGNORED = ("out", "data.root", "train.progress", "compare")


def _ignored(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in CONFIG_HASH_IGNORED)


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out if out or not prefix else {prefix: {}}
    return {prefix: obj}


def _canonical(cfg: Mapping[str, Any]) -> dict[str, Any]:
    flat = _flatten(json.loads(json.dumps(cfg, default=str)))
    return {k: v for k, v in flat.items() if not _ignored(k)}


def config_hash(cfg: Mapping[str, Any]) -> str:
    """sha256 (16 hex digits) of the resolved config without the :data:`CONFIG_HASH_IGNORED` keys
    (recorded as ``config_hash`` in a run's ``env.json``)."""
    blob = json.dumps(_canonical(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (old value, new value)}`` for keys that differ (missing keys show as ``None``)."""
    a, b = _canonical(old), _canonical(new)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


class RunConfigMismatchError(ValueError):
    """An existing run directory was trained with another config than the one asked for now."""


def saved_config(run_dir: PathLike) -> dict[str, Any] | None:
    """The config a run directory was trained with (``config.yaml``, else ``last.pt``'s), or None."""
    import yaml

    run_dir = Path(run_dir)
    path = run_dir / "config.yaml"
    if path.is_file():
        try:
            cfg = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise ValueError(f"{path} is not valid YAML ({err})") from err
        if isinstance(cfg, dict):
            return cfg
    if (run_dir / "last.pt").is_file():
        cfg = load_checkpoint(run_dir / "last.pt").get("config")
        return dict(cfg) if isinstance(cfg, Mapping) else None
    return None


# ---------------------------------------------------------------------------------------------
# the run directory of a training run: its name, environment, best/last repair, metrics log


def resolve_run_dir(cfg: Mapping[str, Any]) -> Path:
    """``cfg["out"]``, else ``runs/<name>-<aug>-s<seed>-<UTC timestamp>``."""
    if cfg.get("out"):
        return Path(cfg["out"])
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return Path("runs") / f"{cfg['name']}-{cfg['aug']['name']}-s{cfg['seed']}-{stamp}"


def _git_commit() -> dict[str, Any]:
    repo = Path(__file__).resolve().parents[2]
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


def __getattr__(name: str) -> Any:
    """``reldrop.runs.check_run_config``: its old address (it needs the config defaults, so it lives in
    :mod:`reldrop.train.config`, above this module)."""
    if name == "check_run_config":
        from .train.config import check_run_config

        return check_run_config
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
