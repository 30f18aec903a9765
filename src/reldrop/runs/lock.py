"""A run directory knows it is one, and only one process writes it at a time.

* ``run.json`` (:data:`MARKER`) is written when a run starts: a run id, the command, the config
  hash, the reldrop version and the start time. A non-empty folder without it is not a reldrop run,
  and ``reldrop train`` refuses to write into it (:func:`check_fresh_run_dir`).
* ``.reldrop.lock`` (:data:`LOCK`) is created with ``O_CREAT | O_EXCL`` (exactly one process can
  create it) and holds the writer's pid, host and start time; it is removed when the process ends
  normally or by an exception. A lock of a live process refuses a second writer
  (:class:`RunInUseError`). A lock left by a killed process (its pid is gone on this host) is
  *stale*: it is reported, and taken over only when asked (``--resume`` or ``--force``).
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Mapping

from .files import PathLike, atomic_write_json, pid_alive, read_json

__all__ = ["MARKER", "LOCK", "RunInUseError", "NotARunError", "RunLock", "acquire_run_lock", "write_marker",
           "read_marker", "check_fresh_run_dir", "is_reldrop_run"]

MARKER = "run.json"
LOCK = ".reldrop.lock"
#: a lock file younger than this that cannot be read is being written by its creator right now
_FRESH_S = 10.0


class RunInUseError(FileExistsError):
    """Another process holds the run directory's lock (or a stale lock was not taken over)."""


class NotARunError(FileExistsError):
    """A non-empty folder that is not a reldrop run directory (no ``run.json``), or a run that would be overwritten."""


def _read_lock(path: Path) -> dict[str, Any] | None:
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def _describe(holder: Mapping[str, Any]) -> str:
    return f"pid {holder.get('pid')} on host {holder.get('host')} (started {holder.get('started_utc')})"


class RunLock:
    """The lock this process holds on a run directory; :meth:`release` removes it (only if still ours)."""

    def __init__(self, path: Path, info: dict[str, Any]) -> None:
        self.path, self.info = path, info

    def release(self) -> None:
        holder = _read_lock(self.path)
        if holder is not None and holder.get("token") == self.info["token"]:
            with contextlib.suppress(OSError):
                self.path.unlink()

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def acquire_run_lock(run_dir: PathLike, *, take_stale: bool = False, quiet: bool = False) -> RunLock:
    """Create ``run_dir/.reldrop.lock`` exclusively (``O_EXCL``) with this process's pid, host and time.

    Raises :class:`RunInUseError` when a live process holds it, when it belongs to another host
    (its pid cannot be checked; ``take_stale`` takes it over), or when it is stale (its pid is gone)
    and ``take_stale`` is False. A stale lock that is taken over is reported on stderr.
    """
    run_dir = Path(run_dir)
    path = run_dir / LOCK
    host = socket.gethostname()
    info = {"pid": os.getpid(), "host": host, "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "argv": list(sys.argv), "token": uuid.uuid4().hex}
    for _ in range(5):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read_lock(path)
            if holder is None:
                with contextlib.suppress(OSError):
                    if time.time() - path.stat().st_mtime < _FRESH_S:
                        raise RunInUseError(f"run directory {run_dir} is being locked by another process "
                                            f"right now ({path}); choose another --out") from None
                holder = {}
            pid = holder.get("pid")
            same_host = holder.get("host") == host
            if same_host and isinstance(pid, int) and pid_alive(pid):
                raise RunInUseError(
                    f"run directory {run_dir} is in use by {_describe(holder)}; wait for it to finish or choose "
                    f"another --out (if no reldrop process has that pid, delete {path})") from None
            if not take_stale:
                why = ("is no longer running (killed?)" if same_host else
                       "ran on another host, so reldrop cannot tell whether it still runs")
                raise RunInUseError(
                    f"run directory {run_dir} has a stale lock {path}: {_describe(holder)} {why}. Continue that run "
                    "with --resume, or pass --force to take the lock over") from None
            grave = path.with_name(f"{LOCK}.stale{os.getpid()}")
            try:
                os.rename(path, grave)
            except FileNotFoundError:
                continue  # released or taken over meanwhile: try again
            moved = _read_lock(grave) or {}
            if moved.get("token") != holder.get("token"):  # another process took it over in between: give it back
                with contextlib.suppress(OSError):
                    os.link(grave, path)
                with contextlib.suppress(OSError):
                    grave.unlink()
                continue
            with contextlib.suppress(OSError):
                grave.unlink()
            if not quiet:
                print(f"[{run_dir.name}] took over the stale lock of {_describe(holder)}", file=sys.stderr, flush=True)
            continue
        try:
            os.write(fd, json.dumps(info, indent=1).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        return RunLock(path, info)
    raise RunInUseError(f"could not lock run directory {run_dir}: its lock {path} keeps changing hands")


def read_marker(run_dir: PathLike) -> dict[str, Any] | None:
    """``run.json`` of a run directory, or None when it has none (or it is unreadable)."""
    try:
        obj = read_json(Path(run_dir) / MARKER)
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def write_marker(run_dir: PathLike, cfg_hash: str, *, resumed: bool = False) -> dict[str, Any]:
    """Write ``run.json`` (run id, command, config hash, version, start time) unless the run has one."""
    run_dir = Path(run_dir)
    old = read_marker(run_dir)
    if old is not None:
        return old
    from .._version import __version__

    marker = {"reldrop_run": 1, "run_id": uuid.uuid4().hex, "command": list(sys.argv), "config_hash": cfg_hash,
              "reldrop": __version__, "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "marked_on_resume": resumed}
    atomic_write_json(run_dir / MARKER, marker, indent=1)
    return marker


def is_reldrop_run(run_dir: PathLike) -> bool:
    """True when ``run_dir`` holds ``run.json`` (or, from reldrop versions before it, a ``last.pt``)."""
    run_dir = Path(run_dir)
    return (run_dir / MARKER).is_file() or (run_dir / "last.pt").is_file()


def _own_entry(name: str) -> bool:
    return name.startswith(LOCK) or ".reldrop-tmp" in name


def check_fresh_run_dir(run_dir: PathLike) -> None:
    """Refuse to start a new run in ``run_dir`` when that would overwrite or mix files.

    Passes for a missing or empty folder and for a reldrop run that saved no epoch yet (``run.json``
    but no checkpoint or metrics: a run killed in its first epoch). Raises :class:`NotARunError`
    for a non-empty folder that is not a reldrop run (no ``run.json``: the user's files), or a run
    that holds checkpoints or metrics (``--resume`` continues it).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        if run_dir.exists() or run_dir.is_symlink():
            raise NotARunError(f"--out {run_dir} exists and is not a folder")
        return
    entries = sorted(p.name for p in run_dir.iterdir() if not _own_entry(p.name))
    if not entries:
        return
    held = [n for n in ("last.pt", "best.pt", "metrics.jsonl") if n in entries]
    if held:
        raise NotARunError(f"run directory {run_dir} already holds a run ({', '.join(held)}); use --resume to "
                           "continue it or choose another --out")
    if MARKER not in entries:
        shown = ", ".join(entries[:5]) + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")
        raise NotARunError(f"--out {run_dir} is not empty and is not a reldrop run directory (no {MARKER}; it holds "
                           f"{shown}); reldrop writes only into new or empty folders or its own runs: choose "
                           "another --out")
