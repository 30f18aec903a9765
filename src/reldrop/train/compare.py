"""``reldrop compare``, the training side: train every variant × seed of a config and summarize them
(Table 1 / Fig. 2 style); :mod:`reldrop.commands.compare` writes the tables and draws the curves.

Variants come from ``compare.variants`` in the config: a list of ``{name: ..., <partial config>}``
entries merged onto the base config, optionally with ``set: ["key=value", ...]`` overrides and a
``grid: {dotted.key: [values...]}`` that expands into one variant per combination (e.g. the
point-cloud α × β sweep)::

    compare:
      seeds: [0, 1, 2]
      variants:
        - {name: baseline, aug: {name: none}}
        - {name: random, aug: {name: random, beta: 0.15}}
        - {name: RelDrop, aug: {name: reldrop}, grid: {aug.alpha: [0, 0.5, 1], aug.beta: [0.15, 0.5, 0.85]}}

Equal compute: a variant option ``epochs_scale`` trains that variant for ``round(epochs × factor)``
epochs (the schedule spans them), a number, or ``auto``: the measured wall-clock ratio of RelDrop's
training time per epoch to the baseline's (``epochs_scale_ref: <variant>`` names another reference),
decided from this comparison's finished runs when the variant's turn comes (auto variants train last)
and kept in ``<out>/epochs_scale.json``::

        - {name: baseline (equal compute), aug: {name: none}, epochs_scale: auto}

A scaled variant is tested against the baseline only (it is never the table's baseline or RE).

Each run goes to ``<out>/<variant>/seed<k>/`` (a normal run directory). Finished runs are reused and
interrupted ones resumed, so re-running the same command continues a killed comparison. Outputs
(written by :func:`reldrop.commands.compare.write_outputs`):
``results.md`` / ``results.csv`` (mean ± std over seeds of final and best test accuracy, class-mean
accuracy, final train accuracy, train–test gap, time per epoch, augmentation time per epoch),
``runs.csv`` (one row per run) and ``curves.png`` (train and test accuracy per epoch: mean over
seeds as a thin line plus its 5-epoch moving average as a thick line).

Statistics (:mod:`reldrop.stats`) of the final test accuracy: ``n``, the 95 % Student-t confidence
interval over seeds (``ci95_low``, ``ci95_high``), and paired tests over matching seeds of every
variant vs the baseline (``p_vs_baseline``) and of every RelDrop variant vs Random Erasing
(``p_vs_re``): paired t-test p, exact sign-flip p (``p_perm_*``), ``significant_vs_*`` yes/no
at 5 % (t-test), and the Holm-corrected t-test p (``p_holm_vs_baseline``, ``p_holm_vs_re``; the
family is every test of one table: final accuracy, or one test set) with ``significant_holm_vs_*``.
Empty where a comparison does not apply. ``compare.test_sets`` (``{name: {data.kwargs
overrides}}``, e.g. the decoy test modes) evaluates every final model on more test sets too, with the
same statistics in ``test_<name>_acc_*`` columns.
"""
from __future__ import annotations

import copy
import itertools
import json
import math
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..runs import atomic_write_json
from ..stats import GROUP_STATS
from .config import apply_overrides, check_run_config, deep_merge, validate

__all__ = ["expand_variants", "run_compare", "summarize", "read_metrics", "variant_dirs", "STAT_KEYS"]


def _fmt_value(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def expand_variants(cfg: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``[(variant name, full config), ...]`` from ``cfg["compare"]["variants"]`` (grids expanded)."""
    out: list[tuple[str, dict[str, Any]]] = []
    for entry in cfg["compare"]["variants"]:
        entry = dict(entry)
        name = str(entry.pop("name"))
        sets = list(entry.pop("set", []) or [])
        grid = dict(entry.pop("grid", {}) or {})
        scale = {k: entry.pop(k) for k in ("epochs_scale", "epochs_scale_ref") if k in entry}
        base = deep_merge(cfg, entry)
        base = apply_overrides(base, sets)
        if scale:
            base["compare"] = {**base.get("compare", {}), **_check_scale(name, scale)}
        if not grid:
            combos: list[tuple[tuple[str, Any], ...]] = [()]
        else:
            keys = list(grid)
            for k in keys:
                if not isinstance(grid[k], (list, tuple)) or not grid[k]:
                    raise ValueError(f"compare variant {name!r}: grid[{k!r}] must be a non-empty list")
            combos = [tuple(zip(keys, vals)) for vals in itertools.product(*(grid[k] for k in keys))]
        for combo in combos:
            vcfg = apply_overrides(base, [f"{k}={json.dumps(v)}" for k, v in combo])
            label = name if not combo else name + " " + " ".join(f"{k.split('.')[-1]}={_fmt_value(v)}" for k, v in combo)
            validate(vcfg)
            out.append((label, vcfg))
    names = [n for n, _ in out]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ValueError(f"compare.variants: duplicate variant names {sorted(dup)}")
    return out


def _check_scale(name: str, scale: Mapping[str, Any]) -> dict[str, Any]:
    """The variant options ``epochs_scale`` (a number > 0, or "auto") and ``epochs_scale_ref``, checked."""
    value = scale.get("epochs_scale")
    if value != "auto" and (isinstance(value, bool) or not isinstance(value, (int, float))
                            or not math.isfinite(value) or value <= 0):
        raise ValueError(f"compare variant {name!r}: epochs_scale must be a number > 0 or 'auto', got {value!r}")
    ref = scale.get("epochs_scale_ref")
    if ref is not None and (value != "auto" or not isinstance(ref, str)):
        raise ValueError(f"compare variant {name!r}: epochs_scale_ref (a variant name) goes with epochs_scale: auto")
    return {"epochs_scale": value, "epochs_scale_ref": ref}


def _role_augs(variants: Sequence[tuple[str, Mapping[str, Any]]]) -> list[str]:
    """``aug.name`` per variant for :func:`reldrop.stats.roles`, with ``"@scaled"`` appended where the
    variant has ``epochs_scale``: an equal-compute variant is never the baseline or the RE reference,
    and is tested against the baseline only."""
    return [c["aug"]["name"] + ("@scaled" if (c.get("compare") or {}).get("epochs_scale") is not None else "")
            for _, c in variants]


def _scaled_epochs(epochs: int, factor: float) -> int:
    return max(1, int(round(epochs * factor)))


def _mean_train_time(out_dir: Path, variant: str, epochs: int, seeds: Sequence[int]) -> tuple[float, int]:
    """Mean over the finished runs of ``variant`` (``<out>/<variant>/seed<k>``) of their mean training
    time per epoch; and how many runs that is."""
    per_run = []
    for seed in seeds:
        run_dir = out_dir / _slug(variant) / f"seed{seed}"
        rows = [r for r in read_metrics(run_dir) if int(r["epoch"]) <= epochs]
        if _finished(run_dir, epochs) and rows and all("train_time" in m for m in rows):
            per_run.append(float(np.mean([m["train_time"] for m in rows])))
    return (float(np.mean(per_run)) if per_run else float("nan")), len(per_run)


def _auto_scale(out_dir: Path, name: str, vcfg: Mapping[str, Any], seeds: Sequence[int],
                variants: Sequence[tuple[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """The ``epochs_scale: auto`` factor of variant ``name``: RelDrop's measured wall-clock ratio.

    factor = mean training time per epoch of the reference variant (``epochs_scale_ref``, default the
    first RelDrop variant) / that of the baseline, over the runs of this comparison that finished.
    Decided once and kept in ``<out>/epochs_scale.json``, so a resumed comparison trains the same
    number of epochs.
    """
    path = out_dir / "epochs_scale.json"
    saved = json.loads(path.read_text()) if path.is_file() else {}
    if name in saved:
        return saved[name]
    from ..stats import roles

    names = [n for n, _ in variants]
    base, _, rel = roles(names, _role_augs(variants))
    ref = vcfg["compare"].get("epochs_scale_ref") or (rel[0] if rel else None)
    if ref not in names or base is None or ref == base:
        raise ValueError(f"compare variant {name!r}: epochs_scale: auto needs a baseline and a reference variant "
                         f"(epochs_scale_ref, default the first RelDrop variant) in this config; got {ref!r}")
    epochs = dict(variants)
    t_ref, n_ref = _mean_train_time(out_dir, ref, int(epochs[ref]["train"]["epochs"]), seeds)
    t_base, n_base = _mean_train_time(out_dir, base, int(epochs[base]["train"]["epochs"]), seeds)
    if not (n_ref and n_base):
        raise ValueError(f"compare variant {name!r}: epochs_scale: auto measures {ref!r} against {base!r}, but "
                         f"finished runs of both are needed first ({n_ref} and {n_base} here): run them in the same "
                         "comparison, or give epochs_scale a number")
    factor = t_ref / t_base
    entry = {"factor": factor, "reference": ref, "baseline": base, "reference_s_per_epoch": t_ref,
             "baseline_s_per_epoch": t_base, "reference_runs": n_ref, "baseline_runs": n_base,
             "epochs": _scaled_epochs(int(vcfg["train"]["epochs"]), factor)}
    atomic_write_json(path, {**saved, name: entry}, indent=2)
    return entry


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", name).strip("_") or "variant"


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """Rows of ``<run_dir>/metrics.jsonl``."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def variant_dirs(out_dir: str | Path, names: Sequence[str]) -> dict[str, Path]:
    """``{variant: <out_dir>/<folder>}``, the folders ``compare`` writes (runs ``seed<k>`` inside).

    Refuses names whose folders collide (after sanitizing, ignoring case) or leave ``out_dir`` (``..``, ``.``)."""
    out_dir = Path(out_dir)
    dirs: dict[str, Path] = {}
    seen: dict[str, str] = {}
    for name in names:
        slug = _slug(name)
        if slug in (".", "..") or (out_dir / slug).resolve().parent != out_dir.resolve():
            raise ValueError(f"compare variant {name!r}: its folder name {slug!r} would not be a folder inside "
                             f"{out_dir}; rename the variant")
        other = seen.get(slug.casefold())
        if other is not None:
            raise ValueError(f"compare variants {other!r} and {name!r} map to the same run folder {out_dir / slug} "
                             "(names are sanitized to letters, digits and _.=-); rename one of them")
        seen[slug.casefold()] = name
        dirs[name] = out_dir / slug
    return dirs


_variant_dirs = variant_dirs


def _checkpoint_epoch(run_dir: Path) -> int | None:
    """The epoch a run holds (None without one): ``last.pt``'s, whatever metrics.jsonl says; for an archived
    run (``finished.json``, no ``last.pt``: :mod:`reldrop.runs.archive`) the marker's."""
    from ..runs.archive import finished_epoch

    return finished_epoch(run_dir)


def _finished(run_dir: Path, epochs: int) -> bool:
    """A run is finished when its checkpoint is: ``last.pt``'s epoch == the configured epochs (metrics.jsonl
    is written before last.pt, so a kill between the two leaves a metrics row the checkpoint does not hold).
    An archived run counts at its marker's epoch."""
    return _checkpoint_epoch(run_dir) == int(epochs)


def _checked_metrics(run_dir: Path, name: str, seed: int) -> list[dict[str, Any]]:
    """The metrics rows of the epochs the run's checkpoint (or finished.json) holds; ValueError when they are
    missing (the run's table row, checkpoint and metrics would disagree)."""
    epoch = _checkpoint_epoch(run_dir)
    rows = read_metrics(run_dir)
    if epoch is None:
        return rows
    rows = [r for r in rows if int(r["epoch"]) <= epoch]
    if not rows or int(rows[-1]["epoch"]) != epoch:
        have = "is missing" if not (run_dir / "metrics.jsonl").is_file() else \
            (f"ends at epoch {rows[-1]['epoch']}" if rows else "is empty")
        holder = "last.pt" if (run_dir / "last.pt").is_file() else "finished.json"
        raise ValueError(f"{run_dir} (variant {name!r}, seed {seed}): {holder} holds epoch {epoch} but metrics.jsonl "
                         f"{have}; its row of the table cannot be built. Restore metrics.jsonl, or move the folder "
                         "away to retrain that run")
    return rows


def _check_archived(run_dir: Path, name: str, seed: int, epochs: int) -> None:
    """An archived run (no last.pt) must hold the epochs asked for: it cannot be trained further."""
    from ..runs.archive import is_archived

    if not is_archived(run_dir):  # a run with its checkpoint can be resumed: nothing to check
        return
    held = _checkpoint_epoch(run_dir)
    if held != epochs:
        raise ValueError(f"{run_dir} (variant {name!r}, seed {seed}) is an archived run (finished.json, no last.pt) "
                         f"of {held} epochs, but {epochs} are asked for; it cannot be trained further without its "
                         "checkpoint: restore last.pt, or move the folder away to retrain that run")


def run_compare(cfg: Mapping[str, Any], *, out: str | Path | None = None, seeds: Sequence[int] | None = None,
                only: Sequence[str] | None = None, quiet: bool = False, data_root: str | None = None,
                plot: bool = True, force: bool = False,
                write: Callable[..., list[str]] | None = None) -> dict[str, Any]:
    """Train all variants × seeds (sequentially, resuming what exists) and summarize them.

    ``force``: take over the stale lock a killed process left in a run folder that has no checkpoint yet
    (runs with a ``last.pt`` are resumed, which takes a stale lock over anyway). ``write``: called as
    ``write(out_dir, rows, runs, cfg, plot=plot)`` once all runs are done, returns the paths it wrote
    (the tables and curves: :func:`reldrop.commands.compare.write_outputs`, which
    :func:`reldrop.commands.compare.run_compare` passes); without it only the run folders and
    ``compare.json`` are written.

    Returns ``{"out", "rows" (summary per variant), "runs" (per run), "files" (what ``write`` wrote)}``.
    """
    from ..runs.archive import mark_finished
    from .loop import train
    from .test_sets import evaluate_test_sets

    test_sets = dict(cfg["compare"].get("test_sets") or {})
    seeds = list(seeds if seeds is not None else cfg["compare"]["seeds"])
    out_dir = Path(out or cfg.get("out") or f"runs/compare-{cfg['name']}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}")
    out_dir.mkdir(parents=True, exist_ok=True)
    variants = expand_variants(cfg)
    if only:
        known = [n for n, _ in variants]
        missing = [o for o in only if o not in known]
        if missing:
            raise ValueError(f"unknown variant(s) {missing}; this config has: {', '.join(known)}")
        variants = [(n, c) for n, c in variants if n in only]
    vdirs = _variant_dirs(out_dir, [n for n, _ in expand_variants(cfg)])  # no two variants share a folder
    # equal-compute variants: a fixed factor scales the epochs now; "auto" ones train last, once the
    # runs they are measured on have finished
    for _, vcfg in variants:
        factor = (vcfg.get("compare") or {}).get("epochs_scale")
        if factor not in (None, "auto"):
            vcfg["train"]["epochs"] = _scaled_epochs(int(vcfg["train"]["epochs"]), float(factor))
    auto = [v for v in variants if (v[1].get("compare") or {}).get("epochs_scale") == "auto"]
    variants = [v for v in variants if v not in auto] + auto
    for name, vcfg in variants:  # refuse before training anything: never mix two configs in one table
        if (vcfg.get("compare") or {}).get("epochs_scale") == "auto":
            continue  # checked once its epochs are known
        for seed in seeds:
            check_run_config(vdirs[name] / f"seed{seed}", {**vcfg, "seed": int(seed)})
    atomic_write_json(out_dir / "compare.json", {"config": cfg, "seeds": seeds, "variants": [n for n, _ in variants]},
                      indent=2, default=str)
    runs: list[dict[str, Any]] = []
    total = len(variants) * len(seeds)
    k = 0
    all_variants = expand_variants(cfg)
    for name, vcfg in variants:
        if (vcfg.get("compare") or {}).get("epochs_scale") == "auto":
            scale = _auto_scale(out_dir, name, vcfg, seeds, all_variants)
            vcfg["train"]["epochs"] = int(scale["epochs"])
            if not quiet:
                print(f"[compare] {name}: epochs_scale auto = {scale['factor']:.3f} ({scale['reference']} vs "
                      f"{scale['baseline']}) -> {vcfg['train']['epochs']} epochs", file=sys.stderr, flush=True)
            for seed in seeds:
                check_run_config(vdirs[name] / f"seed{seed}", {**vcfg, "seed": int(seed)})
        for seed in seeds:
            k += 1
            run_dir = vdirs[name] / f"seed{seed}"
            rcfg = copy.deepcopy(vcfg)
            rcfg["seed"] = int(seed)
            rcfg["out"] = str(run_dir)
            epochs = int(rcfg["train"]["epochs"])
            if not quiet:
                print(f"[compare {k}/{total}] {name} seed {seed} -> {run_dir}", file=sys.stderr, flush=True)
            _check_archived(run_dir, name, seed, epochs)
            if _finished(run_dir, epochs):
                pass
            elif (run_dir / "last.pt").is_file():
                train(rcfg, resume=run_dir, quiet=quiet, data_root=data_root)
            else:
                train(rcfg, quiet=quiet, data_root=data_root, force=force)
            run = {"variant": name, "seed": seed, "run_dir": str(run_dir),
                   "metrics": _checked_metrics(run_dir, name, seed)}
            if test_sets and run["metrics"]:
                run["test_sets"] = evaluate_test_sets(run_dir, rcfg, test_sets, data_root=data_root)
            if (run_dir / "last.pt").is_file() and _finished(run_dir, epochs):
                mark_finished(run_dir)  # test sets cached: the run can now be archived without its checkpoint
            runs.append(run)
    rows = summarize(runs, augs=dict(zip([n for n, _ in variants], _role_augs(variants))))
    files = list(write(out_dir, rows, runs, cfg, plot=plot)) if write is not None else []
    return {"out": str(out_dir), "rows": rows, "runs": runs, "files": files}


def _ms(values: Sequence[float]) -> tuple[float, float]:
    a = np.asarray([v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))], dtype=float)
    if a.size == 0:
        return float("nan"), float("nan")
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


#: per-variant statistics columns of the final test accuracy (:data:`reldrop.stats.GROUP_STATS` but
#: mean and std, which are ``final_test_acc_mean`` / ``_std``)
STAT_KEYS = tuple(k for k in GROUP_STATS if k not in ("mean", "std"))
#: the statistics columns ``test_<name>_acc_<key>`` of each ``compare.test_sets`` entry (no n, no differences)
TEST_SET_STAT_KEYS = tuple(k for k in GROUP_STATS if k != "n" and not k.startswith("diff_"))


def _nan_to_none(v: Any) -> Any:
    return None if isinstance(v, float) and math.isnan(v) else v


def _add_statistics(rows: list[dict[str, Any]], runs: Sequence[Mapping[str, Any]],
                    augs: Mapping[str, str | None] | None) -> None:
    """Add the :data:`STAT_KEYS` columns of final test accuracy (and ``test_<name>_acc_*``) to ``rows``."""
    from ..stats import compare_groups, roles

    names = [r["variant"] for r in rows]
    base, ref, rel = roles(names, [(augs or {}).get(n) for n in names])

    def groups(value) -> dict[str, dict[Any, float | None]]:
        out: dict[str, dict[Any, float | None]] = {n: {} for n in names}
        for r in runs:
            if r["metrics"] and r["variant"] in out:
                out[r["variant"]][r["seed"]] = value(r)
        return out

    final = compare_groups(groups(lambda r: r["metrics"][-1]["test_acc"]), baseline=base, reference=ref,
                           vs_reference=rel)
    for row in rows:
        row.update({k: _nan_to_none(final[row["variant"]][k]) for k in STAT_KEYS})
    extra = [k for r in runs for k in (r.get("test_sets") or {})]
    for ts in dict.fromkeys(extra):
        st = compare_groups(groups(lambda r, ts=ts: (r.get("test_sets") or {}).get(ts)), baseline=base, reference=ref,
                            vs_reference=rel)
        for row in rows:
            s = st[row["variant"]]
            for k in TEST_SET_STAT_KEYS:
                row[f"test_{ts}_acc_{k}"] = _nan_to_none(s[k])


def summarize(runs: Sequence[Mapping[str, Any]], augs: Mapping[str, str | None] | None = None
              ) -> list[dict[str, Any]]:
    """One row per variant: mean and sample std (ddof=1) over seeds of the run-level numbers.

    Plus the statistics of the final test accuracy (:data:`STAT_KEYS`): 95 % CI and paired tests vs
    the baseline and (RelDrop variants) vs Random Erasing; ``augs`` (variant -> ``aug.name``) says
    which is which (without it: by name, "baseline", "RE", "RelDrop...").
    """
    by: dict[str, list[Mapping[str, Any]]] = {}
    for r in runs:
        if r["metrics"]:
            by.setdefault(r["variant"], []).append(r)
    rows = []
    for name, rs in by.items():
        final = [r["metrics"][-1] for r in rs]
        best = [max(m["test_acc"] for m in r["metrics"]) for r in rs]
        row: dict[str, Any] = {"variant": name, "seeds": len(rs), "epochs": final[0]["epoch"]}
        stats = {
            "final_test_acc": [f["test_acc"] for f in final],
            "best_test_acc": best,
            "final_test_macro": [f["test_macro"] for f in final],
            "final_train_acc": [f["train_acc"] for f in final],
            "gap": [f["gap"] for f in final],
            "time_per_epoch": [float(np.mean([m["epoch_time"] for m in r["metrics"]])) for r in rs],
            "aug_time_per_epoch": [float(np.mean([m.get("aug_time", 0.0) for m in r["metrics"]])) for r in rs],
        }
        if all("gap_clean" in f for f in final):
            stats["final_train_clean_acc"] = [f["train_clean_acc"] for f in final]
            stats["gap_clean"] = [f["gap_clean"] for f in final]
        for key, vals in stats.items():
            row[f"{key}_mean"], row[f"{key}_std"] = _ms(vals)
        rows.append(row)
    _add_statistics(rows, runs, augs)
    return rows
