#!/usr/bin/env bash
# RelDrop on a Vision Transformer (issue 14): `reldrop compare` of configs/cifar10_cpu_vit_tiny.yaml
# (ViT-Tiny from scratch, baseline / RE / RelDrop x 3 seeds; CP-LRP relevance), then
# `reldrop evaluate --metrics acc,corruption,morf` of every final model (last.pt; method auto = cp_lrp;
# 100 fixed test images (a ViT forward costs ~10-20 ms per image here), MoRF/LeRF/random remove 16 of the 64 4x4 patches = a quarter of the image),
# `reldrop report` over them and the heatmap figure: CP-LRP relevance of the seed-0 baseline, RE and
# RelDrop models on the same 8 test images. One thread per process. Re-running reuses finished work.
#
#   bash benchmarks/vit_tiny.sh [OUT] [DATA_ROOT]     # default runs/vit_tiny ../shared/data
set -euo pipefail
OUT=${1:-runs/vit_tiny}
ROOT=${2:-../shared/data}
export OMP_NUM_THREADS=1
reldrop compare -c cifar10_cpu_vit_tiny --out "$OUT" --data-root "$ROOT"
source "$(dirname "$0")/_evaluate_runs.sh"
evaluate_runs "$OUT" "baseline RE RelDrop" "0 1 2" acc,corruption,morf 100 \
  --steps 16 --threads 1 --data-root "$ROOT"
reldrop report "${RUNS[@]}" --out "$OUT/eval_table.md" --csv "$OUT/eval_stats.csv" --figures "$OUT/eval_figures"
reldrop evaluate --checkpoint "$OUT/baseline/seed0" --which last --metrics heatmaps --heatmap-samples 8 \
  --threads 1 --data-root "$ROOT" --compare "$OUT/RE/seed0" "$OUT/RelDrop/seed0" --out "$OUT/figure" > /dev/null
echo "tables: $OUT/results.md $OUT/eval_table.md; figure: $OUT/figure/heatmaps.png"
