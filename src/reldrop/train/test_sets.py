"""Extra test sets for ``reldrop compare``: the final model of a run on variants of its test split.

``compare.test_sets`` maps a name to ``data.kwargs`` overrides, e.g. the decoy test modes::

    compare:
      test_sets: {random: {decoy_test: random}, same: {decoy_test: same}}

Each finished run's final model (``last.pt``) is evaluated on the test split built with those
overrides (and the run's ``data.test_subset``, if any; the key ``test_subset`` in an entry replaces
it, e.g. ``{full: {test_subset: null}}`` scores the final model on the whole test split while the
per-epoch curve uses a subset); the accuracies (%) are cached in
``<run>/test_sets.json`` together with the checkpoint's epoch and the overrides, so re-running a
comparison reuses them. An archived run (``finished.json`` without ``last.pt``, see
:mod:`reldrop.runs.archive`) is served from that cache; a test set missing from it is an error.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch

from ..runs.test_set_cache import read_cache, uncached

__all__ = ["evaluate_test_sets", "check_test_sets"]


def check_test_sets(test_sets: Any) -> dict[str, dict[str, Any]]:
    """``compare.test_sets`` as a dict ``{name: {kwarg: value}}`` (ValueError naming the problem)."""
    if test_sets is None:
        return {}
    if not isinstance(test_sets, Mapping):
        raise ValueError(f"config compare.test_sets must be a mapping {{name: {{data.kwargs overrides}}}}, "
                         f"got {test_sets!r}")
    for name, kw in test_sets.items():
        if not isinstance(name, str) or not isinstance(kw, Mapping):
            raise ValueError(f"config compare.test_sets[{name!r}] must map a name to a mapping of data.kwargs, "
                             f"got {kw!r}")
        sub = kw.get("test_subset")
        if sub is not None and (isinstance(sub, bool) or not isinstance(sub, int) or sub < 1):
            raise ValueError(f"config compare.test_sets[{name!r}].test_subset must be a positive int or null "
                             f"(the whole test split), got {sub!r}")
    return {str(k): dict(v) for k, v in test_sets.items()}


def evaluate_test_sets(run_dir: str | Path, cfg: Mapping[str, Any], test_sets: Mapping[str, Mapping[str, Any]],
                       *, data_root: str | None = None) -> dict[str, float]:
    """``{name: test accuracy %}`` of the run's ``last.pt`` on each test set (cached in ``test_sets.json``)."""
    from ..data import build_dataset
    from ..data import data_root as resolve_root
    from ..runs import atomic_write_json, load_checkpoint
    from ..runs.archive import finished_epoch, is_archived
    from .evaluate import evaluate, subset_index
    from .factory import build_model

    run_dir = Path(run_dir)
    test_sets = check_test_sets(test_sets)
    ckpt_path = run_dir / "last.pt"
    cache_path = run_dir / "test_sets.json"
    archived = is_archived(run_dir)
    ckpt = None if archived else load_checkpoint(ckpt_path)
    epoch = finished_epoch(run_dir) if ckpt is None else ckpt.get("epoch")
    cache = read_cache(cache_path, epoch)
    sets = cache["sets"]
    todo = uncached(sets, test_sets)
    if todo and ckpt is None:
        raise ValueError(f"{run_dir} is an archived run (finished.json, no last.pt) and its test_sets.json has no "
                         f"epoch-{epoch} accuracy for test set(s) {sorted(todo)} with these settings; evaluating them "
                         "needs the weights: restore last.pt, or move the folder away to retrain that run")
    if todo:
        assert ckpt is not None
        root = resolve_root(data_root or cfg["data"].get("root"))
        base_kw = dict(cfg["data"].get("kwargs") or {})
        model = None
        for name, kw in todo.items():
            kw = dict(kw)
            test_subset = kw.pop("test_subset") if "test_subset" in kw else cfg["data"].get("test_subset")
            info = build_dataset(cfg["data"]["name"], root, "test", train_transform=False, **{**base_kw, **kw})
            if model is None:
                c = dict(cfg)
                c["model"] = {**cfg["model"], "init": None}
                model = build_model(c, info)
                model.load_state_dict(ckpt["model"])
                model.eval()
            index = None
            if test_subset:
                index = subset_index(info.dataset, int(test_subset))
            res = evaluate(model, info.dataset, info.num_classes, device=torch.device("cpu"),
                           batch_size=int(cfg["train"]["eval_batch_size"]), index=index)
            sets[name] = {"kwargs": json.loads(json.dumps(todo[name])), "acc": float(res["test_acc"]),
                          "macro": float(res["test_macro"])}
        atomic_write_json(cache_path, cache, indent=1)
    return {n: float(sets[n]["acc"]) for n in test_sets}
