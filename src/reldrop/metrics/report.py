"""Collect ``<run>/eval/metrics.json`` of several runs (written by ``reldrop evaluate``) into one
Markdown table and joint figures. Runs that share a parent folder name (``compare``'s
``<variant>/seed<k>/`` layout) are averaged: mean ± std over seeds."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

__all__ = ["collect", "markdown_table", "write_figures", "COLUMNS"]

#: (header, path into metrics.json, digits)
COLUMNS: tuple[tuple[str, tuple[str, ...], int], ...] = (
    ("test acc (%)", ("acc", "accuracy"), 2),
    ("mean corruption acc (%)", ("corruption", "mean"), 2),
    ("RRA placed tiles (%)", ("rra", "mean"), 2),
    ("MoRF acc AUC (%)", ("morf", "morf", "accuracy_auc"), 2),
    ("LeRF acc AUC (%)", ("morf", "lerf", "accuracy_auc"), 2),
    ("random acc AUC (%)", ("morf", "random", "accuracy_auc"), 2),
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
        rows.append({"name": m.get("name", run_dir.name), "group": group, "metrics": m})
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
    """Markdown table: one line per group (variant), mean ± std over its runs."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r["group"], []).append(r)
    head = ["run", "n"] + [c[0] for c in COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g, rs in groups.items():
        cells = [g, str(len(rs))]
        for _, path, digits in COLUMNS:
            vals = [v for v in (_get(r["metrics"], path) for r in rs) if isinstance(v, (int, float))]
            cells.append(_fmt([float(v) for v in vals], digits))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_figures(rows: Sequence[dict[str, Any]], out_dir: str | Path) -> list[Path]:
    """MoRF/LeRF curves of all runs in one plot; channel-AUC change of every run vs the first."""
    from .channel_auc import relative_auc_change
    from ..viz.curves import plot_channel_auc_change, plot_perturbation_curves

    out = Path(out_dir)
    written: list[Path] = []
    curves = {}
    for r in rows:
        m = r["metrics"].get("morf")
        if m:
            for order in ("morf", "lerf"):
                curves[f"{r['name']} {order.upper()}"] = (m[order]["fractions"], m[order]["accuracy"])
    if curves:
        written.append(plot_perturbation_curves(curves, out / "perturbation_all.png", ylabel="test accuracy (%)",
                                                title="region perturbation (own relevance per model)"))
    with_ch = [r for r in rows if _get(r["metrics"], ("channel_auc", "layers"))]
    if len(with_ch) >= 2:
        base = with_ch[0]
        changes = {f"{r['name']} vs {base['name']}": relative_auc_change(r["metrics"]["channel_auc"]["layers"],
                                                                         base["metrics"]["channel_auc"]["layers"])
                   for r in with_ch[1:]}
        written.append(plot_channel_auc_change(changes, out / "channel_auc_change.png",
                                               title="channel-relevance AUC change per layer (Fig. A.2 analogue)"))
    return written
