"""reldrop.stats against hand-computed and textbook values (and scipy when it is importable)."""
from __future__ import annotations

import math

import pytest

from reldrop.stats import (compare_groups, describe, fmt_p, paired_t_test, paired_test, roles, sign_flip_test,
                           t_cdf, t_ppf)

# Student's sleep data (Cushny & Peebles 1905, R `datasets::sleep`): extra hours of sleep of 10
# patients under two drugs. R: t.test(extra ~ group, data = sleep, paired = TRUE) ->
# t = -4.0621, df = 9, p-value = 0.002833, mean difference -1.58, 95 % CI (-2.4598858, -0.7001142).
SLEEP_1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
SLEEP_2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]


def close(a: float, b: float, rel: float = 1e-6) -> bool:
    return abs(a - b) <= rel * max(abs(b), 1e-300)


@pytest.mark.parametrize("df,q975", [(1, 12.7062047361747), (2, 4.30265272974946), (4, 2.77644510519779),
                                     (9, 2.26215716279820), (29, 2.04522964213270), (1000, 1.96233908082641)])
def test_t_quantiles_match_tables(df: int, q975: float) -> None:
    assert close(t_ppf(0.975, df), q975, 1e-9)
    assert close(t_ppf(0.025, df), -q975, 1e-9)
    assert close(t_cdf(q975, df), 0.975, 1e-10)


def test_t_cdf_closed_forms() -> None:
    # df = 1 is the Cauchy distribution, df = 2 has F(t) = 1/2 + t / (2 sqrt(2 + t^2))
    for t in (-7.5, -1.0, -0.1, 0.0, 0.3, 2.0, 40.0):
        assert close(t_cdf(t, 1), 0.5 + math.atan(t) / math.pi, 1e-12)
        assert close(t_cdf(t, 2), 0.5 + t / (2 * math.sqrt(2 + t * t)), 1e-12)
    assert t_cdf(math.inf, 3) == 1.0 and t_cdf(-math.inf, 3) == 0.0
    with pytest.raises(ValueError):
        t_cdf(1.0, 0)
    with pytest.raises(ValueError):
        t_ppf(1.0, 3)


def test_describe_hand_computed() -> None:
    s = describe([1.0, 2.0, 3.0])  # mean 2, sd 1, half-width t_{.975,2} / sqrt(3)
    half = 4.30265272974946 / math.sqrt(3)
    assert s.n == 3 and s.mean == 2.0 and s.std == 1.0
    assert close(s.ci95_low, 2 - half, 1e-10) and close(s.ci95_high, 2 + half, 1e-10)
    one = describe([5.0, None, float("nan")])
    assert one.n == 1 and one.mean == 5.0 and one.std == 0.0 and math.isnan(one.ci95_low)
    assert describe([]).n == 0 and math.isnan(describe([]).mean)


def test_paired_t_test_sleep_data() -> None:
    t, df, p = paired_t_test(SLEEP_1, SLEEP_2)
    assert df == 9
    assert close(t, -4.062127683382037, 1e-9)
    assert close(p, 0.002832890197384, 1e-6)
    d = [a - b for a, b in zip(SLEEP_1, SLEEP_2)]
    s = describe(d)  # the CI of the paired difference, as R prints it
    assert close(s.ci95_low, -2.4598858, 1e-7) and close(s.ci95_high, -0.7001142, 1e-6)


def test_paired_t_test_hand_computed() -> None:
    # d = (1, 2, 3): t = 2 / (1 / sqrt 3) = 2 sqrt 3, df 2, p = 1 - t / sqrt(2 + t^2) = 1 - sqrt(12/14)
    t, df, p = paired_t_test([2.0, 4.0, 6.0], [1.0, 2.0, 3.0])
    assert close(t, 2 * math.sqrt(3), 1e-12) and df == 2
    assert close(p, 1 - math.sqrt(12 / 14), 1e-10)
    # symmetric: swapping the samples flips t, keeps p
    t2, _, p2 = paired_t_test([1.0, 2.0, 3.0], [2.0, 4.0, 6.0])
    assert close(t2, -t, 1e-12) and close(p2, p, 1e-12)


def test_paired_t_test_undefined_cases() -> None:
    assert math.isnan(paired_t_test([1.0], [0.0])[2])  # n < 2
    assert math.isnan(paired_t_test([1.5, 2.5], [1.0, 2.0])[2])  # constant differences
    with pytest.raises(ValueError):
        paired_t_test([1.0, 2.0], [1.0])
    with pytest.raises(ValueError):
        paired_t_test([1.0, float("nan")], [1.0, 2.0])


def test_sign_flip_hand_computed() -> None:
    # d = (1, 2, 3): sums over the 8 sign patterns are ±6, ±4, ±2, 0, 0 -> |sum| >= 6 twice: p = 2/8
    assert sign_flip_test([1.0, 2.0, 3.0], [0.0, 0.0, 0.0]) == 0.25
    # d = (1, -1, 2): observed |sum| 2; patterns with |sum| >= 2: (+,-,+)=2, (-,+,-)=-2, (+,+,+)=4,
    # (-,-,-)=-4, (-,-,+)=2, (+,+,-)=-2 -> 6/8
    assert sign_flip_test([1.0, -1.0, 2.0], [0.0, 0.0, 0.0]) == 0.75
    # sleep data: 9 negative differences and one zero -> only the 4 "all one sign" patterns reach 15.8
    assert sign_flip_test(SLEEP_1, SLEEP_2) == 4 / 1024
    # five seeds all in one direction: the smallest p a sign-flip test can give, 2 / 32
    assert sign_flip_test([1, 2, 3, 4, 5], [0, 0, 0, 0, 0]) == 0.0625
    assert sign_flip_test(list(range(11)), [0] * 11) is None
    assert sign_flip_test([0.0, 0.0], [0.0, 0.0]) == 1.0


def test_against_scipy_when_available() -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    import numpy as np

    rng = np.random.default_rng(0)
    for n in (2, 3, 5, 8, 30):
        a, b = rng.normal(size=n), rng.normal(size=n) + 0.3
        t, df, p = paired_t_test(a.tolist(), b.tolist())
        ref = scipy_stats.ttest_rel(a, b)
        assert close(t, float(ref.statistic), 1e-9) and close(p, float(ref.pvalue), 1e-8)
        for q in (0.6, 0.9, 0.975, 0.999):
            assert close(t_ppf(q, df), float(scipy_stats.t.ppf(q, df)), 1e-9)
        if n <= 10:
            perm = scipy_stats.permutation_test((a - b,), lambda d: np.mean(d), permutation_type="samples",
                                                n_resamples=np.inf, alternative="two-sided")
            assert close(sign_flip_test(a.tolist(), b.tolist()), float(perm.pvalue), 1e-9)


def test_paired_test_and_compare_groups() -> None:
    r = paired_test([2.0, 4.0, 6.0], [1.0, 2.0, 3.0])
    assert r.n == 3 and r.diff_mean == 2.0 and r.diff_std == 1.0 and r.p_perm == 0.25
    assert r.significant() is False
    groups = {"baseline": {0: 1.0, 1: 2.0, 2: 3.0},
              "RE": {0: 2.0, 1: 4.0, 2: 6.0},
              "RelDrop": {0: 11.0, 1: 12.1, 2: 13.0, 7: 99.0}}  # seed 7 has no partner: not paired
    rows = compare_groups(groups, baseline="baseline", reference="RE", vs_reference=["RelDrop"])
    assert rows["baseline"]["p_vs_baseline"] is None and rows["baseline"]["p_vs_re"] is None
    assert rows["RE"]["p_vs_re"] is None and close(rows["RE"]["p_vs_baseline"], 1 - math.sqrt(12 / 14), 1e-10)
    rd = rows["RelDrop"]
    assert rd["n"] == 4 and rd["pairs_vs_baseline"] == 3 and rd["significant_vs_baseline"] == "yes"
    t, _, p = paired_t_test([11.0, 12.1, 13.0], [1.0, 2.0, 3.0])
    assert close(rd["p_vs_baseline"], p, 1e-12) and p < 0.05
    assert rd["p_perm_vs_re"] == 0.25 and rd["significant_vs_re"] in ("yes", "no")


def test_roles_and_format() -> None:
    assert roles(["baseline", "RE", "RelDrop", "RelDrop p=1"], ["none", "re", "reldrop", "reldrop"]) == \
        ("baseline", "RE", ["RelDrop", "RelDrop p=1"])
    assert roles(["a", "b"], [None, None]) == ("a", None, [])
    assert roles(["baseline", "random", "RelDrop"], ["none", "random", "reldrop"])[1] == "random"
    assert fmt_p(None) == "–" and fmt_p(0.00001) == "<0.0001" and fmt_p(0.0312) == "0.0312"


def test_fmt_mean_std_shows_no_spread_for_one_value() -> None:
    from reldrop.stats import describe, fmt_mean_std

    one = describe([56.9])
    assert fmt_mean_std(one.mean, one.std, one.n) == "56.90 ± –"  # one seed is not a zero spread
    two = describe([45.0, 45.0])
    assert fmt_mean_std(two.mean, two.std, two.n) == "45.00 ± 0.00"  # two equal seeds are
    assert fmt_mean_std(float("nan"), 0.0, 0) == "–" and fmt_mean_std(None, None, None) == "–"
    assert fmt_mean_std(1.23456, 0.5, 3, digits=1) == "1.2 ± 0.5"


def test_holm_matches_the_textbook_step_down() -> None:
    from reldrop.stats import holm

    # Holm (1979) by hand: sorted 0.01, 0.02, 0.03, 0.04 with m = 4 -> 0.04, 0.06, 0.06 (monotone), 0.06;
    # R: p.adjust(c(0.03, None, 0.01, 0.04, 0.02), "holm") on the four given values
    out = holm([0.03, None, 0.01, 0.04, 0.02])
    assert out[1] is None
    assert [round(v, 12) for v in (out[2], out[4], out[0], out[3])] == [0.04, 0.06, 0.06, 0.06]
    assert holm([0.5, 0.9]) == [1.0, 1.0]  # capped at 1
    assert holm([]) == [] and holm([None]) == [None]
    assert holm([0.2]) == [0.2]  # a family of one is not corrected


def test_compare_groups_adds_holm_over_every_test_of_the_call() -> None:
    from reldrop.stats import holm

    groups = {"baseline": {0: 50.0, 1: 52.0, 2: 51.0, 3: 50.5}, "RE": {0: 51.0, 1: 52.5, 2: 52.0, 3: 51.0},
              "RelDrop": {0: 53.0, 1: 54.5, 2: 53.2, 3: 52.9}}
    rows = compare_groups(groups, baseline="baseline", reference="RE", vs_reference=["RelDrop"])
    raw = [rows["RE"]["p_vs_baseline"], rows["RelDrop"]["p_vs_baseline"], rows["RelDrop"]["p_vs_re"]]
    expect = holm(raw)
    got = [rows["RE"]["p_holm_vs_baseline"], rows["RelDrop"]["p_holm_vs_baseline"], rows["RelDrop"]["p_holm_vs_re"]]
    assert got == expect and all(g >= r for g, r in zip(got, raw))
    assert rows["baseline"]["p_holm_vs_baseline"] is None and rows["RE"]["p_holm_vs_re"] is None
    assert rows["RelDrop"]["significant_holm_vs_baseline"] == ("yes" if got[1] < 0.05 else "no")


def test_compare_groups_gives_every_group_stat_and_one_table_shows_them() -> None:
    from reldrop.stats import GROUP_STATS, fmt_ci, statistics_table

    groups = {"baseline": {0: 50.0, 1: 52.0, 2: 51.0}, "RE": {0: 51.0, 1: 52.5, 2: 52.0},
              "RelDrop": {0: 53.0, 1: 54.5, 2: 53.2}}
    rows = compare_groups(groups, baseline="baseline", reference="RE", vs_reference=["RelDrop"])
    assert all(set(GROUP_STATS) <= set(r) for r in rows.values())
    assert fmt_ci(None, 1.0) == "–" and fmt_ci(1.0, 2.345) == "[1.00, 2.35]"
    lines = statistics_table(["run", "n", "mean", "ci", *["x"] * 8], [([g], rows[g]) for g in rows], blank=True)
    assert lines[0].count("|") == 13 and lines[1] == "|" + "---|" * 12
    assert lines[2].startswith("| baseline | 3 | 51.00 ± 1.00 | [") and lines[2].endswith("|  |  |  |  |  |  |  |  |")
    full = statistics_table(["run"] + ["x"] * 13, [(["RelDrop"], rows["RelDrop"])], diff=True)[2].split(" | ")
    assert full[4] == f"{rows['RelDrop']['diff_vs_baseline']:+.2f}" and full[-1] == f"{rows['RelDrop']['significant_holm_vs_re']} |"
