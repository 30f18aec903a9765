#!/usr/bin/env bash
# The CPU-scale CIFAR-10 experiment of issue 4 (real data, 3 seeds x none / RE / RelDrop, three configs).
# Each seed runs in its own process (one thread each) so the three seeds share the cores; re-running
# the script resumes / reuses finished runs. The final `reldrop compare` over all seeds only collects
# the finished runs and writes results.md / results.csv / curves.png; clean_gap.py adds the clean
# (no augmentation, eval mode) train accuracy and train-test gap of each final model.
#
#   bash benchmarks/cifar10_cpu.sh [DATA_ROOT]      # default ../shared/data
set -euo pipefail
ROOT=${1:-../shared/data}
for pair in cifar10_cpu_small:small cifar10_cpu_overfit:overfit500 cifar10_cpu_overfit_r20:overfit500_r20; do
  cfg=${pair%%:*}; out=runs/cifar_cpu/${pair##*:}
  for s in 0 1 2; do
    reldrop compare --config configs/$cfg.yaml --out $out --seeds $s --quiet --data-root "$ROOT" &
  done
  wait
  reldrop compare --config configs/$cfg.yaml --out $out --quiet --data-root "$ROOT"
  python benchmarks/clean_gap.py $out --data-root "$ROOT"
done
