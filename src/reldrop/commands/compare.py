"""``reldrop compare``: none / RE / RelDrop (or any ``compare.variants``) × seeds, then a table and curves.

Examples::

    reldrop compare --preset digits                      # the embedded demo: 3 methods x 3 seeds
    reldrop compare --config configs/cifar10_cpu_resnet20.yaml --out runs/c10 --seeds 0 1 2
    reldrop compare --preset digits --variants baseline RelDrop --set train.epochs=10

Writes ``results.md``, ``results.csv``, ``runs.csv`` and ``curves.png`` to ``--out`` (default
``runs/compare-<name>-<time>``), one run directory per variant and seed below it. Re-running the
same command with the same ``--out`` reuses finished runs and resumes interrupted ones.
"""
from __future__ import annotations

import argparse
import sys

from .train import add_config_arguments, resolved_config_or_exit

HELP = "train baseline / Random Erasing / RelDrop (config variants) x seeds and write results.md + curves.png"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, single_run=False)
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (default: compare.seeds, 0 1 2)")
    parser.add_argument("--variants", nargs="+", default=None, metavar="NAME",
                        help="run only these variants (names from compare.variants)")
    parser.add_argument("--force", action="store_true",
                        help="take over stale locks killed processes left in run folders (never a live one)")
    parser.epilog = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter


def run(args: argparse.Namespace) -> int:
    from reldrop.train.compare import run_compare
    from reldrop.train.distributed import cleanup

    cfg = resolved_config_or_exit(args, "reldrop compare")
    if isinstance(cfg, int):
        return cfg
    try:
        res = run_compare(cfg, out=args.out, seeds=args.seeds, only=args.variants, quiet=args.quiet,
                          data_root=args.data_root, force=args.force)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"reldrop compare: error: {err}", file=sys.stderr)
        return 2
    except (RuntimeError, OSError) as err:  # a diverged run, a full disk: one line
        from reldrop.train.divergence import TrainingDivergedError

        if not isinstance(err, (TrainingDivergedError, OSError)):
            raise
        print(f"reldrop compare: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("reldrop compare: interrupted; run the same command again to continue (finished runs are reused, "
              "interrupted ones resumed)", file=sys.stderr)
        return 130
    finally:
        cleanup()
    print((res["out"] and open(f"{res['out']}/results.md").read()) or "")
    print(f"results written to {res['out']}/ (results.md, results.csv, runs.csv, curves.png)")
    return 0
