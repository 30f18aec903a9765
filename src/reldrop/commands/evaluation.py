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
import time
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn

from ..runs import atomic_write_json
from ..train.load import LoadedRun, load_run

__all__ = ["METRICS", "DEFAULT_METRICS", "LoadedRun", "load_run", "evaluate_run"]

METRICS = ("acc", "corruption", "rra", "morf", "channel_auc", "heatmaps", "flipping", "zeroshot", "decoy")
#: what ``reldrop evaluate`` computes when ``--metrics`` is not given, per modality
DEFAULT_METRICS = {"image": ("acc", "corruption", "rra", "morf", "channel_auc", "heatmaps"),
                   "points": ("acc", "flipping")}
IMAGE_METRICS = ("corruption", "rra", "morf", "channel_auc", "heatmaps", "zeroshot", "decoy")
#: the decoy metric applies to datasets whose name starts with this
DECOY_PREFIX = "decoy_"


def _test_batches(info: Any, n: int | None, batch_size: int, device: torch.device, seed: int = 0):
    """Batches of the first ``n`` test samples of a fixed seeded permutation (all when ``n`` is None).

    Test sets are often stored sorted by class, so a prefix would hold one class only; the
    permutation makes every ``n`` a class-mixed sample, the same for every run.
    """
    ds = info.dataset
    total = len(ds) if n is None else min(n, len(ds))
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:total]
    if n is None:
        order = order.sort().values
    if hasattr(ds, "get_batch"):
        for s in range(0, total, batch_size):
            yield ds.get_batch(order[s:s + batch_size], device=device)
        return
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, order.tolist()), batch_size=batch_size)
    for x, y in loader:
        yield x.to(device).float(), torch.as_tensor(y).to(device).long()


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _not_applicable(metric: str, run: LoadedRun, *, patch_size: int, steps: int | None) -> str | None:
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
    if metric == "decoy" and not str(run.config.get("data", {}).get("name", "")).startswith(DECOY_PREFIX):
        return (f"needs a decoy dataset ({DECOY_PREFIX}*), this run used "
                f"{run.config.get('data', {}).get('name')!r}")
    if metric == "morf" and steps is not None and len(shape) == 3:
        patches = -(-shape[1] // patch_size) * -(-shape[2] // patch_size)
        if steps > patches:
            return (f"--steps {steps} exceeds the {patches} patches of {shape[1]}x{shape[2]} images with "
                    f"--patch-size {patch_size}; pass --steps <= {patches} (or --steps 0 for all)")
    return None


def _relevance_kwargs(method: str, info: Any) -> dict[str, Any]:
    if method == "epsilon_gamma_box":
        if info.mean is None or info.std is None:
            return {"low": -3.0, "high": 3.0}
        return {"mean": info.mean, "std": info.std}
    return {}


def _decoy_metrics(run: LoadedRun, compare: Sequence[LoadedRun], out: Path, dev: torch.device, *, batch_size: int,
                   limit: int | None, method: str, heatmap_samples: int, get_attributor: Any) -> dict[str, Any]:
    """Accuracy per decoy test mode; relevance share on the patch and RRA vs its mask (modes with a patch)."""
    from ..data import build_dataset
    from ..data import data_root as resolve_root
    from ..metrics import evaluate_accuracy, relevance_rank_accuracy, summarize_rra
    from ..metrics.decoy import decoy_relevance_share, summarize_decoy_share

    data_cfg = run.config.get("data", {})
    if not str(data_cfg.get("name", "")).startswith(DECOY_PREFIX):
        raise ValueError(f"metric 'decoy' needs a decoy dataset ({DECOY_PREFIX}*), this run used "
                         f"{data_cfg.get('name')!r}")
    root = resolve_root(data_cfg.get("root"))
    kwargs = dict(data_cfg.get("kwargs") or {})
    model = run.model
    res: dict[str, Any] = {"method": method, "target": "label"}
    for mode in ("none", "same", "random"):
        info = build_dataset(data_cfg["name"], root, "test", train_transform=False, **{**kwargs, "decoy_test": mode})
        acc = evaluate_accuracy(model, _test_batches(info, None, 512, dev), device=dev, num_classes=info.num_classes)
        entry: dict[str, Any] = {"accuracy": 100 * acc["accuracy"], "n": acc["n"]}
        if mode != "none":
            masks_all = info.extra["decoy_mask"]
            ds = info.dataset
            total = len(ds) if limit is None else min(limit, len(ds))
            order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))[:total]
            shares, valids, rra, masks = [], [], [], []
            for s in range(0, total, batch_size):
                idx = order[s:s + batch_size]
                x, y = ds.get_batch(idx, device=dev)
                m = masks_all[idx].to(dev)
                r = get_attributor()(x, y)
                sh, va = decoy_relevance_share(r, m)
                shares.append(sh)
                valids.append(va)
                rra.append(relevance_rank_accuracy(r, m))
                masks.append(m)
            share = summarize_decoy_share(torch.cat(shares), torch.cat(valids))
            rr = summarize_rra(torch.cat(rra), torch.cat(masks))
            entry.update({"relevance_share": 100 * share["mean"], "n_relevance": share["n_valid"],
                          "n_skipped": share["n_skipped"], "rra": 100 * rr.mean,
                          "chance": 100 * float(info.extra["chance"])})
            if mode == "same":
                from ..viz.heatmaps import heatmap_grid_for_models

                idx = order[:heatmap_samples]
                x, y = ds.get_batch(idx, device=dev)
                models = {run.name: model}
                models.update({c.name: c.model.to(dev).eval() for c in compare})
                heatmap_grid_for_models(models, x, y, out / "decoy_heatmaps.png", class_names=info.class_names,
                                        mean=info.mean, std=info.std, method=method,
                                        masks=masks_all[idx].to(dev),
                                        title=f"decoy as in training (outlined): {method} relevance, red +, blue -")
        res[mode] = entry
    return res


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
    method: str = "epsilon_gamma_box",
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

    ``metrics.json`` is rewritten (atomically) after every finished metric, so a later failure or a
    kill keeps what was computed. ``skip_inapplicable=True`` (the CLI's default selection) skips the
    metrics that do not apply to this run (e.g. corruption on 1-channel digits) with a note, listed
    under ``"skipped"``; otherwise such a metric is a ValueError.
    """
    from ..attribution import Attributor
    from ..metrics import evaluate_accuracy, relevance_rank_accuracy, summarize_rra
    from ..metrics.perturbation import RegionPerturbationResult, region_perturbation

    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; choose from {', '.join(METRICS)}")
    skipped: dict[str, str] = {}
    for m in metrics:
        why = _not_applicable(m, run, patch_size=patch_size, steps=steps)
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
    dev = torch.device(device)
    out = Path(out_dir) if out_dir is not None else run.run_dir / "eval"
    out.mkdir(parents=True, exist_ok=True)
    info, model = run.test, run.model.to(dev).eval()
    results: dict[str, Any] = {"run": str(run.run_dir), "name": run.name, "checkpoint": str(run.checkpoint),
                               "epoch": run.epoch, "model": run.config.get("model", {}).get("name"),
                               "aug": run.config.get("aug", {}).get("name"), "method": method}
    json_path = out / "metrics.json"
    if json_path.is_file():  # keep metrics computed earlier with other --metrics selections
        try:
            prev = json.loads(json_path.read_text())
            results = {**prev, **results}
        except json.JSONDecodeError:
            pass
    results.pop("skipped", None)
    if skipped:
        results["skipped"] = skipped

    def save() -> None:  # after every finished metric: a later failure or a kill keeps it
        atomic_write_json(json_path, results, indent=1)

    save()
    rel_kw = _relevance_kwargs(method, info)
    attributor = None

    def get_attributor() -> Any:
        nonlocal attributor
        if attributor is None:
            attributor = Attributor(model, method, **rel_kw)
        return attributor

    def timed(name: str):
        log(f"[{run.name}] {name} ...")
        return time.perf_counter()

    if "acc" in metrics:
        t = timed("acc")
        acc = evaluate_accuracy(model, _test_batches(info, None, 512, dev), device=dev, num_classes=info.num_classes)
        results["acc"] = {"accuracy": 100 * acc["accuracy"], "class_accuracy": 100 * acc["class_accuracy"],
                          "n": acc["n"], "seconds": time.perf_counter() - t}
    save()
    if "corruption" in metrics:
        from ..shift import corruption_accuracy

        if info.mean is None or info.std is None:
            raise ValueError("corruption needs an image dataset with known mean/std normalization")
        t = timed("corruption")
        c = corruption_accuracy(model, _test_batches(info, limit, batch_size, dev), mean=info.mean, std=info.std,
                                device=dev, seed=seed)
        results["corruption"] = {"clean": 100 * c["clean"], "mean": 100 * c["mean"],
                                 "per_name": {k: 100 * v for k, v in c["per_name"].items()},
                                 "per_corruption": {k: {str(s): 100 * a for s, a in v.items()}
                                                    for k, v in c["per_corruption"].items()},
                                 "n": c["n"], "seconds": time.perf_counter() - t}
    save()
    if "rra" in metrics:
        from ..data.placed_tiles import load_placed_tiles
        from ..data.root import data_root

        t = timed("rra")
        root = run.config.get("data", {}).get("root")
        bench = load_placed_tiles(data_root(root), "test", size=rra_size)
        scores, masks, hits, shown = [], [], 0, None
        for x, y, m in bench.batches(batch_size, mean=info.mean, std=info.std, device=dev):
            r = get_attributor()(x, y)
            scores.append(relevance_rank_accuracy(r, m))
            masks.append(m)
            with torch.no_grad():
                hits += int((model(x).argmax(1) == y).sum())
            if shown is None:
                shown = (x[:heatmap_samples], y[:heatmap_samples], m[:heatmap_samples], r[:heatmap_samples])
        s = summarize_rra(torch.cat(scores), torch.cat(masks))
        results["rra"] = {"mean": 100 * s.mean, "n_valid": s.n_valid, "n_skipped": s.n_skipped,
                          "chance": 100 * float(bench.masks.float().mean()),
                          "placed_accuracy": 100 * hits / len(bench), "benchmark": "cifar10 placed tiles 64x64, seed 1",
                          "seconds": time.perf_counter() - t}
        if shown is not None:
            from ..viz.heatmaps import plot_heatmap_grid

            xs, ys, ms, rs = shown
            plot_heatmap_grid(xs, {run.name: rs}, out / "rra_heatmaps.png",
                              row_labels=[bench.class_names[int(c)] for c in ys], mean=info.mean, std=info.std,
                              masks=ms, title="placed-tile benchmark: relevance, GT tile outlined")
    save()
    if "morf" in metrics:
        t = timed("morf")
        parts: dict[str, list[RegionPerturbationResult]] = {"morf": [], "lerf": [], "random": []}
        g = torch.Generator(device=dev).manual_seed(seed)
        for x, y in _test_batches(info, limit, batch_size, dev):
            r = get_attributor()(x, y)
            for order in parts:
                parts[order].append(region_perturbation(model, x, y, r, order=order, patch_size=patch_size,
                                                        steps=steps, generator=g))
        morf: dict[str, Any] = {"patch_size": patch_size, "seconds": 0.0}
        for order, ps in parts.items():
            res = RegionPerturbationResult.concat(ps)
            morf[order] = {"accuracy_auc": 100 * res.accuracy_auc(), "drop_auc": res.drop_auc(),
                           "fractions": res.fractions.tolist(), "accuracy": (100 * res.accuracy_curve).tolist(),
                           "drop": res.drop_curve.tolist()}
        morf["n"] = int(sum(p.scores.shape[0] for p in parts["morf"]))
        morf["seconds"] = time.perf_counter() - t
        results["morf"] = morf
        from ..viz.curves import plot_perturbation_curves

        plot_perturbation_curves({f"{run.name} {o.upper()}": (morf[o]["fractions"], morf[o]["accuracy"])
                                  for o in ("morf", "lerf", "random")}, out / "perturbation.png",
                                 ylabel="test accuracy (%)",
                                 title=f"region perturbation, {patch_size}x{patch_size} patches, {method}")
    save()
    if "channel_auc" in metrics:
        from ..metrics.channel_auc import layer_channel_auc

        t = timed("channel_auc")
        ch = layer_channel_auc(model, _test_batches(info, channel_samples, 64, dev), device=dev,
                               **_relevance_kwargs("epsilon_gamma_box", info))
        results["channel_auc"] = {"layers": ch, "seconds": time.perf_counter() - t}
    save()
    if "heatmaps" in metrics:
        from ..viz.heatmaps import heatmap_grid_for_models

        t = timed("heatmaps")
        x, y = next(_test_batches(info, heatmap_samples, heatmap_samples, dev))
        models = {run.name: model}
        models.update({c.name: c.model.to(dev).eval() for c in compare})
        path = heatmap_grid_for_models(models, x, y, out / "heatmaps.png", class_names=info.class_names,
                                       mean=info.mean, std=info.std, method=method,
                                       title=f"LRP relevance ({method}): red +, blue -")
        results["heatmaps"] = {"path": str(path), "seconds": time.perf_counter() - t}
    save()
    if "decoy" in metrics:
        t = timed("decoy")
        results["decoy"] = _decoy_metrics(run, compare, out, dev, batch_size=batch_size, limit=limit, method=method,
                                          heatmap_samples=heatmap_samples, get_attributor=get_attributor)
        results["decoy"]["seconds"] = time.perf_counter() - t
        save()
    if "flipping" in metrics:
        from ..metrics.flipping import point_flipping_dataset

        t = timed("flipping")
        flips = {}
        for mode in ("fixed", "random"):
            res = point_flipping_dataset(model, _test_batches(info, limit, batch_size, dev), mode=mode,
                                         relevance="zplus_flat", step_size=32, device=dev, seed=seed)
            d = res.to_dict()
            d["accuracy_auc"] = 100 * d["auc"]
            d["accuracy"] = [100 * a for a in d["accuracy"]]
            flips[mode] = d
        results["flipping"] = {**flips, "seconds": time.perf_counter() - t}
        from ..viz.curves import plot_perturbation_curves

        plot_perturbation_curves({f"{run.name} {m}": (flips[m]["fractions"], flips[m]["accuracy"]) for m in flips},
                                 out / "flipping.png", ylabel="test accuracy (%)", xlabel="fraction of points removed",
                                 title="point flipping (z+ relevance, 32 points per step)")
    if "zeroshot" in metrics:
        results["zeroshot"] = _zeroshot(run, model, dev, zeroshot_root, zeroshot_sets, limit, batch_size, timed)
    save()
    return results


def _zeroshot(run: LoadedRun, model: nn.Module, dev: torch.device, root: str | Path | None,
              sets: Sequence[str], limit: int | None, batch_size: int, timed: Any) -> dict[str, Any]:
    """The ``zeroshot`` metric of :func:`evaluate_run` (the model's eval transform on the zero-shot folders)."""
    from ..data.imagefolder import ImageFolderDataset
    from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD, imagenet_eval_transform
    from ..metrics.zeroshot import evaluate_zeroshot

    if root is None:
        raise ValueError("the zeroshot metric needs --zeroshot-root DIR (the folder holding imagenet-r, "
                         "imagenet-a, imagenet-o)")
    info = run.test
    base = getattr(info.dataset, "dataset", info.dataset)  # a Subset's dataset
    if isinstance(base, ImageFolderDataset) and base.transform is not None:
        tf = base.transform
    else:
        tf = imagenet_eval_transform(int(info.input_shape[-1]), info.mean or IMAGENET_MEAN, info.std or IMAGENET_STD)
    t = timed("zeroshot")
    res: dict[str, Any] = dict(evaluate_zeroshot(model, root, info.class_names, _test_batches(info, limit, batch_size,
                                                                                             dev),
                                                 transform=tf, sets=sets, batch_size=batch_size, device=dev))
    res.update(root=str(root), seconds=time.perf_counter() - t)
    return res
