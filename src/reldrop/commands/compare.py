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
from pathlib import Path
from typing import Any, Mapping, Sequence

from .train import add_config_arguments, resolved_config_or_exit

__all__ = ["run_compare", "write_outputs", "write_results", "statistics_markdown", "add_arguments", "run", "HELP"]

HELP = "train baseline / Random Erasing / RelDrop (config variants) x seeds and write results.md + curves.png"


def run_compare(cfg: Mapping[str, Any], *, out: str | Path | None = None, seeds: Sequence[int] | None = None,
                only: Sequence[str] | None = None, quiet: bool = False, data_root: str | None = None,
                plot: bool = True, force: bool = False) -> dict[str, Any]:
    """:func:`reldrop.train.compare.run_compare` (train and summarize) plus its outputs written
    (:func:`write_outputs`: results.csv, runs.csv, results.md and, with ``plot``, curves.png).

    Returns ``{"out", "rows" (summary per variant), "runs" (per run), "files" (the paths written)}``.
    """
    from ..train.compare import run_compare as train_and_summarize

    return train_and_summarize(cfg, out=out, seeds=seeds, only=only, quiet=quiet, data_root=data_root, plot=plot,
                               force=force, write=write_outputs)


def write_outputs(out_dir: str | Path, rows: Sequence[Mapping[str, Any]], runs: Sequence[Mapping[str, Any]],
                  cfg: Mapping[str, Any], *, plot: bool = True) -> list[str]:
    """The tables (:func:`write_results`) and, with ``plot``, ``curves.png``
    (:func:`reldrop.viz.curves.plot_curves`); returns the paths written."""
    files = write_results(out_dir, rows, runs, cfg)
    if plot:
        from ..viz.curves import plot_curves

        files.append(str(plot_curves(runs, Path(out_dir) / "curves.png",
                                     title=f"{cfg['name']}: train / test accuracy")))
    return files


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
    except KeyboardInterrupt as err:
        from ._signals import interrupt_exit_code

        print("reldrop compare: interrupted; run the same command again to continue (finished runs are reused, "
              "interrupted ones resumed)", file=sys.stderr)
        return interrupt_exit_code(err)
    finally:
        cleanup()
    print((res["out"] and open(f"{res['out']}/results.md").read()) or "")
    print(f"results written to {res['out']}/ (results.md, results.csv, runs.csv, curves.png)")
    return 0


def write_results(out_dir: str | Path, rows: Sequence[Mapping[str, Any]], runs: Sequence[Mapping[str, Any]],
                  cfg: Mapping[str, Any] | None = None) -> list[str]:
    """Write ``results.csv``, ``runs.csv`` and ``results.md``; returns their paths."""
    import csv

    import numpy as np

    from ..runs import atomic_open, atomic_write_text
    from ..stats import fmt_mean_std

    out_dir = Path(out_dir)
    files: list[str] = []
    if rows:
        keys: list[str] = []
        for r in rows:
            keys.extend(k for k in r if k not in keys)
        with atomic_open(out_dir / "results.csv", "w", newline="") as f:
            dw = csv.DictWriter(f, fieldnames=keys)
            dw.writeheader()
            dw.writerows(rows)
        files.append(str(out_dir / "results.csv"))
    with atomic_open(out_dir / "runs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["variant", "seed", "epochs", "final_test_acc", "best_test_acc", "final_test_macro",
                    "final_train_acc", "gap", "time_per_epoch", "run_dir"])
        for r in runs:
            if not r["metrics"]:
                continue
            m = r["metrics"]
            w.writerow([r["variant"], r["seed"], m[-1]["epoch"], f"{m[-1]['test_acc']:.3f}",
                        f"{max(x['test_acc'] for x in m):.3f}", f"{m[-1]['test_macro']:.3f}",
                        f"{m[-1]['train_acc']:.3f}", f"{m[-1]['gap']:.3f}",
                        f"{np.mean([x['epoch_time'] for x in m]):.2f}", r["run_dir"]])
    files.append(str(out_dir / "runs.csv"))

    def pm(row: Mapping[str, Any], key: str, digits: int = 2) -> str:
        return fmt_mean_std(row.get(f"{key}_mean"), row.get(f"{key}_std"), row.get("seeds"), digits)

    clean = rows and all("gap_clean_mean" in r for r in rows)
    head = ["variant", "seeds", "epochs", "final test acc %", "best test acc %", "final class-mean acc %",
            "final train acc %", "train–test gap (pt)"]
    if clean:
        head += ["clean train acc %", "clean gap (pt)"]
    head += ["s / epoch", "aug s / epoch"]
    lines = []
    if cfg is not None:
        lines.append(f"# {cfg['name']}: {cfg['data']['name']} / {cfg['model']['name']}, "
                     f"{cfg['train']['epochs']} epochs, batch {cfg['train']['batch_size']}, "
                     f"{cfg['optim']['name']} lr {cfg['optim']['lr']}\n")
    lines.append("Mean ± sample std over seeds. *train acc* is the running accuracy on the augmented training "
                 "batches of the last epoch; gap = train acc − test acc (percentage points).\n")
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for r in rows:
        cells = [str(r["variant"]), str(r["seeds"]), str(r["epochs"]), pm(r, "final_test_acc"), pm(r, "best_test_acc"),
                 pm(r, "final_test_macro"), pm(r, "final_train_acc"), pm(r, "gap")]
        if clean:
            cells += [pm(r, "final_train_clean_acc"), pm(r, "gap_clean")]
        cells += [pm(r, "time_per_epoch", 1), pm(r, "aug_time_per_epoch", 1)]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.extend(statistics_markdown(rows))
    atomic_write_text(out_dir / "results.md", "\n".join(lines) + "\n")
    files.append(str(out_dir / "results.md"))
    return files


def statistics_markdown(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Markdown lines: the statistics tables of final test accuracy (and of each ``compare.test_sets`` entry)."""
    from ..stats import GROUP_STATS, statistics_table

    if not rows or "ci95_low" not in rows[0]:
        return []
    tests = ["p (t)", "p (sign-flip)", "p (Holm)", "significant"]
    final = [([str(r["variant"])], {**{k: r.get(k) for k in GROUP_STATS}, "mean": r.get("final_test_acc_mean"),
                                    "std": r.get("final_test_acc_std")}) for r in rows]
    lines = ["Statistics of the final test accuracy (%): n seeds, mean ± sample std, 95 % confidence interval "
             "(Student t over seeds); paired over matching seeds: mean difference (pt), two-sided paired "
             "t-test p, exact sign-flip permutation p (cannot go below 2/2^n: 0.0625 for 5 seeds), "
             "Holm-corrected t-test p (family: every test of this table, vs baseline and vs RE together), "
             "significant = Holm p < 0.05.\n",
             *statistics_table(["variant", "n", "mean ± std", "95 % CI", "Δ vs baseline", *tests, "Δ vs RE", *tests],
                               final, diff=True, blank=True)]
    sets = [k[len("test_"):-len("_acc_mean")] for k in rows[0] if k.startswith("test_") and k.endswith("_acc_mean")]
    for ts in sets:
        p = f"test_{ts}_acc_"
        entries = [([str(r["variant"])], {**{k: r.get(p + k) for k in GROUP_STATS}, "n": r.get(p + "n", r.get("n"))})
                   for r in rows]
        lines += ["", f"Test set `{ts}` (final model): accuracy %, same statistics.\n",
                  *statistics_table(["variant", "mean ± std", "95 % CI", "p vs baseline (t)", *tests[1:],
                                     "p vs RE (t)", *tests[1:]], entries, n=False, blank=True)]
    return lines
