"""Statistics over seeds: mean, std, 95 % confidence interval, paired tests. Pure Python + numpy.

Every comparison ``reldrop compare`` / ``reldrop report`` prints goes through this module:

* :func:`describe`: ``n``, mean, sample std (``ddof=1``) and the 95 % confidence interval of the
  mean, ``mean ± t_{0.975, n-1} · std / sqrt(n)`` (Student t over seeds; undefined for n < 2).
* :func:`paired_t_test`: two-sided paired t-test on the per-seed differences ``a_i − b_i``
  (``t = mean(d) / (sd(d) / sqrt(n))``, ``n − 1`` degrees of freedom).
* :func:`sign_flip_test`: two-sided sign-flip permutation test on the same differences. Under the
  null hypothesis (no difference) every ``d_i`` is as likely to be ``−d_i``; the p-value is the share
  of the ``2^n`` sign patterns whose ``|mean|`` is at least the observed one, enumerated exactly
  for ``n <= 10`` (none for larger n: ``None``). It assumes no normality, but its smallest possible
  p-value is ``2 / 2^n``: 0.0625 for 5 seeds, so with ≤ 5 seeds it can never reach 5 %.

The Student-t distribution is computed here (regularized incomplete beta function by Lentz's
continued fraction, quantile by bisection), so no scipy is needed; the tests compare against
textbook values and, when it is importable, scipy.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["Summary", "PairedTest", "describe", "t_cdf", "t_ppf", "paired_t_test", "sign_flip_test", "fmt_mean_std",
           "paired_test", "compare_groups", "roles", "fmt_p", "fmt_ci", "holm", "statistics_table", "MAX_EXACT_FLIPS",
           "GROUP_STATS"]

#: the sign-flip test enumerates all 2^n patterns up to this n
MAX_EXACT_FLIPS = 10

#: the statistics :func:`compare_groups` gives per group, in the column order of every table and CSV
#: that shows them (``reldrop compare``'s results.csv, ``reldrop report --csv``)
GROUP_STATS = ("n", "mean", "std", "ci95_low", "ci95_high", "diff_vs_baseline", "p_vs_baseline", "p_perm_vs_baseline",
               "significant_vs_baseline", "diff_vs_re", "p_vs_re", "p_perm_vs_re", "significant_vs_re",
               "p_holm_vs_baseline", "significant_holm_vs_baseline", "p_holm_vs_re", "significant_holm_vs_re")


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz, Numerical Recipes 6.4)."""
    tiny, eps = 1e-300, 1e-16
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta function ``I_x(a, b)`` for ``0 <= x <= 1``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbt = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(lbt) * _betacf(a, b, x) / a
    return 1.0 - math.exp(lbt) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """``P(T <= t)`` for Student's t with ``df > 0`` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"df must be > 0, got {df!r}")
    if math.isnan(t):
        return float("nan")
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))  # P(T > |t|)
    return 1.0 - tail if t > 0 else tail


def t_ppf(q: float, df: float) -> float:
    """The ``q`` quantile of Student's t with ``df`` degrees of freedom (bisection to ~1e-13)."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"q must be in (0, 1), got {q!r}")
    if q == 0.5:
        return 0.0
    if q < 0.5:
        return -t_ppf(1.0 - q, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < q:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < q:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def _clean(values: Sequence[float | None]) -> np.ndarray:
    return np.asarray([float(v) for v in values if v is not None and not math.isnan(float(v))], dtype=np.float64)


@dataclass(frozen=True)
class Summary:
    """``n`` values: mean, sample std (0 for n = 1), and the 95 % CI of the mean (NaN for n < 2)."""

    n: int
    mean: float
    std: float
    ci95_low: float
    ci95_high: float


def describe(values: Sequence[float | None], level: float = 0.95) -> Summary:
    """Mean, sample std and the Student-t ``level`` confidence interval of the mean of ``values``.

    ``None`` / NaN entries are dropped. Empty input gives all-NaN with ``n = 0``.
    """
    a = _clean(values)
    n = int(a.size)
    if n == 0:
        nan = float("nan")
        return Summary(0, nan, nan, nan, nan)
    mean = float(a.mean())
    if n == 1:
        return Summary(1, mean, 0.0, float("nan"), float("nan"))
    std = float(a.std(ddof=1))
    half = t_ppf(0.5 + level / 2.0, n - 1) * std / math.sqrt(n)
    return Summary(n, mean, std, mean - half, mean + half)


@dataclass(frozen=True)
class PairedTest:
    """Paired comparison of ``a`` vs ``b`` over ``n`` matching seeds.

    ``diff_mean``/``diff_std``: mean and sample std of ``a_i − b_i``; ``t``, ``df``, ``p`` of the
    two-sided paired t-test (NaN when undefined: n < 2, or all differences equal); ``p_perm``: the
    exact two-sided sign-flip p-value (None for n > :data:`MAX_EXACT_FLIPS` or n < 1).
    """

    n: int
    diff_mean: float
    diff_std: float
    t: float
    df: int
    p: float
    p_perm: float | None

    def significant(self, alpha: float = 0.05) -> bool | None:
        """``p < alpha`` of the paired t-test (None when the test is undefined)."""
        return None if math.isnan(self.p) else bool(self.p < alpha)


def _diffs(a: Sequence[float], b: Sequence[float]) -> np.ndarray:
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired samples must be 1-D of equal length, got {x.shape} and {y.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("paired samples must be finite")
    return x - y


def paired_t_test(a: Sequence[float], b: Sequence[float]) -> tuple[float, int, float]:
    """Two-sided paired t-test of ``a`` vs ``b``: ``(t, df, p)``.

    NaN t and p when n < 2 or the differences have zero spread (t is then undefined).
    """
    d = _diffs(a, b)
    n = int(d.size)
    if n < 2:
        return float("nan"), max(n - 1, 0), float("nan")
    sd = float(d.std(ddof=1))
    if sd == 0.0 or sd <= 1e-14 * float(np.abs(d).max()):
        return float("nan"), n - 1, float("nan")
    t = float(d.mean()) / (sd / math.sqrt(n))
    p = 2.0 * t_cdf(-abs(t), n - 1)
    return t, n - 1, min(1.0, p)


def sign_flip_test(a: Sequence[float], b: Sequence[float], max_exact: int = MAX_EXACT_FLIPS) -> float | None:
    """Exact two-sided sign-flip permutation p-value of ``mean(a − b)``; None for n > ``max_exact`` or n = 0.

    p = (number of the ``2^n`` sign patterns s with ``|Σ s_i d_i| >= |Σ d_i|``) / ``2^n``; ties
    within 1e-12 of the observed value's scale count as "at least" (the identity pattern always
    counts, so p >= 2^-n, and >= 2^(1-n) since flipping all signs gives the same |sum|).
    """
    d = _diffs(a, b)
    n = int(d.size)
    if n == 0 or n > max_exact:
        return None
    bits = (np.arange(2 ** n)[:, None] >> np.arange(n)[None, :]) & 1  # (2^n, n)
    sums = np.abs((1 - 2 * bits) @ d)  # (2^n,)
    obs = abs(float(d.sum()))
    tol = 1e-12 * max(float(np.abs(d).sum()), 1e-300)
    return float(np.count_nonzero(sums >= obs - tol)) / float(2 ** n)


def paired_test(a: Sequence[float], b: Sequence[float]) -> PairedTest:
    """Paired t-test and sign-flip test of ``a`` vs ``b`` (equal-length, seed-matched sequences)."""
    d = _diffs(a, b)
    n = int(d.size)
    t, df, p = paired_t_test(a, b)
    return PairedTest(n=n, diff_mean=float(d.mean()) if n else float("nan"),
                      diff_std=float(d.std(ddof=1)) if n > 1 else (0.0 if n == 1 else float("nan")),
                      t=t, df=df, p=p, p_perm=sign_flip_test(a, b))


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm–Bonferroni adjusted p-values (step-down, monotone), in the input order; None stays None.

    The family is every non-None p of ``pvalues``: with m of them sorted ascending,
    ``p_holm_(i) = max_{j <= i} min(1, (m - j + 1) · p_(j))``. Rejecting where ``p_holm < alpha``
    controls the family-wise error rate at ``alpha``.
    """
    given = {i: float(p) for i, p in enumerate(pvalues) if p is not None and not math.isnan(float(p))}
    out: list[float | None] = [None] * len(pvalues)
    m = len(given)
    running = 0.0
    for rank, i in enumerate(sorted(given, key=given.__getitem__)):
        running = max(running, min(1.0, (m - rank) * given[i]))
        out[i] = running
    return out


def _paired_values(a: dict, b: dict) -> tuple[list[float], list[float]]:
    keys = [k for k in a if k in b and a[k] is not None and b[k] is not None
            and not math.isnan(float(a[k])) and not math.isnan(float(b[k]))]
    return [float(a[k]) for k in keys], [float(b[k]) for k in keys]


def compare_groups(groups: dict[str, dict[object, float | None]], *, baseline: str | None,
                   reference: str | None = None, vs_reference: Sequence[str] = (),
                   alpha: float = 0.05) -> dict[str, dict[str, object]]:
    """Per group: describe() of its values and paired tests against ``baseline`` and ``reference``.

    Args:
        groups: ``{group name: {pairing key (the seed): value}}``.
        baseline: the group every other group is tested against (``p_vs_baseline``); None: no tests.
        reference: the Random Erasing group (``p_vs_re``), tested only for groups in ``vs_reference``.
        alpha: significance level of the yes/no columns.

    Returns ``{group: {key: value for every key of GROUP_STATS, and "pairs_vs_baseline",
    "pairs_vs_re"}}`` (:data:`GROUP_STATS`); entries that do not apply are None;
    significance is "yes"/"no" from the paired t-test (None where it is undefined). Pairs are the keys
    both groups have. The Holm columns correct the t-test p-values for multiple comparisons
    (:func:`holm`); their family is every test of this call, vs baseline and vs RE together.
    """
    out: dict[str, dict[str, object]] = {}
    for name, vals in groups.items():
        s = describe(list(vals.values()))
        row: dict[str, object] = {"n": s.n, "mean": s.mean, "std": s.std, "ci95_low": s.ci95_low,
                                  "ci95_high": s.ci95_high}
        for tag, other, applies in (("baseline", baseline, name != baseline),
                                    ("re", reference, name in vs_reference and name != reference)):
            row.update({f"diff_vs_{tag}": None, f"p_vs_{tag}": None, f"p_perm_vs_{tag}": None,
                        f"significant_vs_{tag}": None, f"pairs_vs_{tag}": None})
            if other is None or not applies or other not in groups:
                continue
            a, b = _paired_values(vals, groups[other])
            if not a:
                continue
            t = paired_test(a, b)
            sig = t.significant(alpha)
            row.update({f"diff_vs_{tag}": t.diff_mean, f"p_vs_{tag}": None if math.isnan(t.p) else t.p,
                        f"p_perm_vs_{tag}": t.p_perm, f"pairs_vs_{tag}": t.n,
                        f"significant_vs_{tag}": None if sig is None else ("yes" if sig else "no")})
        out[name] = row
    keys = [(name, tag) for name in out for tag in ("baseline", "re")]
    raw = [out[name][f"p_vs_{tag}"] for name, tag in keys]
    adjusted = holm([p if isinstance(p, float) else None for p in raw])
    for (name, tag), p in zip(keys, adjusted):
        out[name][f"p_holm_vs_{tag}"] = p
        out[name][f"significant_holm_vs_{tag}"] = None if p is None else ("yes" if p < alpha else "no")
    return out


def roles(names: Sequence[str], augs: Sequence[str | None]) -> tuple[str | None, str | None, list[str]]:
    """``(baseline, reference, vs_reference)`` from variant names and their ``aug.name``.

    baseline: the first variant without augmentation (``aug.name == "none"``), else one named
    "baseline", else the first; reference (Random Erasing): the first with ``aug.name`` "re" (or
    "random": random point dropout), else one named "RE"; vs_reference: the RelDrop variants
    (``aug.name == "reldrop"``, else names starting with "RelDrop").
    """
    names = list(names)
    augs = list(augs) + [None] * (len(names) - len(augs))
    base = next((n for n, a in zip(names, augs) if a == "none"), None)
    base = base or next((n for n in names if n.lower() == "baseline"), None) or (names[0] if names else None)
    ref = next((n for n, a in zip(names, augs) if a in ("re", "random")), None)
    ref = ref or next((n for n in names if n.lower() == "re"), None)
    rel = [n for n, a in zip(names, augs) if a == "reldrop"]
    if not rel and not any(augs):
        rel = [n for n in names if n.lower().startswith("reldrop")]
    return base, ref, rel


def fmt_mean_std(mean: float | None, std: float | None, n: int | None, digits: int = 2) -> str:
    """``"56.92 ± 2.51"`` for tables; ``"56.92 ± –"`` when there is no spread to show (``n < 2``:
    one seed is not a zero spread); ``"–"`` when the mean is missing."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    if (n is not None and n < 2) or std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{mean:.{digits}f} ± –"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def fmt_p(p: float | None) -> str:
    """A p-value for tables: ``"0.0031"``, ``"<0.0001"``, ``"–"`` for None."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "–"
    return "<0.0001" if p < 1e-4 else f"{p:.4f}"


def fmt_ci(low: float | None, high: float | None) -> str:
    """A confidence interval for tables: ``"[55.10, 58.74]"``, ``"–"`` when an end is missing."""
    return "–" if low is None or high is None else f"[{low:.2f}, {high:.2f}]"


def _statistics_cells(s: Mapping[str, Any], *, n: bool, diff: bool, blank: bool) -> list[str]:
    """[n], mean ± std, 95 % CI, then per comparison (vs baseline, vs RE): [Δ], p (t), p (sign-flip),
    p (Holm), significant (Holm); ``blank``: empty cells where a comparison does not apply."""
    cells = ["" if s.get("n") is None else str(s["n"])] if n else []
    cells += [fmt_mean_std(s.get("mean"), s.get("std"), s.get("n")), fmt_ci(s.get("ci95_low"), s.get("ci95_high"))]
    for tag in ("baseline", "re"):
        p, pp, ph, sig = (s.get(f"{k}_vs_{tag}") for k in ("p", "p_perm", "p_holm", "significant_holm"))
        if blank and p is None and pp is None and sig is None:
            cells += [""] * (5 if diff else 4)
            continue
        if diff:
            d = s.get(f"diff_vs_{tag}")
            cells.append("–" if d is None else f"{d:+.2f}")
        cells += [fmt_p(p), fmt_p(pp), fmt_p(ph), sig or "–"]
    return cells


def statistics_table(head: Sequence[str], entries: Sequence[tuple[Sequence[str], Mapping[str, Any]]], *,
                     n: bool = True, diff: bool = False, blank: bool = False) -> list[str]:
    """Markdown lines of a statistics table: ``head``, the rule, one line per ``(label cells, stats)``.

    ``stats``: one group's entry of :func:`compare_groups` (the :data:`GROUP_STATS` keys; missing
    ones count as None). After the labels: the ``n`` column (with ``n``), mean ± std, 95 % CI, and
    per comparison (vs baseline, vs RE) the mean difference (with ``diff``), t-test p, sign-flip p,
    Holm p and the Holm verdict; ``blank`` leaves a comparison's cells empty where it does not apply.
    """
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for labels, s in entries:
        lines.append("| " + " | ".join(list(labels) + _statistics_cells(s, n=n, diff=diff, blank=blank)) + " |")
    return lines

