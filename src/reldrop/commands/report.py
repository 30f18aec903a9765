"""``reldrop report RUN_DIR...``: collect ``<run>/eval/metrics.json`` of several runs (written by
``reldrop evaluate``) into one Markdown table and joint figures. Runs that share a parent folder name (``compare``'s
``<variant>/seed<k>/`` layout) are averaged: mean ± std over seeds.

:func:`statistics_rows` / :func:`statistics_table` add, per metric and group, the 95 % Student-t
confidence interval over seeds and paired tests over matching seeds (same ``seed<k>`` folder name)
of every group vs the baseline (the first group) and of every RelDrop group vs Random Erasing
(:mod:`reldrop.stats`)."""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any, Sequence

from ..stats import GROUP_STATS

__all__ = ["collect", "markdown_table", "write_figures", "statistics_rows", "statistics_table", "write_statistics_csv",
           "COLUMNS", "STAT_COLUMNS", "HELP", "add_arguments", "run"]

HELP = "collect RUN_DIR/eval/metrics.json of several runs into one Markdown table (and joint figures)"

#: (header, path into metrics.json, digits)
COLUMNS: tuple[tuple[str, tuple[str, ...], int], ...] = (
    ("test acc (%)", ("acc", "accuracy"), 2),
    ("mean corruption acc (%)", ("corruption", "mean"), 2),
    ("RRA placed tiles (%)", ("rra", "mean"), 2),
    ("placed-tile acc (%)", ("rra", "placed_accuracy"), 2),
    ("MoRF acc AUC (%)", ("morf", "morf", "accuracy_auc"), 2),
    ("LeRF acc AUC (%)", ("morf", "lerf", "accuracy_auc"), 2),
    ("random acc AUC (%)", ("morf", "random", "accuracy_auc"), 2),
    ("point-flipping AUC (%)", ("flipping", "fixed", "accuracy_auc"), 2),
    ("random flipping AUC (%)", ("flipping", "random", "accuracy_auc"), 2),
    ("clean (no decoy) acc (%)", ("decoy", "none", "accuracy"), 2),
    ("decoy-random acc (%)", ("decoy", "random", "accuracy"), 2),
    ("decoy-same acc (%)", ("decoy", "same", "accuracy"), 2),
    ("relevance on decoy, same (%)", ("decoy", "same", "relevance_share"), 2),
    ("RRA on decoy, same (%)", ("decoy", "same", "rra"), 2),
    ("relevance on decoy, random (%)", ("decoy", "random", "relevance_share"), 2),
)


def _get(d: Any, path: Sequence[str]) -> Any:
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def collect(runs: Sequence[str | Path]) -> list[dict[str, Any]]:
    """One entry per run: ``{"name", "group", "metrics"}`` (group = variant for ``<variant>/seed<k>``)."""
    rows = []
    for r in runs:
        p = Path(r)
        f = p if p.suffix == ".json" else p / "eval" / "metrics.json"
        if not f.is_file():
            raise FileNotFoundError(f"{f} not found: run `reldrop evaluate --checkpoint {p}` first")
        try:
            m = json.loads(f.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{f} is not valid JSON ({err})") from None
        run_dir = f.parent.parent
        group = run_dir.parent.name if run_dir.name.startswith("seed") else run_dir.name
        rows.append({"name": m.get("name", run_dir.name), "group": group, "key": run_dir.name, "metrics": m})
    return rows


def _fmt(values: list[float], digits: int) -> str:
    if not values:
        return "-"
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown table: one line per group (variant), mean ± std over its runs.

    Columns no run has (e.g. point flipping for image runs) are left out; a run missing a metric
    that others have shows "-".
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r["group"], []).append(r)
    cols = [c for c in COLUMNS if any(isinstance(_get(r["metrics"], c[1]), (int, float)) for r in rows)]
    head = ["run", "n"] + [c[0] for c in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g, rs in groups.items():
        cells = [g, str(len(rs))]
        for _, path, digits in cols:
            vals = [v for v in (_get(r["metrics"], path) for r in rs) if isinstance(v, (int, float))]
            cells.append(_fmt([float(v) for v in vals], digits))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


#: columns of :func:`statistics_rows` / the CSV of ``reldrop report --csv``: the statistics of
#: :data:`reldrop.stats.GROUP_STATS` but the mean differences
STAT_COLUMNS = ("group", "metric", *(k for k in GROUP_STATS if not k.startswith("diff_")))


def statistics_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (metric column, group): n, mean, std, 95 % CI, paired tests (see :data:`STAT_COLUMNS`).

    Baseline = the first group; Random Erasing = the first group whose runs used ``aug`` "re" (or
    "random"); ``p_vs_re`` only for groups whose runs used ``aug`` "reldrop". Runs are paired by their
    folder name (``seed<k>``). Not-applicable entries are None. ``p_holm_*``: Holm-corrected t-test
    p-values, the family being every test of one metric (vs baseline and vs RE together).
    """
    from ..stats import compare_groups, roles

    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r["group"], []).append(r)
    names = list(groups)
    _, ref, rel = roles(names, [groups[g][0]["metrics"].get("aug") for g in names])
    base = names[0] if names else None
    out = []
    for header, path, _ in COLUMNS:
        vals: dict[str, dict[object, float | None]] = {g: {r.get("key", r["name"]): float(v) for r in rs
                    if isinstance(v := _get(r["metrics"], path), (int, float))} for g, rs in groups.items()}
        if not any(vals.values()):
            continue
        st = compare_groups(vals, baseline=base, reference=ref, vs_reference=rel)
        for g in names:
            s = st[g]
            out.append({"group": g, "metric": header, **{k: (None if isinstance(v, float) and math.isnan(v) else v)
                                                          for k in STAT_COLUMNS[2:] for v in (s[k],)}})
    return out


def statistics_table(stat_rows: Sequence[dict[str, Any]]) -> str:
    """Markdown of :func:`statistics_rows`: one line per metric and group."""
    from ..stats import statistics_table as table

    tests = ["p (sign-flip)", "p (Holm)", "significant (Holm)"]
    head = ["metric", "run", "n", "mean ± std", "95 % CI", "p vs baseline (t)", *tests, "p vs RE (t)", *tests]
    return "\n".join(table(head, [([r["metric"], r["group"]], r) for r in stat_rows]))


def write_statistics_csv(stat_rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Write :func:`statistics_rows` as CSV (:data:`STAT_COLUMNS`; None -> empty cell)."""
    import csv

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(STAT_COLUMNS))
        w.writeheader()
        w.writerows(stat_rows)
    return path


def _group_mean(rows: Sequence[dict[str, Any]], path: Sequence[str]) -> dict[str, Any]:
    """``{group: mean over its runs}`` of a list (elementwise) or ``{layer: {"auc"}}`` entry at ``path``."""
    out: dict[str, Any] = {}
    groups: dict[str, list[Any]] = {}
    for r in rows:
        v = _get(r["metrics"], path)
        if v is not None:
            groups.setdefault(r["group"], []).append(v)
    for g, vs in groups.items():
        if isinstance(vs[0], list):
            out[g] = [sum(t) / len(t) for t in zip(*vs)]
        elif isinstance(vs[0], dict):
            layers = [k for k in vs[0] if all(k in v for v in vs)]
            out[g] = {k: sum(float(v[k]["auc"]) for v in vs) / len(vs) for k in layers}
    return out


def write_figures(rows: Sequence[dict[str, Any]], out_dir: str | Path) -> list[Path]:
    """Joint figures, runs of one group (variant) averaged over seeds:

    * ``perturbation_all.png``: MoRF and LeRF accuracy curves of every group;
    * ``channel_auc_change.png``: relative channel-relevance AUC change per layer of every group
      vs the first group (the baseline), Fig. A.2 analogue.
    """
    from ..viz.curves import plot_channel_auc_change, plot_perturbation_curves
    from ..metrics.channel_auc import relative_auc_change

    out = Path(out_dir)
    written: list[Path] = []
    curves = {}
    for order in ("morf", "lerf"):
        acc = _group_mean(rows, ("morf", order, "accuracy"))
        xs = _group_mean(rows, ("morf", order, "fractions"))
        for g in acc:
            curves[f"{g} {order.upper()}"] = (xs[g], acc[g])
    if curves:
        written.append(plot_perturbation_curves(curves, out / "perturbation_all.png", ylabel="test accuracy (%)",
                                                title="region perturbation (each model's own relevance)"))
    layer_auc = _group_mean(rows, ("channel_auc", "layers"))
    if len(layer_auc) >= 2:
        names = list(layer_auc)
        base = names[0]
        changes = {f"{g} vs {base}": relative_auc_change(layer_auc[g], layer_auc[base]) for g in names[1:]}
        written.append(plot_channel_auc_change(changes, out / "channel_auc_change.png",
                                               title="channel-relevance AUC change per layer (Fig. A.2 analogue)"))
    return written


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="evaluated run directories (first = baseline)")
    parser.add_argument("--out", default=None, help="write the table to this Markdown file (default: print only)")
    parser.add_argument("--csv", default=None, metavar="PATH",
                        help="write the statistics (n, mean, std, ci95_low, ci95_high, p_vs_baseline, p_vs_re, ...) "
                             "per metric and run group to this CSV")
    parser.add_argument("--figures", default=None, metavar="DIR",
                        help="also write joint figures: MoRF curves and channel-AUC change vs the first run")


def run(args: argparse.Namespace) -> int:
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
