"""Shortcut-strength sweep (docs/decoy_sweep.md): table, CSV and figure from the arms' compare folders.

    python benchmarks/decoy_sweep.py --runs RUNS [--csv docs/decoy_sweep_results.csv]
        [--figure docs/figures/decoy_sweep.png] [--md docs/decoy_sweep_table.md]

RUNS holds one ``reldrop compare`` output per arm, ``RUNS/<arm>/`` (configs/decoy_sweep/<arm>.yaml;
``benchmarks/decoy_sweep.sh`` runs them). Headline: clean test accuracy (``test_acc`` of the last
epoch on the 2 000 clean test images); secondary: accuracy with a misleading patch (``random``) and
with the training patch (``same``), and the relevance share on the patch where ``reldrop evaluate
--metrics decoy`` ran. Statistics: see benchmarks/study_table.py (paired t over the 5 seeds, 95 %
CIs, Holm over every test of the table).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import study_table as st  # noqa: E402

#: the arms, weakest shortcut first (fixed in docs/decoy_sweep.md before the first RelDrop run)
ARMS = ("random-gray-4", "fixed-gray-2", "fixed-gray-4", "fixed-palette-4")
METRICS = {
    "clean": st.metric_from_log("test_acc"),
    "random": st.metric_from_test_set("random"),
    "same": st.metric_from_test_set("same"),
    "relevance_share_same": st.metric_from_eval("decoy", "same", "relevance_share"),
}


def reliance(rows: list[dict], arm: str) -> float | None:
    """The baseline's shortcut reliance of an arm: its mean ``same`` − ``random`` accuracy (points)."""
    base = next((r for r in rows if r["arm"] == arm and r["variant"] == "baseline"), None)
    if base is None or base.get("same_mean") is None or base.get("random_mean") is None:
        return None
    return float(base["same_mean"]) - float(base["random_mean"])


def figure(rows: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=150)
    for tag, label, colour, dx in (("baseline", "RelDrop − baseline", "tab:blue", -0.8),
                                   ("re", "RelDrop − Random Erasing", "tab:orange", 0.8)):
        xs, ys, lo, hi, names = [], [], [], [], []
        for r in rows:
            if r["variant"] != "RelDrop" or r.get(f"diff_vs_{tag}") is None:
                continue
            x = reliance(rows, r["arm"])
            if x is None:
                continue
            xs.append(x + dx)
            ys.append(r[f"diff_vs_{tag}"])
            lo.append(r[f"diff_vs_{tag}"] - r[f"diff_ci95_low_vs_{tag}"])
            hi.append(r[f"diff_ci95_high_vs_{tag}"] - r[f"diff_vs_{tag}"])
            names.append(r["arm"])
        if xs:
            ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o", color=colour, capsize=4, label=label)
            if tag == "baseline":  # one label per arm, left of its pair of points
                for x, y, n in zip(xs, ys, names):
                    ax.annotate(n, (x, y), textcoords="offset points", xytext=(-8, 0), ha="right", va="center",
                                fontsize=7, color="0.25")
    ax.axhline(0.0, color="0.4", lw=0.8)
    ax.set_xlim(-20, 105)  # room for the arm labels
    ax.set_xlabel("baseline's shortcut reliance: same − random accuracy (points)")
    ax.set_ylabel("Δ clean test accuracy (points), mean and 95 % CI")
    ax.set_title("Shortcut-strength sweep (CIFAR-10 decoys, resnet8, 5 seeds)")
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", required=True, type=Path, help="folder with one compare output per arm")
    ap.add_argument("--configs", type=Path, default=HERE.parent / "configs" / "decoy_sweep")
    ap.add_argument("--arms", nargs="+", default=list(ARMS))
    ap.add_argument("--csv", type=Path, default=Path("docs/decoy_sweep_results.csv"))
    ap.add_argument("--md", type=Path, default=None, help="also write the table as Markdown here")
    ap.add_argument("--figure", type=Path, default=Path("docs/figures/decoy_sweep.png"))
    args = ap.parse_args(argv)
    arms = [(a, args.configs / f"{a}.yaml", args.runs / a) for a in args.arms]
    rows = st.study_rows(arms, METRICS, headline="clean")
    for r in rows:
        r["baseline_reliance"] = reliance(rows, r["arm"])
    st.write_csv(rows, args.csv)
    table = st.markdown(rows, "clean", [("random_mean", "random acc"), ("same_mean", "same acc"),
                                        ("relevance_share_same_mean", "relevance on patch (%)")])
    if args.md:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(table + "\n")
    print(table)
    print(f"\nwrote {args.csv} and {figure(rows, args.figure)}")
    missing = sum(int(r["missing"]) for r in rows)
    if missing:
        print(f"note: {missing} run(s) not finished yet are left out (column 'missing')", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
