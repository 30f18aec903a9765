"""``reldrop report RUN_DIR...``: one Markdown table of the evaluated metrics of several runs."""
from __future__ import annotations

import argparse

HELP = "collect RUN_DIR/eval/metrics.json of several runs into one Markdown table (and joint figures)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="evaluated run directories (first = baseline)")
    parser.add_argument("--out", default=None, help="write the table to this Markdown file (default: print only)")
    parser.add_argument("--csv", default=None, metavar="PATH",
                        help="write the statistics (n, mean, std, ci95_low, ci95_high, p_vs_baseline, p_vs_re, ...) "
                             "per metric and run group to this CSV")
    parser.add_argument("--figures", default=None, metavar="DIR",
                        help="also write joint figures: MoRF curves and channel-AUC change vs the first run")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from reldrop.commands.reporting import (collect, markdown_table, statistics_rows, statistics_table, write_figures,
                                        write_statistics_csv)

    try:
        rows = collect(args.runs)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"reldrop report: {err}") from None
    table = markdown_table(rows)
    stats = statistics_rows(rows)
    if any(r["n"] > 1 for r in stats):
        table += ("\n\nStatistics per metric: 95 % CI = Student t over seeds; p = paired over matching seed "
                  "folders (t-test, exact sign-flip test); significant = t-test p < 0.05; baseline = the first "
                  "run group.\n\n" + statistics_table(stats))
    print(table)
    if args.csv:
        print(f"wrote {write_statistics_csv(stats, args.csv)}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(table + "\n")
    if args.figures:
        for p in write_figures(rows, args.figures):
            print(f"wrote {p}")
    return 0
