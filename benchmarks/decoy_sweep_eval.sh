#!/usr/bin/env bash
# Secondary metric of the shortcut-strength sweep (docs/decoy_sweep.md): the share of positive
# relevance on the patch (`reldrop evaluate --metrics decoy`, ε-LRP, LIMIT fixed test images per
# decoy mode) of every final baseline / RE / RelDrop model; then the table again.
#
#   LIMIT=500 bash benchmarks/decoy_sweep_eval.sh [RUNS] [DATA_ROOT]
set -euo pipefail
LIMIT=${LIMIT:-500}
RUNS=${1:-runs/decoy_sweep}
ROOT=${2:-../shared/data}
HERE=$(cd "$(dirname "$0")" && pwd)
export OMP_NUM_THREADS=1
for arm in random-gray-4 fixed-gray-2 fixed-gray-4 fixed-palette-4; do
  for v in baseline RE RelDrop; do
    for s in 0 1 2 3 4; do
      run="$RUNS/$arm/$v/seed$s"
      [ -f "$run/last.pt" ] || continue
      reldrop evaluate --checkpoint "$run" --which last --metrics decoy --limit "$LIMIT" --threads 1 \
        --data-root "$ROOT" > /dev/null
    done
  done
done
python "$HERE/decoy_sweep.py" --runs "$RUNS" --md "$RUNS/decoy_sweep_table.md"
