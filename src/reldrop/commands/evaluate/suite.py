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
from ...train.load import LoadedRun, load_run
from .catalog import DECOY_PREFIX, METRIC_FUNCTIONS, RRA_CANVAS, EvalContext

__all__ = ["METRICS", "DEFAULT_METRICS", "LoadedRun", "load_run", "evaluate_run", "DECOY_PREFIX", "resolve_eval_method",
           "EVAL_METHOD"]

METRICS = ("acc", "corruption", "rra", "morf", "channel_auc", "heatmaps", "flipping", "zeroshot", "decoy")
#: what ``reldrop evaluate`` computes when ``--metrics`` is not given, per modality
DEFAULT_METRICS = {"image": ("acc", "corruption", "rra", "morf", "channel_auc", "heatmaps"),
                   "points": ("acc", "flipping")}
IMAGE_METRICS = ("corruption", "rra", "morf", "channel_auc", "heatmaps", "zeroshot", "decoy")


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

#: the paper's evaluation preset (Fig. 3, RRA, MoRF); ``method="auto"`` uses it where it has a rule for every layer
EVAL_METHOD = "epsilon_gamma_box"


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


def _takes_canvas(model: Any, channels: int) -> str | None:
    """None when ``model`` accepts a ``(1, channels, 64, 64)`` input, else the error it raised
    (fixed-size models such as a ViT built for 32×32)."""
    from ...attribution.state import preserve_model_state

    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    with preserve_model_state(model), torch.no_grad():
        model.eval()
        try:
            model(torch.zeros(1, channels, RRA_CANVAS, RRA_CANVAS, device=device))
        except Exception as err:  # any failure means: this model cannot take the canvases
            return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    return None


def _not_applicable(metric: str, run: LoadedRun, *, patch_size: int, steps: int | None,
                    gaps: Sequence[str] = ()) -> str | None:
    """Why ``metric`` does not apply to ``run`` (None when it does). Modality mismatches are handled
    by the caller's error; this covers image runs the image metrics cannot take."""
    info = run.test
    if getattr(info, "modality", "image") != "image" or metric not in IMAGE_METRICS:
        return None
    shape = tuple(getattr(info, "input_shape", ()) or ())
    channels = shape[0] if shape else None
    if metric == "corruption":
        if channels != 3:
            return f"the corruptions are defined for RGB images, this run's images have {channels} channel(s)"
        if info.mean is None or info.std is None:
            return "needs an image dataset with known mean/std normalization"
    if metric == "rra":
        data_name = run.config.get("data", {}).get("name")
        if channels != 3 or (data_name != "cifar10" and tuple(info.class_names or ()) != CIFAR10_CLASSES):
            return (f"the placed-tile benchmark is built from CIFAR-10 images and classes; this run is "
                    f"{data_name!r} with {info.num_classes} classes and {channels}-channel images")
        err = _takes_canvas(run.model, channels)
        if err is not None:
            return (f"the placed-tile benchmark shows {RRA_CANVAS}x{RRA_CANVAS} canvases and this model does not "
                    f"take that input size ({err})")
    if metric == "channel_auc":
        if gaps:
            more = f" and {len(gaps) - 4} more" if len(gaps) > 4 else ""
            return (f"the channel-relevance AUC uses {EVAL_METHOD} LRP through zennit, which has no rule for "
                    f"{', '.join(gaps[:4])}{more}")
    if metric == "decoy" and not str(run.config.get("data", {}).get("name", "")).startswith(DECOY_PREFIX):
        return (f"needs a decoy dataset ({DECOY_PREFIX}*), this run used "
                f"{run.config.get('data', {}).get('name')!r}")
    if metric == "morf" and steps is not None and len(shape) == 3:
        patches = -(-shape[1] // patch_size) * -(-shape[2] // patch_size)
        if steps > patches:
            return (f"--steps {steps} exceeds the {patches} patches of {shape[1]}x{shape[2]} images with "
                    f"--patch-size {patch_size}; pass --steps <= {patches} (or --steps 0 for all)")
    return None


def _select(run: LoadedRun, metrics: Sequence[str], *, patch_size: int, steps: int | None, skip_inapplicable: bool,
            log: Any, gaps: Sequence[str] = ()) -> tuple[list[str], dict[str, str]]:
    """``(metrics to compute, {skipped metric: why})``; ValueError for unknown or (unless skipped) inapplicable ones."""
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; choose from {', '.join(METRICS)}")
    skipped: dict[str, str] = {}
    for m in metrics:
        why = _not_applicable(m, run, patch_size=patch_size, steps=steps, gaps=gaps)
        if why is not None:
            if not skip_inapplicable:
                raise ValueError(f"{m} does not apply to {run.name}: {why}")
            skipped[m] = why
            log(f"[{run.name}] skipping {m}: {why}")
    metrics = [m for m in metrics if m not in skipped]
    modality = getattr(run.test, "modality", "image")
    wrong = [m for m in metrics if (m in IMAGE_METRICS) != (modality == "image") and m != "acc"]
    if wrong:
        raise ValueError(f"metrics {wrong} do not apply to a {modality!r} run; for it use "
                         f"{','.join(DEFAULT_METRICS.get(modality, ('acc',)))}")
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
    metrics: Sequence[str] = METRICS,
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
    under ``"skipped"``; otherwise such a metric is a ValueError. One function per metric:
    :data:`reldrop.commands.evaluate.catalog.METRIC_FUNCTIONS`.
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
    for name, fn in METRIC_FUNCTIONS.items():
        if name in metrics:
            results[name] = fn(ctx)
            atomic_write_json(json_path, results, indent=1)  # after every metric: a later failure keeps it
    return results
