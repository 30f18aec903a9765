"""The metrics of ``reldrop evaluate``: one :class:`Metric` record each (:data:`METRICS`), whose
function ``fn(ctx) -> dict`` gives the metric's entry of ``metrics.json`` (accuracies in %, with its
``seconds``); :mod:`reldrop.commands.evaluate.suite` runs them.

The numbers come from the pure functions of :mod:`reldrop.metrics` (and :mod:`reldrop.shift`);
what is here is choosing the data, the relevance method and the figures for a loaded run.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn as nn

from ...metrics import evaluate_accuracy, relevance_rank_accuracy, summarize_rra
from ...train.load import LoadedRun

__all__ = ["Metric", "METRICS", "default_metrics", "EvalContext", "test_batches", "relevance_kwargs", "DECOY_PREFIX",
           "RRA_CANVAS", "EVAL_METHOD"]

#: the decoy metric applies to datasets whose name starts with this
DECOY_PREFIX = "decoy_"
#: the RRA benchmark's canvas side (CIFAR-10 tiles placed on a 64×64 canvas)
RRA_CANVAS = 64
#: the paper's evaluation preset (Fig. 3, RRA, MoRF); ``method="auto"`` uses it where it has a rule for every layer
EVAL_METHOD = "epsilon_gamma_box"

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def test_batches(info: Any, n: int | None, batch_size: int, device: torch.device, seed: int = 0
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
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


def relevance_kwargs(method: str, info: Any) -> dict[str, Any]:
    """Extra attribution kwargs of ``method`` for the run's data (the input bounds of the box rule)."""
    if method == "epsilon_gamma_box":
        if info.mean is None or info.std is None:
            return {"low": -3.0, "high": 3.0}
        return {"mean": info.mean, "std": info.std}
    return {}


@dataclass
class EvalContext:
    """One evaluation: the run, its model on the device, the output folder and the options."""

    run: LoadedRun
    model: nn.Module
    dev: torch.device
    out: Path
    compare: Sequence[LoadedRun] = ()
    batch_size: int = 128
    limit: int | None = 1000
    rra_size: int = 1000
    patch_size: int = 4
    steps: int | None = None
    method: str = "epsilon_gamma_box"
    heatmap_samples: int = 6
    channel_samples: int = 128
    seed: int = 0
    zeroshot_root: str | Path | None = None
    zeroshot_sets: Sequence[str] = ("r", "a", "o")
    log: Callable[[str], Any] = print
    _attributor: Any = field(default=None, repr=False)

    @property
    def info(self) -> Any:
        return self.run.test

    def attributor(self) -> Any:
        """The run's :class:`reldrop.attribution.Attributor` for ``method`` (built on first use)."""
        if self._attributor is None:
            from ...attribution import Attributor

            self._attributor = Attributor(self.model, self.method, **relevance_kwargs(self.method, self.info))
        return self._attributor

    def data_root(self) -> Path:
        """The dataset root the run's test data came from (``--data-root`` wins over the config's
        ``data.root``, then ``$RELDROP_DATA_DIR``): extra test sets (RRA tiles, decoy modes) load from it."""
        if self.run.data_root is not None:
            return Path(self.run.data_root)
        from ...data.root import data_root

        return data_root(self.run.config.get("data", {}).get("root"))

    def timed(self, name: str) -> float:
        self.log(f"[{self.run.name}] {name} ...")
        return time.perf_counter()

    def models(self) -> dict[str, nn.Module]:
        """This run's model and the ``compare`` runs' models, on the device, in eval mode."""
        models = {self.run.name: self.model}
        models.update({c.name: c.model.to(self.dev).eval() for c in self.compare})
        return models


def accuracy_metric(ctx: EvalContext) -> dict[str, Any]:
    t = ctx.timed("acc")
    info = ctx.info
    acc = evaluate_accuracy(ctx.model, test_batches(info, None, 512, ctx.dev), device=ctx.dev,
                            num_classes=info.num_classes)
    return {"accuracy": 100 * acc["accuracy"], "class_accuracy": 100 * acc["class_accuracy"],
            "n": acc["n"], "seconds": time.perf_counter() - t}


def corruption_metric(ctx: EvalContext) -> dict[str, Any]:
    from ...shift import corruption_accuracy

    info = ctx.info
    if info.mean is None or info.std is None:
        raise ValueError("corruption needs an image dataset with known mean/std normalization")
    t = ctx.timed("corruption")
    c: dict[str, Any] = corruption_accuracy(ctx.model, test_batches(info, ctx.limit, ctx.batch_size, ctx.dev), mean=info.mean,
                                            std=info.std, device=ctx.dev, seed=ctx.seed)
    return {"clean": 100 * c["clean"], "mean": 100 * c["mean"],
            "per_name": {k: 100 * v for k, v in c["per_name"].items()},
            "per_corruption": {k: {str(s): 100 * a for s, a in v.items()} for k, v in c["per_corruption"].items()},
            "n": c["n"], "seconds": time.perf_counter() - t}


def rra_metric(ctx: EvalContext) -> dict[str, Any]:
    from ...data.placed_tiles import load_placed_tiles

    t = ctx.timed("rra")
    info, model, n_show = ctx.info, ctx.model, ctx.heatmap_samples
    data = ctx.run.config.get("data", {})
    path = (data.get("kwargs") or {}).get("path") if str(data.get("name", "")).endswith("cifar10") else None
    bench = load_placed_tiles(ctx.data_root(), "test", size=ctx.rra_size, canvas=RRA_CANVAS, path=path)
    scores, masks, hits, shown = [], [], 0, None
    for x, y, m in bench.batches(ctx.batch_size, mean=info.mean, std=info.std, device=ctx.dev):
        r = ctx.attributor()(x, y)
        scores.append(relevance_rank_accuracy(r, m))
        masks.append(m)
        with torch.no_grad():
            hits += int((model(x).argmax(1) == y).sum())
        if shown is None:
            shown = (x[:n_show], y[:n_show], m[:n_show], r[:n_show])
    s = summarize_rra(torch.cat(scores), torch.cat(masks))
    res = {"mean": 100 * s.mean, "n_valid": s.n_valid, "n_skipped": s.n_skipped,
           "chance": 100 * float(bench.masks.float().mean()),
           "placed_accuracy": 100 * hits / len(bench), "benchmark": "cifar10 placed tiles 64x64, seed 1",
           "seconds": time.perf_counter() - t}
    if shown is not None:
        from ...viz.heatmaps import plot_heatmap_grid

        xs, ys, ms, rs = shown
        plot_heatmap_grid(xs, {ctx.run.name: rs}, ctx.out / "rra_heatmaps.png",
                          row_labels=[bench.class_names[int(c)] for c in ys], mean=info.mean, std=info.std,
                          masks=ms, title="placed-tile benchmark: relevance, GT tile outlined")
    return res


def morf_metric(ctx: EvalContext) -> dict[str, Any]:
    from ...metrics.perturbation import RegionPerturbationResult, region_perturbation
    from ...viz.curves import plot_perturbation_curves

    t = ctx.timed("morf")
    parts: dict[str, list[RegionPerturbationResult]] = {"morf": [], "lerf": [], "random": []}
    g = torch.Generator(device=ctx.dev).manual_seed(ctx.seed)
    for x, y in test_batches(ctx.info, ctx.limit, ctx.batch_size, ctx.dev):
        r = ctx.attributor()(x, y)
        for order in parts:
            parts[order].append(region_perturbation(ctx.model, x, y, r, order=order, patch_size=ctx.patch_size,
                                                    steps=ctx.steps, generator=g))
    morf: dict[str, Any] = {"patch_size": ctx.patch_size, "seconds": 0.0}
    for order, ps in parts.items():
        res = RegionPerturbationResult.concat(ps)
        morf[order] = {"accuracy_auc": 100 * res.accuracy_auc(), "drop_auc": res.drop_auc(),
                       "fractions": res.fractions.tolist(), "accuracy": (100 * res.accuracy_curve).tolist(),
                       "drop": res.drop_curve.tolist()}
    morf["n"] = int(sum(p.scores.shape[0] for p in parts["morf"]))
    morf["seconds"] = time.perf_counter() - t
    plot_perturbation_curves({f"{ctx.run.name} {o.upper()}": (morf[o]["fractions"], morf[o]["accuracy"])
                              for o in ("morf", "lerf", "random")}, ctx.out / "perturbation.png",
                             ylabel="test accuracy (%)",
                             title=f"region perturbation, {ctx.patch_size}x{ctx.patch_size} patches, {ctx.method}")
    return morf


def channel_auc_metric(ctx: EvalContext) -> dict[str, Any]:
    from ...metrics.channel_auc import layer_channel_auc

    t = ctx.timed("channel_auc")
    ch = layer_channel_auc(ctx.model, test_batches(ctx.info, ctx.channel_samples, 64, ctx.dev), device=ctx.dev,
                           **relevance_kwargs("epsilon_gamma_box", ctx.info))
    return {"layers": ch, "seconds": time.perf_counter() - t}


def heatmaps_metric(ctx: EvalContext) -> dict[str, Any]:
    from ...viz.heatmaps import heatmap_grid_for_models

    t = ctx.timed("heatmaps")
    info = ctx.info
    x, y = next(test_batches(info, ctx.heatmap_samples, ctx.heatmap_samples, ctx.dev))
    path = heatmap_grid_for_models(ctx.models(), x, y, ctx.out / "heatmaps.png", class_names=info.class_names,
                                   mean=info.mean, std=info.std, method=ctx.method,
                                   title=f"LRP relevance ({ctx.method}): red +, blue -")
    return {"path": str(path), "seconds": time.perf_counter() - t}


def _decoy_mode(ctx: EvalContext, info: Any) -> dict[str, Any]:
    """Relevance share on the patch and RRA vs its mask for one decoy test mode with a patch."""
    from ...metrics.decoy import decoy_relevance_share, summarize_decoy_share

    masks_all, ds = info.extra["decoy_mask"], info.dataset
    total = len(ds) if ctx.limit is None else min(ctx.limit, len(ds))
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))[:total]
    shares, valids, rra, masks = [], [], [], []
    for s in range(0, total, ctx.batch_size):
        idx = order[s:s + ctx.batch_size]
        x, y = ds.get_batch(idx, device=ctx.dev)
        m = masks_all[idx].to(ctx.dev)
        r = ctx.attributor()(x, y)
        sh, va = decoy_relevance_share(r, m)
        shares.append(sh)
        valids.append(va)
        rra.append(relevance_rank_accuracy(r, m))
        masks.append(m)
    share = summarize_decoy_share(torch.cat(shares), torch.cat(valids))
    rr = summarize_rra(torch.cat(rra), torch.cat(masks))
    return {"relevance_share": 100 * share["mean"], "n_relevance": share["n_valid"],
            "n_skipped": share["n_skipped"], "rra": 100 * rr.mean, "chance": 100 * float(info.extra["chance"]),
            "_order": order}


def decoy_metric(ctx: EvalContext) -> dict[str, Any]:
    """Accuracy per decoy test mode; relevance share on the patch and RRA vs its mask (modes with a patch)."""
    from ...data import build_dataset

    t = ctx.timed("decoy")
    data_cfg = ctx.run.config.get("data", {})
    if not str(data_cfg.get("name", "")).startswith(DECOY_PREFIX):
        raise ValueError(f"metric 'decoy' needs a decoy dataset ({DECOY_PREFIX}*), this run used "
                         f"{data_cfg.get('name')!r}")
    root = ctx.data_root()
    kwargs = dict(data_cfg.get("kwargs") or {})
    res: dict[str, Any] = {"method": ctx.method, "target": "label"}
    for mode in ("none", "same", "random"):
        info = build_dataset(data_cfg["name"], root, "test", train_transform=False, **{**kwargs, "decoy_test": mode})
        acc = evaluate_accuracy(ctx.model, test_batches(info, None, 512, ctx.dev), device=ctx.dev,
                                num_classes=info.num_classes)
        entry: dict[str, Any] = {"accuracy": 100 * acc["accuracy"], "n": acc["n"]}
        if mode != "none":
            entry.update(_decoy_mode(ctx, info))
            order = entry.pop("_order")
            if mode == "same":
                from ...viz.heatmaps import heatmap_grid_for_models

                idx = order[:ctx.heatmap_samples]
                dataset: Any = info.dataset  # a decoy dataset: in memory, with get_batch
                x, y = dataset.get_batch(idx, device=ctx.dev)
                heatmap_grid_for_models(ctx.models(), x, y, ctx.out / "decoy_heatmaps.png",
                                        class_names=info.class_names, mean=info.mean, std=info.std,
                                        method=ctx.method, masks=info.extra["decoy_mask"][idx].to(ctx.dev),
                                        title=f"decoy as in training (outlined): {ctx.method} relevance, red +, blue -")
        res[mode] = entry
    res["seconds"] = time.perf_counter() - t
    return res


def flipping_metric(ctx: EvalContext) -> dict[str, Any]:
    from ...metrics.flipping import point_flipping_dataset
    from ...viz.curves import plot_perturbation_curves

    t = ctx.timed("flipping")
    flips = {}
    for mode in ("fixed", "random"):
        res = point_flipping_dataset(ctx.model, test_batches(ctx.info, ctx.limit, ctx.batch_size, ctx.dev), mode=mode,
                                     relevance="zplus_flat", step_size=32, device=ctx.dev, seed=ctx.seed)
        d = res.to_dict()
        d["accuracy_auc"] = 100 * d["auc"]
        d["accuracy"] = [100 * a for a in d["accuracy"]]
        flips[mode] = d
    out = {**flips, "seconds": time.perf_counter() - t}
    plot_perturbation_curves({f"{ctx.run.name} {m}": (flips[m]["fractions"], flips[m]["accuracy"]) for m in flips},
                             ctx.out / "flipping.png", ylabel="test accuracy (%)", xlabel="fraction of points removed",
                             title="point flipping (z+ relevance, 32 points per step)")
    return out


def zeroshot_metric(ctx: EvalContext) -> dict[str, Any]:
    """ImageNet-R/-A/-O with the model's eval transform on the zero-shot folders."""
    from ...data.imagefolder import ImageFolderDataset
    from ...data.transforms import IMAGENET_MEAN, IMAGENET_STD, imagenet_eval_transform
    from ...metrics.zeroshot import evaluate_zeroshot

    root = ctx.zeroshot_root
    if root is None:
        raise ValueError("the zeroshot metric needs --zeroshot-root DIR (the folder holding imagenet-r, "
                         "imagenet-a, imagenet-o)")
    info = ctx.info
    base = getattr(info.dataset, "dataset", info.dataset)  # a Subset's dataset
    if isinstance(base, ImageFolderDataset) and base.transform is not None:
        tf = base.transform
    else:
        tf = imagenet_eval_transform(int(info.input_shape[-1]), info.mean or IMAGENET_MEAN, info.std or IMAGENET_STD)
    t = ctx.timed("zeroshot")
    batches = test_batches(info, ctx.limit, ctx.batch_size, ctx.dev)
    res: dict[str, Any] = dict(evaluate_zeroshot(ctx.model, root, info.class_names, batches, transform=tf,
                                                 sets=ctx.zeroshot_sets, batch_size=ctx.batch_size, device=ctx.dev))
    res.update(root=str(root), seconds=time.perf_counter() - t)
    return res


def _channels(run: LoadedRun) -> int | None:
    shape = tuple(getattr(run.test, "input_shape", ()) or ())
    return shape[0] if shape else None


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


def _corruption_applies(run: LoadedRun, **_: Any) -> str | None:
    channels, info = _channels(run), run.test
    if channels != 3:
        return f"the corruptions are defined for RGB images, this run's images have {channels} channel(s)"
    if info.mean is None or info.std is None:
        return "needs an image dataset with known mean/std normalization"
    return None


def _rra_applies(run: LoadedRun, **_: Any) -> str | None:
    channels, info = _channels(run), run.test
    data_name = run.config.get("data", {}).get("name")
    if channels != 3 or (data_name != "cifar10" and tuple(info.class_names or ()) != CIFAR10_CLASSES):
        return (f"the placed-tile benchmark is built from CIFAR-10 images and classes; this run is "
                f"{data_name!r} with {info.num_classes} classes and {channels}-channel images")
    err = _takes_canvas(run.model, channels)
    if err is not None:
        return (f"the placed-tile benchmark shows {RRA_CANVAS}x{RRA_CANVAS} canvases and this model does not "
                f"take that input size ({err})")
    return None


def _channel_auc_applies(run: LoadedRun, *, gaps: Sequence[str] = (), **_: Any) -> str | None:
    if gaps:
        more = f" and {len(gaps) - 4} more" if len(gaps) > 4 else ""
        return (f"the channel-relevance AUC uses {EVAL_METHOD} LRP through zennit, which has no rule for "
                f"{', '.join(gaps[:4])}{more}")
    return None


def _decoy_applies(run: LoadedRun, **_: Any) -> str | None:
    if not str(run.config.get("data", {}).get("name", "")).startswith(DECOY_PREFIX):
        return (f"needs a decoy dataset ({DECOY_PREFIX}*), this run used "
                f"{run.config.get('data', {}).get('name')!r}")
    return None


def _morf_applies(run: LoadedRun, *, patch_size: int, steps: int | None, **_: Any) -> str | None:
    shape = tuple(getattr(run.test, "input_shape", ()) or ())
    if steps is not None and len(shape) == 3:
        patches = -(-shape[1] // patch_size) * -(-shape[2] // patch_size)
        if steps > patches:
            return (f"--steps {steps} exceeds the {patches} patches of {shape[1]}x{shape[2]} images with "
                    f"--patch-size {patch_size}; pass --steps <= {patches} (or --steps 0 for all)")
    return None


def _decoy_summary(d: dict[str, Any], requested: bool) -> list[str]:
    return [f"decoy acc none/same/random {d['none']['accuracy']:.2f}/{d['same']['accuracy']:.2f}/"
            f"{d['random']['accuracy']:.2f}%, relevance on decoy {d['same']['relevance_share']:.2f}% "
            f"(chance {d['same']['chance']:.2f}%), RRA {d['same']['rra']:.2f}%"]


def _zeroshot_summary(z: dict[str, Any], requested: bool) -> list[str]:
    """ImageNet-R/-A accuracy and ImageNet-O AUROC, only when asked for this time."""
    if not requested:
        return []
    parts = [f"{name} {z[key]['accuracy']:.2f}%" for key, name in (("r", "ImageNet-R"), ("a", "ImageNet-A"))
             if key in z]
    return parts + ([f"ImageNet-O AUROC {z['o']['auroc']:.3f}"] if "o" in z else [])


@dataclass(frozen=True)
class Metric:
    """One metric of ``reldrop evaluate``.

    ``function(ctx)``: its ``metrics.json`` entry; ``modalities``: the data it is defined for;
    ``applies_to(run, patch_size=, steps=, gaps=)``: why it does not apply to a run of such data
    (None: it does; the field None: always); ``summary(entry, requested)``: its parts of the
    command's one-line summary (``requested``: asked for in this call, not only kept from an
    earlier one); ``default``: in the selection without ``--metrics``.
    """

    name: str
    function: Callable[[EvalContext], dict[str, Any]]
    modalities: tuple[str, ...]
    applies_to: Callable[..., str | None] | None = None
    summary: Callable[[dict[str, Any], bool], list[str]] | None = None
    default: bool = True


#: every metric, in the order ``reldrop evaluate`` computes them (and ``metrics.json`` lists them)
METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("acc", accuracy_metric, ("image", "points"), summary=lambda e, _: [f"acc {e['accuracy']:.2f}%"]),
    Metric("corruption", corruption_metric, ("image",), _corruption_applies,
           lambda e, _: [f"corruption {e['mean']:.2f}%"]),
    Metric("rra", rra_metric, ("image",), _rra_applies, lambda e, _: [f"RRA {e['mean']:.2f}%"]),
    Metric("morf", morf_metric, ("image",), _morf_applies,
           lambda e, _: [f"MoRF AUC {e['morf']['accuracy_auc']:.2f}"]),
    Metric("channel_auc", channel_auc_metric, ("image",), _channel_auc_applies),
    Metric("heatmaps", heatmaps_metric, ("image",)),
    Metric("decoy", decoy_metric, ("image",), _decoy_applies, _decoy_summary, default=False),
    Metric("flipping", flipping_metric, ("points",), summary=lambda e, _: [f"flipping AUC {e['fixed']['accuracy_auc']:.2f}"]),
    Metric("zeroshot", zeroshot_metric, ("image",), summary=_zeroshot_summary, default=False),
)}


def default_metrics(modality: str, data_name: str | None = None) -> list[str]:
    """What ``reldrop evaluate`` computes without ``--metrics``: acc and decoy for a decoy dataset,
    else every default metric of the modality (acc for an unknown one)."""
    if str(data_name or "").startswith(DECOY_PREFIX):
        return ["acc", "decoy"]
    return [m.name for m in METRICS.values() if m.default and modality in m.modalities] or ["acc"]
