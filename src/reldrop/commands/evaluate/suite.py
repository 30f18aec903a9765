"""The evaluation suite behind ``reldrop evaluate``: for a run loaded with
:func:`reldrop.train.load.load_run`, compute the chosen metrics (pure functions of
:mod:`reldrop.metrics`), write ``<run>/eval/metrics.json`` and figures.

Metrics (names for ``--metrics``):

=============  ==============================================================================
acc            test accuracy and class-mean accuracy (%)
corruption     CIFAR-10-C-style suite (:mod:`reldrop.shift`): clean and mean corruption acc (%)
rra            Relevance Rank Accuracy on the placed-tile benchmark (CIFAR-10 test images on a
               64×64 canvas of other-class tiles; true-label relevance), plus the accuracy there
morf           region perturbation on test images: MoRF, LeRF and random accuracy curves + AUCs
channel_auc    per-layer channel-relevance AUC (App. A.5.1)
heatmaps       Fig. 3-style grid of test images with this run's (and ``compare`` runs') relevance
flipping       point clouds: point flipping (:mod:`reldrop.metrics.flipping`, z+ relevance, 32
               points per step) in relevance and random order, accuracy curves + AUCs
zeroshot       ImageNet models: accuracy on ImageNet-R / -A (200-class masks), AUROC / AUPR on
               ImageNet-O (:func:`reldrop.metrics.zeroshot.evaluate_zeroshot`); needs
               ``zeroshot_root``; not in the defaults
decoy          decoy datasets (``decoy_*``): accuracy on the three test modes (none / same /
               random) and, with the patch present, *relevance on the decoy* (share of positive
               true-label relevance inside the patch, :mod:`reldrop.metrics.decoy`) and RRA
               against the patch mask; ``decoy_heatmaps.png`` (input with decoy, relevance of
               this run and of ``compare`` runs, patch outlined)
=============  ==============================================================================
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch

from ...runs import atomic_write_json
from ...train.load import LoadedRun
from .catalog import EVAL_METHOD, METRICS, EvalContext, Metric, default_metrics

__all__ = ["evaluate_run", "resolve_eval_method"]


def _lrp_gaps(model: Any) -> list[str]:
    """``"path: Type"`` of the layers the zennit LRP presets have no rule for (empty: all covered)."""
    from ...attribution import unwrap_model
    from ...attribution.coverage import lrp_coverage_problems

    return lrp_coverage_problems(unwrap_model(model))


def resolve_eval_method(model: Any, method: str | None, *, gaps: Sequence[str] | None = None) -> str:
    """The attribution preset ``reldrop evaluate`` uses: ``method`` as given, or for ``None``/``"auto"``
    :data:`EVAL_METHOD` (ε-γ-box, the paper's) when its rules cover every layer of ``model``, else the
    model's default preset (:func:`reldrop.attribution.default_method`, e.g. ``cp_lrp`` for a ViT).
    ``gaps``: the model's layers without a zennit LRP rule when the caller has them already."""
    if method not in (None, "auto"):
        return str(method)
    if not (_lrp_gaps(model) if gaps is None else gaps):
        return EVAL_METHOD
    from ...attribution import default_method, unwrap_model

    return default_method(unwrap_model(model), fallback=EVAL_METHOD)


def _not_applicable(metric: Metric, run: LoadedRun, *, patch_size: int, steps: int | None,
                    gaps: Sequence[str] = ()) -> str | None:
    """Why ``metric`` does not apply to ``run`` (None when it does): its ``applies_to``, asked for runs of
    the data it is defined for (a modality mismatch is the caller's error)."""
    if getattr(run.test, "modality", "image") not in metric.modalities or metric.applies_to is None:
        return None
    return metric.applies_to(run, patch_size=patch_size, steps=steps, gaps=gaps)


def _select(run: LoadedRun, metrics: Sequence[str], *, patch_size: int, steps: int | None, skip_inapplicable: bool,
            log: Any, gaps: Sequence[str] = ()) -> tuple[list[str], dict[str, str]]:
    """``(metrics to compute, {skipped metric: why})``; ValueError for unknown or (unless skipped) inapplicable ones."""
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; choose from {', '.join(METRICS)}")
    skipped: dict[str, str] = {}
    for m in metrics:
        why = _not_applicable(METRICS[m], run, patch_size=patch_size, steps=steps, gaps=gaps)
        if why is not None:
            if not skip_inapplicable:
                raise ValueError(f"{m} does not apply to {run.name}: {why}")
            skipped[m] = why
            log(f"[{run.name}] skipping {m}: {why}")
    metrics = [m for m in metrics if m not in skipped]
    modality = getattr(run.test, "modality", "image")
    wrong = [m for m in metrics if modality not in METRICS[m].modalities]
    if wrong:
        raise ValueError(f"metrics {wrong} do not apply to a {modality!r} run; for it use "
                         f"{','.join(default_metrics(modality))}")
    return metrics, skipped


#: what an earlier evaluation's numbers depend on: its metrics are kept only when all of these match
_SAME_EVALUATION = ("run", "checkpoint", "epoch", "method", "options")


def _start_results(run: LoadedRun, json_path: Path, method: str, skipped: dict[str, str],
                   options: dict[str, Any] | None = None, log: Any = None) -> dict[str, Any]:
    """The run's header, merged over the metrics an earlier ``reldrop evaluate`` wrote to ``json_path``
    only when that evaluation used the same checkpoint (file and epoch), method and options: a
    metrics.json never mixes numbers of two checkpoints or settings."""
    results: dict[str, Any] = {"run": str(run.run_dir), "name": run.name, "checkpoint": str(run.checkpoint),
                               "epoch": run.epoch, "model": run.config.get("model", {}).get("name"),
                               "aug": run.config.get("aug", {}).get("name"), "method": method}
    if options is not None:
        results["options"] = options
    if json_path.is_file():  # keep metrics computed earlier with other --metrics selections
        try:
            prev = json.loads(json_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            prev = None
        if isinstance(prev, dict):
            differ = [k for k in _SAME_EVALUATION if k in results and prev.get(k) != results[k]]
            if not differ:
                results = {**prev, **results}
            elif log is not None:
                log(f"[{run.name}] {json_path} held an evaluation with another {', '.join(differ)}; "
                    "replacing it (its metrics are not kept)")
    results.pop("skipped", None)
    if skipped:
        results["skipped"] = skipped
    return results


def evaluate_run(
    run: LoadedRun,
    metrics: Sequence[str] = tuple(METRICS),
    *,
    out_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 128,
    limit: int | None = 1000,
    rra_size: int = 1000,
    patch_size: int = 4,
    steps: int | None = None,
    method: str | None = "auto",
    heatmap_samples: int = 6,
    channel_samples: int = 128,
    compare: Sequence[LoadedRun] = (),
    seed: int = 0,
    log: Any = print,
    skip_inapplicable: bool = False,
    zeroshot_root: str | Path | None = None,
    zeroshot_sets: Sequence[str] = ("r", "a", "o"),
) -> dict[str, Any]:
    """Compute ``metrics`` for ``run``; write ``<out_dir>/metrics.json`` (+ PNGs); return the dict.

    ``limit`` test images (a fixed random sample, seed 0, the same for every run) feed the
    corruption, region-perturbation and channel-AUC metrics (``None`` = the whole test set);
    accuracy always uses the whole test set. Accuracies are in %. ``zeroshot`` reads the
    ImageNet-R/-A/-O folders under ``zeroshot_root`` (``zeroshot_sets`` of ``"r", "a", "o"``); its
    ImageNet-O in-distribution side is the ``limit`` test images of ImageNet-O's classes.
    ``method``: the attribution preset of rra/morf/heatmaps; ``"auto"`` (default) is
    ``epsilon_gamma_box`` where its rules cover the model, else the model's default preset
    (``cp_lrp`` for a ViT) — see :func:`resolve_eval_method`; the one used is ``metrics.json``'s ``method``.

    ``metrics.json`` is rewritten (atomically) after every finished metric, so a later failure or a
    kill keeps what was computed. ``skip_inapplicable=True`` (the CLI's default selection) skips the
    metrics that do not apply to this run (e.g. corruption on 1-channel digits) with a note, listed
    under ``"skipped"``; otherwise such a metric is a ValueError. One record per metric:
    :data:`reldrop.commands.evaluate.catalog.METRICS`.
    """
    # the layers zennit has no LRP rule for decide both "auto" and channel_auc's applicability: found once
    gaps = _lrp_gaps(run.model) if method in (None, "auto") or "channel_auc" in metrics else []
    metrics, skipped = _select(run, metrics, patch_size=patch_size, steps=steps,
                               skip_inapplicable=skip_inapplicable, log=log, gaps=gaps)
    method = resolve_eval_method(run.model, method, gaps=gaps)
    dev = torch.device(device)
    out = Path(out_dir) if out_dir is not None else run.run_dir / "eval"
    out.mkdir(parents=True, exist_ok=True)
    ctx = EvalContext(run=run, model=run.model.to(dev).eval(), dev=dev, out=out, compare=compare,
                      batch_size=batch_size, limit=limit, rra_size=rra_size, patch_size=patch_size, steps=steps,
                      method=method, heatmap_samples=heatmap_samples, channel_samples=channel_samples, seed=seed,
                      zeroshot_root=zeroshot_root, zeroshot_sets=zeroshot_sets, log=log)
    json_path = out / "metrics.json"
    # what the numbers depend on, so a later reader (or script) can tell whether they are reusable
    options = {"limit": limit, "rra_size": rra_size, "patch_size": patch_size, "steps": steps,
               "channel_samples": channel_samples, "heatmap_samples": heatmap_samples, "seed": seed}
    results = _start_results(run, json_path, method, skipped, options, log)
    atomic_write_json(json_path, results, indent=1)
    for name, metric in METRICS.items():
        if name in metrics:
            results[name] = metric.function(ctx)
            atomic_write_json(json_path, results, indent=1)  # after every metric: a later failure keeps it
    return results
