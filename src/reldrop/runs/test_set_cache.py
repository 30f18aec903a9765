"""The ``<run>/test_sets.json`` cache of ``reldrop compare``'s extra test sets, read without a checkpoint.

``{"epoch": E, "sets": {name: {"kwargs": {...}, "acc": .., "macro": ..}}}``: valid only for the checkpoint
of epoch ``E``; a set counts as cached when its stored ``kwargs`` equal the requested ones.
:mod:`reldrop.train.test_sets` fills it; :mod:`reldrop.runs.archive` checks it before archiving a run.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

__all__ = ["read_cache", "uncached", "missing_test_sets"]


def read_cache(cache_path: Path, epoch: Any) -> dict[str, Any]:
    """``test_sets.json`` as ``{"epoch": .., "sets": {..}}``; empty sets when missing, unreadable or of another
    epoch (a cache is valid only for the checkpoint it was computed from)."""
    cache: dict[str, Any] = {}
    if cache_path.is_file():
        try:
            cache = json.loads(cache_path.read_text())
        except json.JSONDecodeError:
            cache = {}
    if not isinstance(cache, dict) or cache.get("epoch") != epoch or not isinstance(cache.get("sets"), dict):
        cache = {"epoch": epoch, "sets": {}}
    return cache


def uncached(sets: Mapping[str, Any], test_sets: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The entries of ``test_sets`` that the cache's ``sets`` does not hold with these settings."""
    return {n: dict(kw) for n, kw in test_sets.items()
            if not isinstance(sets.get(n), dict) or sets[n].get("kwargs") != json.loads(json.dumps(kw))}


def missing_test_sets(run_dir: str | Path, test_sets: Mapping[str, Mapping[str, Any]], epoch: int | None) -> list[str]:
    """Names of ``test_sets`` whose epoch-``epoch`` accuracy ``<run_dir>/test_sets.json`` does not hold (with
    these settings), sorted; empty when every one is cached. Reads no checkpoint."""
    sets = read_cache(Path(run_dir) / "test_sets.json", epoch)["sets"]
    return sorted(uncached(sets, test_sets))
