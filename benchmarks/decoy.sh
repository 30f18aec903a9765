#!/usr/bin/env bash
# The decoy (shortcut) benchmark of issue 12: `reldrop compare` of a decoy preset (5 variants x 5
# seeds; results.md / results.csv with CIs and paired tests, clean test = headline, `random` / `same`
# decoy test sets), then `reldrop evaluate --metrics acc,decoy` of every final model (relevance on
# the decoy, RRA vs the patch mask, accuracy per test mode), `reldrop report` over them (table +
# statistics CSV) and the figure: input with the training decoy, baseline and RelDrop heatmaps (seed 0).
# Re-running reuses finished runs.
#
#   bash benchmarks/decoy.sh [PRESET] [OUT] [DATA_ROOT]     # default decoy_digits runs/decoy_digits ../shared/data
#   LIMIT=1000 bash benchmarks/decoy.sh ...   # relevance metrics on 1 000 fixed test images per mode
#                                             # (default 0 = all; accuracy always uses the whole test set)
set -euo pipefail
LIMIT=${LIMIT:-0}
PRESET=${1:-decoy_digits}
OUT=${2:-runs/$PRESET}
ROOT=${3:-../shared/data}
reldrop compare --preset "$PRESET" --out "$OUT" --quiet --data-root "$ROOT"
runs=()
for v in baseline RE RelDrop RelDrop_p=1 RelDrop_topk; do
  for s in 0 1 2 3 4; do
    reldrop evaluate --checkpoint "$OUT/$v/seed$s" --which last --metrics acc,decoy --limit "$LIMIT" --threads 1 \
      --data-root "$ROOT" --heatmap-samples 8 > /dev/null
    runs+=("$OUT/$v/seed$s")
  done
done
reldrop report "${runs[@]}" --out "$OUT/decoy_report.md" --csv "$OUT/decoy_stats.csv"
reldrop evaluate --checkpoint "$OUT/baseline/seed0" --which last --metrics decoy --limit "$LIMIT" --threads 1 \
  --data-root "$ROOT" --heatmap-samples 8 --compare "$OUT/RE/seed0" "$OUT/RelDrop/seed0" --out "$OUT/figure" > /dev/null
echo "figure: $OUT/figure/decoy_heatmaps.png"
