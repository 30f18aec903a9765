"""Data-scarce finetuning of the pretrained EfficientNet-Lite0 (docs/effnet_fewshot.md): table and CSV.

    python benchmarks/effnet_fewshot.py --runs RUNS [--csv docs/effnet_fewshot_results.csv] [--md FILE]

RUNS holds one ``reldrop compare`` output per training-set size, ``RUNS/ipc<N>/``
(configs/effnet_fewshot/ipc<N>.yaml; ``benchmarks/effnet_fewshot.sh`` runs them). Headline: the final
model's accuracy on the full 10 000-image CIFAR-10 test split (the ``full`` test set of the
comparison); also the clean train accuracy (eval mode, ``train_clean_acc`` of the last epoch) and
the clean train–test gap (that minus the full test accuracy). Statistics: benchmarks/study_table.py
(paired t over the seeds, 95 % CIs, Holm over every test of the table).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import study_table as st  # noqa: E402

SIZES = (50, 100, 250)


def _gap(run: Path) -> float | None:
    train = st.metric_from_log("train_clean_acc")(run)
    test = st.metric_from_test_set("full")(run)
    return None if train is None or test is None else train - test


METRICS = {
    "clean": st.metric_from_test_set("full"),  # the headline: final accuracy on the full clean test split
    "train_clean": st.metric_from_log("train_clean_acc"),
    "gap_clean": _gap,
    "test_subset": st.metric_from_log("test_acc"),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", required=True, type=Path)
    ap.add_argument("--configs", type=Path, default=HERE.parent / "configs" / "effnet_fewshot")
    ap.add_argument("--sizes", nargs="+", type=int, default=list(SIZES))
    ap.add_argument("--csv", type=Path, default=Path("docs/effnet_fewshot_results.csv"))
    ap.add_argument("--md", type=Path, default=None)
    args = ap.parse_args(argv)
    arms = [(f"ipc{n}", args.configs / f"ipc{n}.yaml", args.runs / f"ipc{n}") for n in args.sizes]
    extra = {f"ipc{n}": {"images_per_class": n} for n in args.sizes}
    rows = st.study_rows(arms, METRICS, headline="clean", extra=extra)
    st.write_csv(rows, args.csv)
    table = st.markdown(rows, "clean", [("train_clean_mean", "clean train acc"), ("gap_clean_mean", "clean gap")])
    if args.md:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(table + "\n")
    print(table)
    print(f"\nwrote {args.csv}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
