"""``reldrop train``: train one model from a YAML config (defaults: the embedded digits preset).

Config resolution, later wins: embedded defaults <- ``--config FILE`` / ``--preset NAME`` <-
``--set key.sub=value ...`` and dotted flags (``--optim.lr 0.05``; every key of the config has
one) <- the named flags (``--aug``, ``--seed``, ``--epochs``, ``--out``, ``--device``, ``--init``,
``--reinit-head``, ``--tensorboard``). Examples::

    reldrop train                                   # digits, small_cnn, no augmentation
    reldrop train --preset cifar10_cpu_resnet20 --aug reldrop --seed 1
    reldrop train --config configs/cifar10_resnet18.yaml --set optim.lr=0.05 data.subset=5000
    reldrop train --resume runs/my-run              # continue a killed run
    torchrun --nproc_per_node 2 -m reldrop.cli train --preset digits   # DDP
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

HELP = "train one model (images or point clouds) from a YAML config, with --aug none|re|reldrop|random|mixup|cutmix"


def add_config_arguments(parser: argparse.ArgumentParser, *, single_run: bool = True) -> None:
    """The config flags shared by ``train`` and ``compare``."""
    from reldrop.train.config import flat_keys

    g = parser.add_argument_group("configuration")
    src = g.add_mutually_exclusive_group()
    src.add_argument("--config", "-c", metavar="FILE|PRESET", default=None,
                     help="YAML config file or preset name (see --preset; default: embedded 'digits')")
    src.add_argument("--preset", metavar="NAME", default=None,
                     help="preset name: NAME.yaml in $RELDROP_CONFIG_DIR or ./configs, else among the presets shipped in the package "
                          "(reldrop/configs), e.g. digits, points_shapes, decoy_sweep/pilot")
    g.add_argument("--set", dest="overrides", metavar="KEY=VALUE", nargs="+", action="extend", default=[],
                   help="override config keys, e.g. --set optim.lr=0.05 data.subset=5000 aug.scale=[0.02,0.3]")
    g.add_argument("--data-root", default=None,
                   help="dataset root (default: data.root, else $RELDROP_DATA_DIR, else ./data)")
    g.add_argument("--out", "-o", default=None, help="run directory (compare: results directory)")
    g.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N")
    g.add_argument("--epochs", type=int, default=None, help="number of epochs (train.epochs)")
    if single_run:
        g.add_argument("--seed", type=int, default=None, help="random seed")
        g.add_argument("--aug", choices=("none", "re", "reldrop", "random", "mixup", "cutmix"), default=None,
                       help="augmentation: none, re (Random Erasing), reldrop, random (points: RelDrop alpha=1), "
                            "mixup, cutmix (timm, soft targets; aug.p = chance a batch is mixed)")
    g.add_argument("--init", metavar="PATH", default=None,
                   help="initialize the model from a torchvision/timm state dict (finetuning; strict)")
    g.add_argument("--reinit-head", action="store_true", default=None,
                   help="with --init: drop the classifier weights from the file (new num_classes)")
    g.add_argument("--tensorboard", action="store_true", default=None, help="also write TensorBoard events")
    g.add_argument("--quiet", "-q", action="store_true", help="no progress bar or per-epoch lines")
    g.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    dotted = parser.add_argument_group("every config key as a flag (same as --set KEY=VALUE)")
    for key in flat_keys():
        if "." in key:
            dotted.add_argument(f"--{key}", dest=f"ovr:{key}", metavar="V", default=argparse.SUPPRESS,
                                help=argparse.SUPPRESS)


def config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Resolve the config from the parsed command line (see the module docstring for the order)."""
    from reldrop.train.config import apply_overrides, load_config, validate

    overrides = list(args.overrides or [])
    overrides += [f"{k[4:]}={v}" for k, v in vars(args).items() if k.startswith("ovr:")]
    cfg = load_config(args.config or args.preset, overrides)
    named = {
        "seed": getattr(args, "seed", None), "out": args.out, "device": args.device,
        "train.epochs": args.epochs, "aug.name": getattr(args, "aug", None), "model.init": args.init,
        "model.reinit_head": args.reinit_head, "train.tensorboard": args.tensorboard,
        "data.root": args.data_root,
    }
    cfg = apply_overrides(cfg, [f"{k}={json.dumps(v)}" for k, v in named.items() if v is not None])
    validate(cfg)
    return cfg


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, single_run=True)
    parser.add_argument("--resume", nargs="?", const=True, default=False, metavar="RUN_DIR|CKPT",
                        help="continue a run from its last.pt (default: the --out directory); "
                             "the run keeps its saved config (--epochs may extend it)")
    parser.add_argument("--force", action="store_true",
                        help="take over the stale lock a killed process left in the run directory (never a live one)")
    parser.epilog = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter


def resolved_config_or_exit(args: argparse.Namespace, prog: str) -> dict[str, Any] | int:
    """The resolved config, or an exit code: 2 after a config error, 0 after ``--print-config``."""
    try:
        cfg = config_from_args(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    if args.print_config:
        import yaml

        sys.stdout.write(yaml.safe_dump(cfg, sort_keys=False))
        return 0
    threads = cfg["train"].get("threads")
    if threads is None:  # null: torch's default (one per core)
        import torch

        threads = torch.get_num_threads()
    from reldrop._threads import warn_if_busy

    warn_if_busy(int(threads))
    return cfg


def _ignored_on_resume(args: argparse.Namespace) -> list[str]:
    """The config flags given with ``--resume`` (which keeps the run's saved config)."""
    given = [f"--set {o}" for o in args.overrides or []]
    given += [f"--{k[4:]}" for k in vars(args) if k.startswith("ovr:")]
    for flag in ("config", "preset", "seed", "device", "aug", "init", "reinit_head", "tensorboard"):
        if getattr(args, flag, None) not in (None, False):
            given.append("--" + flag.replace("_", "-"))
    return given


def run(args: argparse.Namespace) -> int:
    from reldrop.train.distributed import cleanup
    from reldrop.train.loop import train

    cfg = resolved_config_or_exit(args, "reldrop train")
    if isinstance(cfg, int):
        return cfg
    resume = args.resume
    ignored = _ignored_on_resume(args) if resume else []
    if ignored:
        print(f"reldrop train: error: --resume continues a run with the config saved in it; {', '.join(ignored)} "
              "would be ignored. Drop them (only --epochs, --out, --data-root, --quiet apply to a resumed run), "
              "or start a new run with another --out", file=sys.stderr)
        return 2
    if resume is True and not args.out:
        print("reldrop train: error: --resume needs a run directory (--resume RUN_DIR or --out RUN_DIR)",
              file=sys.stderr)
        return 2
    from reldrop.train.divergence import TrainingDivergedError

    try:
        result = train(cfg, resume=resume, quiet=args.quiet, data_root=args.data_root,
                       epochs=args.epochs if resume else None, force=bool(getattr(args, "force", False)))
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"reldrop train: error: {err}", file=sys.stderr)
        return 2
    except TrainingDivergedError as err:
        print(f"reldrop train: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # disk full, read-only --out, ...: one line naming the path
        print(f"reldrop train: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:
        run_dir = getattr(err, "run_dir", None) or args.out
        how = f"reldrop train --resume {run_dir}" if run_dir else "reldrop train --resume RUN_DIR"
        print(f"reldrop train: interrupted; resume with `{how}`", file=sys.stderr)
        from ._signals import interrupt_exit_code

        return interrupt_exit_code(err)
    finally:
        cleanup()
    if result["rank"] == 0:
        f = result["final"]
        if f:
            print(f"final: train {f['train_acc']:.2f}%  test {f['test_acc']:.2f}% (top5 {f['test_top5']:.2f}, "
                  f"macro {f['test_macro']:.2f})  best {result['best_acc']:.2f}% @ epoch {result['best_epoch']}")
        print(f"run directory: {result['run_dir']}")
    return 0
