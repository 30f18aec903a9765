"""Data-scarce finetuning of the pretrained EfficientNet-Lite0 (docs/effnet_fewshot.md): table and CSV.

    python benchmarks/effnet_fewshot.py --runs RUNS [--csv docs/effnet_fewshot_results.csv] [--md FILE]
        [--figure docs/figures/effnet_fewshot.png]

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


COLOURS = {"baseline": "0.2", "RE": "tab:orange", "RelDrop": "tab:blue", "CutMix": "tab:green",
           "Mixup": "tab:purple", "baseline equal compute": "0.55"}


def figure(rows: list[dict], path: Path) -> Path:
    """Left: full-test accuracy against images per class, one line per variant (mean, 95 % CI).
    Right: each variant minus the baseline, paired over seeds (mean, 95 % CI), per training-set size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = list(dict.fromkeys(r["variant"] for r in rows))
    sizes = sorted({int(r["images_per_class"]) for r in rows})
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=150)
    for k, v in enumerate(variants):
        mine = sorted((r for r in rows if r["variant"] == v and r["clean_mean"] is not None and r["n"]),
                      key=lambda r: int(r["images_per_class"]))
        if not mine:
            continue
        colour = COLOURS.get(v, f"C{k}")
        shift = 1 + 0.025 * (k - (len(variants) - 1) / 2)  # side by side on the log axis
        xs = [int(r["images_per_class"]) * shift for r in mine]
        ys = [r["clean_mean"] for r in mine]
        err = [[0.0 if r["clean_ci95_low"] != r["clean_ci95_low"] else r["clean_mean"] - r["clean_ci95_low"]
                for r in mine],
               [0.0 if r["clean_ci95_high"] != r["clean_ci95_high"] else r["clean_ci95_high"] - r["clean_mean"]
                for r in mine]]
        left.errorbar(xs, ys, yerr=err, fmt="o-", color=colour, capsize=3, lw=1, ms=4, label=v)
        diffs = [r for r in mine if r.get("diff_vs_baseline") is not None]
        if diffs:
            dx = [int(r["images_per_class"]) * shift for r in diffs]
            dy = [r["diff_vs_baseline"] for r in diffs]
            derr = [[r["diff_vs_baseline"] - r["diff_ci95_low_vs_baseline"] for r in diffs],
                    [r["diff_ci95_high_vs_baseline"] - r["diff_vs_baseline"] for r in diffs]]
            right.errorbar(dx, dy, yerr=derr, fmt="o", color=colour, capsize=3, ms=4, label=f"{v} − baseline")
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.minorticks_off()
        ax.set_xlabel("training images per class (CIFAR-10, 64 px)")
    right.axhline(0.0, color="0.4", lw=0.8)
    left.set_ylabel("accuracy on the full test split (%), mean and 95 % CI")
    right.set_ylabel("Δ vs baseline (points), paired over seeds, 95 % CI")
    left.set_title("EfficientNet-Lite0 (ImageNet weights), finetuned")
    right.set_title("Difference to the baseline")
    left.legend(fontsize=7, loc="lower right")
    right.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", required=True, type=Path)
    ap.add_argument("--configs", type=Path, default=HERE.parent / "configs" / "effnet_fewshot")
    ap.add_argument("--sizes", nargs="+", type=int, default=list(SIZES))
    ap.add_argument("--csv", type=Path, default=Path("docs/effnet_fewshot_results.csv"))
    ap.add_argument("--md", type=Path, default=None)
    ap.add_argument("--figure", type=Path, default=Path("docs/figures/effnet_fewshot.png"))
    args = ap.parse_args(argv)
    arms = [(f"ipc{n}", args.configs / f"ipc{n}.yaml", args.runs / f"ipc{n}") for n in args.sizes]
    extra = {f"ipc{n}": {"images_per_class": n} for n in args.sizes}
    rows = st.study_rows(arms, METRICS, headline="clean", extra=extra)
    st.write_csv(rows, args.csv)
    table = st.markdown(rows, "clean", [("train_clean_mean", "clean train acc"), ("gap_clean_mean", "clean gap")])
    if args.md:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(table + "\n\n" + "\n".join(st.readings(rows)) + "\n")
    print(table)
    print("\n".join(["", *st.readings(rows)]))
    print(f"\nwrote {args.csv} and {figure(rows, args.figure)}")
    missing = sum(int(r["missing"]) for r in rows)
    if missing:
        print(f"note: {missing} run(s) not finished yet are left out (column 'missing')", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
