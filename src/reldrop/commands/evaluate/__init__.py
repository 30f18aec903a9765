"""``reldrop evaluate``: evaluation suite for a trained run directory (JSON + PNGs in RUN_DIR/eval/)."""
from __future__ import annotations

import argparse

HELP = "evaluate a trained run: accuracy, corruption accuracy, RRA, MoRF/LeRF, channel AUC, heatmaps, zero-shot"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .catalog import DECOY_PREFIX, METRICS, default_metrics

    parser.add_argument("--checkpoint", required=True, metavar="RUN_DIR",
                        help="run directory written by `reldrop train` (best.pt, else last.pt), or a .pt inside one")
    parser.add_argument("--metrics", default=None,
                        help=f"comma-separated subset of {','.join(METRICS)} (default: every metric that "
                             f"applies: images {','.join(default_metrics('image'))}; points "
                             f"{','.join(default_metrics('points'))}; decoy datasets "
                             f"{','.join(default_metrics('image', DECOY_PREFIX))})")
    parser.add_argument("--out", default=None, help="output folder (default: RUN_DIR/eval)")
    parser.add_argument("--data-root", default=None, help="data root (default: config, $RELDROP_DATA_DIR, ./data)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default: cpu)")
    parser.add_argument("--which", choices=("best", "last"), default="best", help="checkpoint to load (default: best)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--limit", type=int, default=500,
                        help="test images for corruption/morf/channel_auc (0 = all; default 500)")
    parser.add_argument("--rra-size", type=int, default=1000, help="placed-tile canvases for RRA (default 1000)")
    parser.add_argument("--patch-size", type=int, default=4, help="region-perturbation patch side (default 4)")
    parser.add_argument("--steps", type=int, default=16,
                        help="patches removed in region perturbation (0 = all; default 16 = 1/4 of a 32x32 image)")
    parser.add_argument("--method", default="auto",
                        help="attribution preset for rra/morf/heatmaps (default auto: epsilon_gamma_box where its "
                             "rules cover the model, else the model's default, e.g. cp_lrp for a ViT)")
    parser.add_argument("--heatmap-samples", type=int, default=6)
    parser.add_argument("--compare", nargs="*", default=[], metavar="RUN_DIR",
                        help="more runs whose relevance is shown as extra heatmap columns")
    parser.add_argument("--channel-samples", type=int, default=128,
                        help="test images for the channel-relevance AUC (default 128)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads on CPU (default: leave)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--zeroshot-root", default=None, metavar="DIR",
                        help="for --metrics zeroshot: folder holding imagenet-r, imagenet-a, imagenet-o "
                             "(<wnid>/ image folders, as the tarballs extract)")
    parser.add_argument("--zeroshot-sets", default="r,a,o",
                        help="for --metrics zeroshot: comma-separated subset of r,a,o (default r,a,o)")


def run(args: argparse.Namespace) -> int:
    import torch

    from reldrop.train.load import load_run

    from .catalog import METRICS, default_metrics
    from .suite import evaluate_run

    if min(args.batch_size, args.rra_size, args.patch_size, args.channel_samples, args.heatmap_samples) < 1 \
            or args.limit < 0 or args.steps < 0:
        raise SystemExit("--batch-size, --rra-size, --patch-size, --channel-samples, --heatmap-samples must be >= 1; "
                         "--limit, --steps >= 0")
    from reldrop._checks import check_device

    try:
        check_device(args.device)
    except ValueError as err:
        raise SystemExit(f"reldrop evaluate: {err}") from None
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    from reldrop._threads import warn_if_busy

    warn_if_busy(torch.get_num_threads())
    try:
        loaded = load_run(args.checkpoint, checkpoint=args.which, device=args.device, data_root=args.data_root)
    except (ValueError, OSError) as err:  # missing/empty folder, 0-byte, truncated or pickled checkpoint
        raise SystemExit(f"reldrop evaluate: error: {err}") from None
    if args.metrics is None:
        metrics = default_metrics(loaded.test.modality, loaded.config.get("data", {}).get("name"))
    else:
        metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    try:
        compare = [load_run(c, checkpoint=args.which, device=args.device, data_root=args.data_root)
                   for c in args.compare]
    except (ValueError, OSError) as err:
        raise SystemExit(f"reldrop evaluate: error: {err}") from None
    try:
        res = evaluate_run(loaded, metrics, out_dir=args.out, device=args.device, batch_size=args.batch_size,
                           limit=args.limit or None, rra_size=args.rra_size, patch_size=args.patch_size,
                           steps=args.steps or None, method=args.method, heatmap_samples=args.heatmap_samples,
                           compare=compare, seed=args.seed, channel_samples=args.channel_samples,
                           skip_inapplicable=args.metrics is None, zeroshot_root=args.zeroshot_root,
                           zeroshot_sets=[s.strip() for s in args.zeroshot_sets.split(",") if s.strip()])
    except (ValueError, OSError) as err:
        raise SystemExit(f"reldrop evaluate: {err}") from None
    summary = [part for name, m in METRICS.items() if m.summary is not None and name in res
               for part in m.summary(res[name], name in metrics)]
    if res.get("skipped"):
        summary.append(f"skipped (do not apply): {', '.join(res['skipped'])}")
    out = args.out or f"{loaded.run_dir}/eval"
    print(f"[{loaded.name}] " + ", ".join(summary) + f"  -> {out}/metrics.json")
    return 0
