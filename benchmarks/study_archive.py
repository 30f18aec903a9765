"""Copy a study's finished runs, without checkpoints, into a folder that git tracks (``*.pt`` is ignored).

    python benchmarks/study_archive.py SRC DST     # e.g. /root/exp/decoy_sweep studies/decoy_sweep

A study outlives the machine it runs on this way: ``reldrop compare --out DST`` (or a copy of DST)
reuses every archived run (``finished.json``, no ``last.pt``) and trains only the missing ones, and the
study's tables (benchmarks/decoy_sweep.py, benchmarks/effnet_fewshot.py) read archived runs as they
are. See :mod:`reldrop.runs.archive`.
"""
from __future__ import annotations

import argparse
import sys

from reldrop.runs.archive import archive_runs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", help="the study folder (compare --out folders, or a folder of them)")
    ap.add_argument("dst", help="where the finished runs go (same relative paths)")
    a = ap.parse_args(argv)
    res = archive_runs(a.src, a.dst)
    print(f"{len(res['finished'])} finished run(s) archived to {a.dst}; {len(res['unfinished'])} unfinished left out",
          file=sys.stderr)
    for r in res["unfinished"]:
        print(f"  unfinished: {r}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
