"""The earlier CPU tables (issues 4 and 5) through reldrop.stats, from their stored summaries.

The run folders of those tables are not in the repository, so per-seed values are gone; what is
stored (benchmarks/cifar10_cpu_results.md, docs/modelnet10_cpu_results.md) is mean ± sample std
over 3 seeds per variant and, for CIFAR-10, mean ± sd of the per-seed paired differences of final
test accuracy. From those: the 95 % CI of each mean (Student t, 2 df) and the paired t-test of each
stored difference (t = mean / (sd / sqrt 3)). The sign-flip test needs the per-seed differences;
they are stored only for regime 3 RelDrop − RE. Inputs are the tables' 2-decimal roundings.

    python benchmarks/stored_stats.py
"""
from __future__ import annotations

import math

from reldrop.stats import fmt_p, sign_flip_test, t_cdf, t_ppf

N = 3
T975 = t_ppf(0.975, N - 1)

#: final test accuracy %, mean and sample std over seeds 0-2 (benchmarks/cifar10_cpu_results.md)
CIFAR = {
    "cifar10_cpu_small": {"baseline": (37.50, 0.26), "RE": (37.13, 0.64), "RelDrop": (37.13, 1.01)},
    "cifar10_cpu_overfit": {"baseline": (39.67, 0.83), "RE": (38.93, 0.61), "RelDrop": (39.13, 1.01)},
    "cifar10_cpu_overfit_r20": {"baseline": (38.00, 1.31), "RE": (36.67, 2.64), "RelDrop": (39.07, 2.89)},
}
#: paired per-seed differences of final test accuracy, mean and sd (same file, "Paired by seed")
PAIRED = {
    "cifar10_cpu_small": {"RelDrop − baseline": (-0.37, 1.02), "RelDrop − RE": (0.00, 1.04)},
    "cifar10_cpu_overfit": {"RelDrop − baseline": (-0.53, 0.23), "RelDrop − RE": (0.20, 0.40)},
    "cifar10_cpu_overfit_r20": {"RelDrop − baseline": (1.07, 1.94), "RelDrop − RE": (2.40, 3.70)},
}
PER_SEED = {("cifar10_cpu_overfit_r20", "RelDrop − RE"): [-1.8, 3.8, 5.2]}
#: final instance accuracy %, docs/modelnet10_cpu_results.md
MODELNET = {"points_modelnet10_cpu": {"baseline": (82.53, 6.15), "random α=1": (80.95, 3.33),
                                      "RelDrop α=0.5": (85.39, 2.88)}}


def ci(mean: float, sd: float) -> str:
    h = T975 * sd / math.sqrt(N)
    return f"[{mean - h:.2f}, {mean + h:.2f}]"


def main() -> None:
    print("| config | variant | final test acc % (mean ± std, n = 3) | 95 % CI |")
    print("|---|---|---|---|")
    for cfg, rows in {**CIFAR, **MODELNET}.items():
        for v, (m, s) in rows.items():
            print(f"| `{cfg}` | {v} | {m:.2f} ± {s:.2f} | {ci(m, s)} |")
    print()
    print("| config | paired difference (pt) | mean ± sd | 95 % CI | p (paired t) | p (sign-flip) | significant at 5 % |")
    print("|---|---|---|---|---|---|---|")
    for cfg, rows in PAIRED.items():
        for v, (m, s) in rows.items():
            t = m / (s / math.sqrt(N))
            p = 2 * t_cdf(-abs(t), N - 1)
            seeds = PER_SEED.get((cfg, v))
            pp = fmt_p(sign_flip_test(seeds, [0.0] * len(seeds))) if seeds else "not stored"
            print(f"| `{cfg}` | {v} | {m:+.2f} ± {s:.2f} | {ci(m, s)} | {fmt_p(p)} | {pp} | "
                  f"{'yes' if p < 0.05 else 'no'} |")


if __name__ == "__main__":
    main()
