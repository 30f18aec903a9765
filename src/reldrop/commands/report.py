"""``reldrop report RUN_DIR...``: one Markdown table of the evaluated metrics of several runs."""
from __future__ import annotations

import argparse

HELP = "collect RUN_DIR/eval/metrics.json of several runs into one Markdown table (and joint figures)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="evaluated run directories (first = baseline)")
    parser.add_argument("--out", default=None, help="write the table to this Markdown file (default: print only)")
    parser.add_argument("--figures", default=None, metavar="DIR",
                        help="also write joint figures: MoRF curves and channel-AUC change vs the first run")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from reldrop.metrics.report import collect, markdown_table, write_figures

    try:
        rows = collect(args.runs)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"reldrop report: {err}") from None
    table = markdown_table(rows)
    print(table)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(table + "\n")
    if args.figures:
        for p in write_figures(rows, args.figures):
            print(f"wrote {p}")
    return 0
