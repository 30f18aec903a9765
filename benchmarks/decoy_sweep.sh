#!/usr/bin/env bash
# The shortcut-strength sweep of docs/decoy_sweep.md: every arm of configs/decoy_sweep/ (6 variants x
# 5 seeds each) with `reldrop compare`, two single-thread processes side by side, then the table,
# CSV and figure (benchmarks/decoy_sweep.py). Re-running resumes: finished runs are reused.
#
#   bash benchmarks/decoy_sweep.sh [RUNS] [DATA_ROOT]   # default runs/decoy_sweep ../shared/data
#
# Order: per queue, first baseline / RE / RelDrop of each of its arms, then CutMix / Mixup, then the
# equal-compute baseline (epochs_scale: auto needs the arm's finished baseline and RelDrop runs).
set -euo pipefail
RUNS=${1:-runs/decoy_sweep}
ROOT=${2:-../shared/data}
HERE=$(cd "$(dirname "$0")" && pwd)
CFG="$HERE/../configs/decoy_sweep"
ARMS=(random-gray-4 fixed-gray-2 fixed-gray-4 fixed-palette-4)
export OMP_NUM_THREADS=1
queue() {
  local phase arm
  for phase in 1 2 3; do
    for arm in "$@"; do
      case $phase in
        1) v=(baseline RE RelDrop) ;;
        2) v=(CutMix Mixup) ;;
        3) v=("baseline equal compute") ;;
      esac
      reldrop compare --config "$CFG/$arm.yaml" --out "$RUNS/$arm" --data-root "$ROOT" --quiet --variants "${v[@]}" \
        > "$RUNS/$arm.phase$phase.log" 2>&1
    done
  done
}
mkdir -p "$RUNS"
queue "${ARMS[0]}" "${ARMS[2]}" &
queue "${ARMS[1]}" "${ARMS[3]}" &
wait
for arm in "${ARMS[@]}"; do  # every variant: nothing left to train, writes the arm's full results.md / runs.csv
  reldrop compare --config "$CFG/$arm.yaml" --out "$RUNS/$arm" --data-root "$ROOT" --quiet > "$RUNS/$arm.log" 2>&1
done
python "$HERE/decoy_sweep.py" --runs "$RUNS" --md "$RUNS/decoy_sweep_table.md"
