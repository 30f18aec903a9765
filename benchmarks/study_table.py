"""Results table of a multi-arm study: several ``reldrop compare`` folders (one per arm) -> one CSV.

Used by the shortcut-strength sweep (``benchmarks/decoy_sweep.py``) and the data-scarce finetuning
study (``benchmarks/effnet_fewshot.py``). For every arm × variant: n seeds, mean ± std and the 95 %
Student-t CI of the headline metric, the means of the secondary metrics, and paired t-tests over
matching seeds against the arm's baseline, its Random Erasing variant and (for RelDrop) its
equal-compute baseline, with Holm-corrected p-values over every test of the table.

Where the numbers come from (the run folders ``compare`` writes, ``<arm out>/<variant>/seed<k>``):
``metrics.jsonl`` (last row: ``test_acc``, ``train_clean_acc``), ``test_sets.json`` (the extra test
sets of ``compare.test_sets``, e.g. the decoy modes or ``full``), ``eval/metrics.json`` of
``reldrop evaluate`` (relevance share on the decoy), if present. A run that has not finished its
epochs (by its ``last.pt``, or ``finished.json`` for an archived run) is left out and counted in ``missing``.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from reldrop.runs.archive import finished_epoch
from reldrop.stats import describe, holm, paired_test, roles
from reldrop.train.compare import expand_variants, variant_dirs
from reldrop.train.config import load_config

Getter = Callable[[Path], "float | None"]


def last_row(run: Path) -> dict[str, Any] | None:
    path = run / "metrics.jsonl"
    if not path.is_file():
        return None
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    return json.loads(lines[-1]) if lines else None


def metric_from_log(key: str) -> Getter:
    def get(run: Path) -> float | None:
        row = last_row(run)
        return None if row is None or key not in row else float(row[key])
    return get


def metric_from_test_set(name: str) -> Getter:
    def get(run: Path) -> float | None:
        path = run / "test_sets.json"
        if not path.is_file():
            return None
        sets = json.loads(path.read_text()).get("sets", {})
        return float(sets[name]["acc"]) if name in sets else None
    return get


def metric_from_eval(*keys: str) -> Getter:
    def get(run: Path) -> float | None:
        path = run / "eval" / "metrics.json"
        if not path.is_file():
            return None
        d: Any = json.loads(path.read_text())
        for k in keys:
            if not isinstance(d, dict) or k not in d:
                return None
            d = d[k]
        return float(d) if isinstance(d, (int, float)) else None
    return get


def finished(run: Path, epochs: int) -> bool:
    """The run holds its last epoch: by its checkpoint, or for an archived run by ``finished.json``
    (the metrics log alone can be ahead of the checkpoint)."""
    try:
        held = finished_epoch(run)
    except Exception:  # an unreadable checkpoint or marker is not a finished run
        return False
    return held is not None and held >= epochs


def arm_values(config: str | Path, out: Path, metrics: Mapping[str, Getter]
               ) -> tuple[dict[str, dict[str, dict[int, float]]], dict[str, str], dict[str, int]]:
    """``({variant: {metric: {seed: value}}}, {variant: aug role name}, {variant: missing runs})`` of one arm."""
    cfg = load_config(str(config))
    seeds = [int(s) for s in cfg["compare"]["seeds"]]
    if not out.is_dir():
        raise FileNotFoundError(f"{out} not found: run `reldrop compare --config {config} --out {out}` first")
    # the folders compare writes, <out>/<variant folder>/seed<k> (not runs.csv: it lists only the variants
    # of the last compare call, and none while the first has not finished)
    folders = variant_dirs(out, [name for name, _ in expand_variants(cfg)])
    dirs = {(name, seed): folders[name] / f"seed{seed}" for name in folders for seed in seeds}
    values: dict[str, dict[str, dict[int, float]]] = {}
    augs: dict[str, str] = {}
    missing: dict[str, int] = {}
    for name, vcfg in expand_variants(cfg):
        scale = (vcfg.get("compare") or {}).get("epochs_scale")
        scaled = scale is not None
        augs[name] = vcfg["aug"]["name"] + ("" if not scaled else "@auto" if scale == "auto" else "@scaled")
        values[name] = {m: {} for m in metrics}
        missing[name] = 0
        epochs = None if scaled else int(vcfg["train"]["epochs"])
        for seed in seeds:
            run = dirs.get((name, seed))
            row = None if run is None else last_row(run)
            need = epochs if epochs is not None else (row or {}).get("epoch", 10 ** 9)
            if run is None or row is None or not finished(run, int(need)):
                missing[name] += 1
                continue
            for m, get in metrics.items():
                v = get(run)
                if v is not None and math.isfinite(v):
                    values[name][m][seed] = v
    return values, augs, missing


def _paired(a: Mapping[int, float], b: Mapping[int, float]) -> tuple[list[float], list[float]]:
    keys = sorted(set(a) & set(b))
    return [a[k] for k in keys], [b[k] for k in keys]


def study_rows(arms: Sequence[tuple[str, str | Path, Path]], metrics: Mapping[str, Getter], headline: str,
               extra: Mapping[str, Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One row per arm × variant (see the module docstring). ``arms``: ``(arm name, config, compare out)``;
    ``metrics``: name -> getter, ``headline`` one of them; ``extra``: more columns per arm."""
    rows: list[dict[str, Any]] = []
    tests: list[tuple[int, str]] = []  # (row index, tag) of every p-value in the table, for Holm
    for arm, config, out in arms:
        values, augs, missing = arm_values(config, out, metrics)
        names = list(values)
        base, ref, rel = roles(names, [augs[n] for n in names])
        equal = next((n for n in names if augs[n] == "none@auto"), None) or next(
            (n for n in names if augs[n] == "none@scaled"), None)
        for name in names:
            head = values[name][headline]
            s = describe(list(head.values()))
            row: dict[str, Any] = {"arm": arm, **(extra or {}).get(arm, {}), "variant": name, "n": s.n,
                                   "missing": missing[name], f"{headline}_mean": s.mean, f"{headline}_std": s.std,
                                   f"{headline}_ci95_low": s.ci95_low, f"{headline}_ci95_high": s.ci95_high}
            for m in metrics:
                if m != headline:
                    vals = list(values[name][m].values())
                    row[f"{m}_mean"] = float(np.mean(vals)) if vals else None
            for tag, other, applies in (("baseline", base, name != base),
                                        ("re", ref, name in rel and name != ref),
                                        ("equal_compute", equal, name in rel and equal is not None)):
                row.update({f"diff_vs_{tag}": None, f"diff_ci95_low_vs_{tag}": None, f"diff_ci95_high_vs_{tag}": None,
                            f"p_vs_{tag}": None, f"p_perm_vs_{tag}": None})
                if other is None or not applies:
                    continue
                a, b = _paired(head, values[other][headline])
                if len(a) < 2:
                    continue
                t = paired_test(a, b)
                d = describe([x - y for x, y in zip(a, b)])
                row.update({f"diff_vs_{tag}": t.diff_mean, f"diff_ci95_low_vs_{tag}": d.ci95_low,
                            f"diff_ci95_high_vs_{tag}": d.ci95_high,
                            f"p_vs_{tag}": None if math.isnan(t.p) else t.p, f"p_perm_vs_{tag}": t.p_perm})
                if row[f"p_vs_{tag}"] is not None:
                    tests.append((len(rows), tag))
            rows.append(row)
    adjusted = holm([rows[i][f"p_vs_{tag}"] for i, tag in tests])
    for row in rows:
        for tag in ("baseline", "re", "equal_compute"):
            row[f"p_holm_vs_{tag}"] = None
    for (i, tag), p in zip(tests, adjusted):
        rows[i][f"p_holm_vs_{tag}"] = p
    for row in rows:
        for tag in ("baseline", "re", "equal_compute"):
            p = row[f"p_holm_vs_{tag}"]
            row[f"significant_holm_vs_{tag}"] = None if p is None else ("yes" if p < 0.05 else "no")
    return rows


def write_csv(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    keys: list[str] = []
    for r in rows:
        keys.extend(k for k in r if k not in keys)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    return path


def markdown(rows: Sequence[Mapping[str, Any]], headline: str, columns: Sequence[tuple[str, str]]) -> str:
    """A Markdown table: arm, variant, n, headline mean ± std [CI], ``columns`` (key, header), the tests."""
    from reldrop.stats import fmt_mean_std, fmt_p

    def num(v: Any) -> str:
        return "–" if v is None else f"{v:.2f}"

    head = ["arm", "variant", "n", f"{headline} mean ± std", "95 % CI", *[h for _, h in columns],
            "Δ vs baseline", "p", "p Holm", "Δ vs RE", "p", "p Holm", "Δ vs equal compute", "p", "p Holm"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        ci = "–" if r[f"{headline}_ci95_low"] is None or (isinstance(r[f"{headline}_ci95_low"], float)
                                                          and math.isnan(r[f"{headline}_ci95_low"])) \
            else f"[{r[f'{headline}_ci95_low']:.2f}, {r[f'{headline}_ci95_high']:.2f}]"
        cells = [str(r["arm"]), str(r["variant"]), str(r["n"]),
                 fmt_mean_std(r[f"{headline}_mean"], r[f"{headline}_std"], r["n"]), ci,
                 *[num(r.get(k)) for k, _ in columns]]
        for tag in ("baseline", "re", "equal_compute"):
            d = r.get(f"diff_vs_{tag}")
            cells += ["" if d is None else f"{d:+.2f}", fmt_p(r.get(f"p_vs_{tag}")) if d is not None else "",
                      fmt_p(r.get(f"p_holm_vs_{tag}")) if d is not None else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


_AGAINST = {"baseline": "the baseline", "re": "Random Erasing", "equal_compute": "the equal-compute baseline"}


def readings(rows: Sequence[Mapping[str, Any]], unit: str = "points") -> list[str]:
    """One Markdown bullet per test of the table, in its order: the paired difference (mean, 95 % CI,
    n seeds), raw and Holm p, and "significant" only when Holm p < 0.05 (else "not significant")."""
    from reldrop.stats import fmt_ci, fmt_p

    out: list[str] = []
    for r in rows:
        for tag, against in _AGAINST.items():
            p_holm = r.get(f"p_holm_vs_{tag}")
            if p_holm is None:
                continue
            d = r[f"diff_vs_{tag}"]
            verdict = "**significant**" if p_holm < 0.05 else "not significant"
            out.append(f"- {r['arm']}: {r['variant']} − {against}: {d:+.2f} {unit} "
                       f"{fmt_ci(r[f'diff_ci95_low_vs_{tag}'], r[f'diff_ci95_high_vs_{tag}'])} over {r['n']} seeds, "
                       f"p = {fmt_p(r[f'p_vs_{tag}'])}, Holm p = {fmt_p(p_holm)}: {verdict}")
    return out
