"""Files of a run on disk: atomic writes, safe checkpoint loading, stale temp files, RNG states.

The one home of reldrop's disk writes for run state (checkpoints, metrics, ``env.json``, results):

* :func:`atomic_write_bytes` / :func:`atomic_write_text` / :func:`atomic_write_json` /
  :func:`atomic_open` / :func:`save_checkpoint` write to a temp file ``.<name>.reldrop-tmp<pid>``
  in the same folder, flush + fsync it, then ``os.replace`` it over the target. A reader (or a
  process that starts after a kill) sees either the whole old file or the whole new one, never a
  truncated mix. A kill during the write leaves the temp file behind; :func:`clean_stale_temps`
  removes such leftovers of dead processes when a run starts or resumes - only files that reldrop
  names this way (or, from older versions, ``.<run file>.tmp<pid>`` of its own run files), never a
  user's ``.notes.tmp42``. A failed write (disk full, file size limit, read-only folder) raises
  :class:`RunWriteError` naming the file and saying that the previous file is intact.
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
import json
import os
import random
import re
from pathlib import Path
from typing import IO, Any, Iterator, Mapping

import numpy as np
import torch

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_json", "atomic_open", "save_checkpoint",
           "load_checkpoint", "read_json", "clean_stale_temps", "temp_path", "rng_state", "set_rng_state",
           "CheckpointError", "UnsafeCheckpointError", "RunWriteError", "PathLike", "RUN_FILES", "pid_alive"]

PathLike = str | os.PathLike[str]
#: the temp files reldrop writes: ``.<name>.reldrop-tmp<pid>``
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.reldrop-tmp(?P<pid>\d+)$")
#: the temp files older reldrop versions wrote (``.<name>.tmp[<pid>]``); removed only for its own run files
_OLD_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.tmp(?P<pid>\d*)$")
#: the files reldrop writes into a run directory
RUN_FILES = ("last.pt", "best.pt", "metrics.jsonl", "metrics.csv", "env.json", "config.yaml", "run.json")


class CheckpointError(ValueError):
    """A checkpoint file cannot be read safely (corrupt, truncated, or holds pickled code/objects)."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint needs pickled globals other than tensors/containers/numbers (refused, never run)."""


class RunWriteError(OSError):
    """Writing a run file failed (disk full, file size limit, read-only or missing folder); the
    previous version of the file is intact (the write went to a temp file that was removed)."""


def temp_path(path: PathLike) -> Path:
    """The temp file used while writing ``path``: ``<dir>/.<name>.reldrop-tmp<pid>`` (same folder, so
    ``os.replace`` is atomic; the reldrop tag and the pid say who wrote it)."""
    path = Path(path)
    return path.with_name(f".{path.name}.reldrop-tmp{os.getpid()}")


def _write_error(path: Path, err: BaseException) -> RunWriteError:
    text = str(err).strip()
    cause = getattr(err, "strerror", None) or (text.splitlines()[0] if text else type(err).__name__)
    if "inline_container" in text or "PytorchStreamWriter" in text:
        cause = f"torch.save failed ({cause}): disk full or file size limit?"
    prev = f"the previous {path.name} is intact" if path.is_file() else f"no {path.name} was written"
    out = RunWriteError(f"could not write {path}: {cause}; {prev}")
    out.errno = getattr(err, "errno", None)
    return out


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
    except OSError as err:  # disk full, EFBIG (ulimit -f), read-only folder: one line naming the file
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(err, RunWriteError):
            raise
        raise _write_error(path, err) from err
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
    path = Path(path)
    with atomic_open(path, "wb") as f:
        try:
            torch.save(dict(state), f)
        except RuntimeError as err:  # torch's zip writer reports a failed write as RuntimeError (inline_container.cc)
            raise _write_error(path, err) from err


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
        text = str(err)
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        if found is not None or "Unsupported global" in text:
            what = found.group(1) if found is not None else "a global that is not allowed"
            raise UnsafeCheckpointError(
                f"refusing to load checkpoint {path}: it holds pickled objects other than tensors, containers and "
                f"numbers ({what}), and reldrop loads checkpoints with torch.load(weights_only=True) so that a file "
                f"cannot run code. Only load files you trust; re-save it as a plain state dict "
                f"(torch.save(model.state_dict(), ...)) if you do.") from err
        first = text.strip().splitlines()[0].strip() if text.strip() else ""
        raise CheckpointError(f"corrupt or unreadable checkpoint: {path} ({type(err).__name__}: {first})") from err
    return obj


def pid_alive(pid: int) -> bool:
    """Whether a process with ``pid`` exists on this host (one owned by another user counts)."""
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
    """Remove the temp files of killed reldrop writers in ``folder``; returns them.

    Only files reldrop created are candidates: ``.<name>.reldrop-tmp<pid>`` (:func:`temp_path`), and
    the older ``.<name>.tmp[<pid>]`` of its own run files (:data:`RUN_FILES`, e.g. ``.last.pt.tmp42``).
    Anything else (a user's ``.notes.tmp4242``, ``.draft.tmp``) is never touched. A temp file whose
    pid is still alive (another process writing right now) is kept, unless it is this process's
    own pid (a leftover of an earlier call in this process).
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        m = _TEMP_RE.match(p.name)
        if m is None:
            m = _OLD_TEMP_RE.match(p.name)
            if m is None or m.group("name") not in RUN_FILES:
                continue
        if not p.is_file() or p.is_symlink():
            continue
        pid = int(m.group("pid")) if m.group("pid") else -1
        if pid != os.getpid() and pid_alive(pid):
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
