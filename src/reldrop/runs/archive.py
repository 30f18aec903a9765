"""Finished runs without their checkpoints: the ``finished.json`` marker and study archives.

A long study (``reldrop compare`` over many arms, variants and seeds) can outlive the machine it ran on.
Its checkpoints are large, but everything its tables need is small: ``config.yaml``, ``env.json``,
``metrics.jsonl`` / ``metrics.csv`` and the cached ``test_sets.json``. ``compare`` writes
``<run>/finished.json`` once a run has finished and its test sets are evaluated::

    {"epoch": 20, "checkpoint_sha256": "<sha256 of last.pt>", "written_utc": "2026-12-03T18:00:00Z"}

A run folder holding ``finished.json`` but no ``last.pt`` is an *archived* run: ``compare`` counts it as
finished at that epoch and builds its table row from the saved files, without retraining; anything that
needs the weights (a test set not in the cache, ``evaluate``) says that ``last.pt`` must be restored.
:func:`archive_runs` copies a study's finished runs, minus ``*.pt``, into another folder (e.g. one
tracked by git), so the study resumes elsewhere with only its unfinished runs left to train.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path
from typing import Any

from .files import atomic_write_json, load_checkpoint, read_json
from .test_set_cache import missing_test_sets

__all__ = ["FINISHED", "finished_epoch", "is_archived", "mark_finished", "read_finished", "archive_runs",
           "run_folders"]

FINISHED = "finished.json"
_SKIPPED_SUFFIXES = (".pt",)
_SKIPPED_NAMES = (".reldrop.lock",)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_finished(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The run's ``finished.json`` (None without one); ValueError when it is not a valid marker."""
    path = Path(run_dir) / FINISHED
    if not path.is_file():
        return None
    data = read_json(path)
    if not isinstance(data, dict) or isinstance(data.get("epoch"), bool) or not isinstance(data.get("epoch"), int):
        raise ValueError(f"{path} is not a finished-run marker (needs an integer 'epoch'); delete it, or restore "
                         "the run's last.pt")
    return data


def is_archived(run_dir: str | os.PathLike[str]) -> bool:
    """True for a finished run kept without its checkpoint (``finished.json``, no ``last.pt``)."""
    run_dir = Path(run_dir)
    return not (run_dir / "last.pt").is_file() and (run_dir / FINISHED).is_file()


def finished_epoch(run_dir: str | os.PathLike[str]) -> int | None:
    """The epoch a run holds: that of ``last.pt``, else that of ``finished.json`` (an archived run); None
    for a folder with neither."""
    run_dir = Path(run_dir)
    ckpt = run_dir / "last.pt"
    if ckpt.is_file():
        return int(load_checkpoint(ckpt)["epoch"])
    marker = read_finished(run_dir)
    return None if marker is None else int(marker["epoch"])


def mark_finished(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Write ``<run_dir>/finished.json`` for the epoch ``last.pt`` holds (kept when it already says so).

    Returns the marker. FileNotFoundError without ``last.pt``: only a run with its checkpoint can be marked.
    """
    run_dir = Path(run_dir)
    ckpt = run_dir / "last.pt"
    if not ckpt.is_file():
        raise FileNotFoundError(f"{ckpt} not found: only a run with its checkpoint can be marked finished")
    epoch = int(load_checkpoint(ckpt)["epoch"])
    old = read_finished(run_dir)
    digest = _sha256(ckpt)
    if old is not None and old.get("epoch") == epoch and old.get("checkpoint_sha256") == digest:
        return old
    marker = {"epoch": epoch, "checkpoint_sha256": digest,
              "written_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    atomic_write_json(run_dir / FINISHED, marker, indent=1)
    return marker


def run_folders(root: str | os.PathLike[str]) -> list[Path]:
    """Every run folder below ``root`` (a folder holding ``config.yaml`` and ``metrics.jsonl``), sorted."""
    root = Path(root)
    return sorted(p.parent for p in root.rglob("metrics.jsonl") if (p.parent / "config.yaml").is_file())


def _kept(f: Path) -> bool:
    return not (f.is_symlink() or f.suffix in _SKIPPED_SUFFIXES or f.name in _SKIPPED_NAMES
                or ".reldrop-tmp" in f.name)


def _copy_files(src: Path, dst: Path, *, recursive: bool = False) -> None:
    """Copy the files of folder ``src`` to ``dst`` (checkpoints, locks and temp files left out; subfolders
    only when ``recursive``, e.g. a run's ``eval/``)."""
    for f in sorted(src.iterdir()):
        if not _kept(f):
            continue
        if f.is_file():
            dst.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dst / f.name)
        elif recursive and f.is_dir():
            _copy_files(f, dst / f.name, recursive=True)


def _comparison_test_sets(run: Path, src: Path) -> dict[str, Any]:
    """``compare.test_sets`` of the comparison ``run`` belongs to: the config in the nearest ``compare.json``
    between ``run`` and ``src`` (``{}`` when there is none: a run of ``reldrop train``)."""
    for folder in run.parents:
        path = folder / "compare.json"
        if path.is_file():
            cfg = read_json(path).get("config") or {}
            return dict((cfg.get("compare") or {}).get("test_sets") or {})
        if folder == src:
            break
    return {}


def archive_runs(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> dict[str, list[str]]:
    """Copy the finished runs of study folder ``src`` into ``dst`` without their checkpoints.

    A run is finished when ``last.pt`` holds the epochs its ``config.yaml`` asks for (``train.epochs``)
    and ``test_sets.json`` holds every test set of its comparison (``compare.test_sets`` in the nearest
    ``compare.json``) for that epoch: an archived run cannot evaluate one later. A run stopped between
    its last epoch and those evaluations counts as unfinished (``compare`` on ``src`` finishes it). A
    finished run is marked (:func:`mark_finished`) in ``src`` and its files and
    subfolders (``*.pt``, locks and temp files left out) copied to the same relative path below ``dst``, as are the
    plain files of every folder above it up to ``src`` (``compare.json``, ``epochs_scale.json``, results,
    logs). Archived runs already in ``src`` are copied as they are. Unfinished runs are left out.

    Returns ``{"finished": [relative run paths], "unfinished": [...]}``.
    """
    import yaml

    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise FileNotFoundError(f"{src} is not a folder")
    if src.resolve() == dst.resolve() or src.resolve() in dst.resolve().parents:
        raise ValueError(f"the archive {dst} must lie outside the study folder {src}")
    done: list[str] = []
    todo: list[str] = []
    folders: set[Path] = set()
    for run in run_folders(src):
        rel = run.relative_to(src)
        if is_archived(run):
            ok = True
        elif (run / "last.pt").is_file():
            want = int(yaml.safe_load((run / "config.yaml").read_text())["train"]["epochs"])
            epoch = finished_epoch(run)
            ok = epoch == want and not missing_test_sets(run, _comparison_test_sets(run, src), epoch)
            if ok:
                mark_finished(run)
        else:
            ok = False
        (done if ok else todo).append(str(rel))
        if ok:
            _copy_files(run, dst / rel, recursive=True)
            folders.update(p for p in rel.parents if p != Path("."))
    for rel in sorted(folders | {Path(".")}):
        _copy_files(src / rel, dst / rel)
    return {"finished": done, "unfinished": todo}
