#!/usr/bin/env bash
# The CPU-scale CIFAR-10 experiment of issue 4 (real data, 3 seeds x none / RE / RelDrop, two regimes).
# Each seed runs in its own process (one thread each) so the three seeds share the cores; re-running
# the script resumes / reuses finished runs. Then the final `reldrop compare` over all seeds only
# collects the finished runs and writes results.md / results.csv / curves.png.
#
#   bash benchmarks/cifar10_cpu.sh [DATA_ROOT]      # default ../shared/data
set -euo pipefail
ROOT=${1:-../shared/data}
for regime in small overfit; do
  for s in 0 1 2; do
    reldrop compare --config configs/cifar10_cpu_${regime}.yaml --out runs/cifar_cpu/${regime} \
      --seeds $s --quiet --data-root "$ROOT" &
  done
  wait
  reldrop compare --config configs/cifar10_cpu_${regime}.yaml --out runs/cifar_cpu/${regime} --quiet --data-root "$ROOT"
done
