#!/bin/bash
# Issue 10 item 12: `reldrop demo --epochs 2` beside one single-threaded training process, under three
# OpenMP settings, interleaved (A B C A B C ...) so that every condition sees the same background load.
#   default: OMP_NUM_THREADS unset, OMP_WAIT_POLICY empty (libgomp warns "invalid value" and keeps its
#            default; an empty value also stops the CLI from setting PASSIVE), --threads 0 (torch's default: one thread per core,
#            libgomp's default spin-waiting) - what `reldrop demo` did before issue 10
#   passive: the same threads with OMP_WAIT_POLICY=PASSIVE (what the CLI now sets when it is unset)
#   one:     one torch thread (the CLI's new default for demo/train)
# Usage: benchmarks/threads.sh [OUT_DIR] [TRIALS]   (PY=python interpreter, default .venv/bin/python)
# Writes OUT_DIR/results.txt: one line per run with seconds and the 1-min load average before/after.
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-runs/threads-bench}; TRIALS=${2:-3}
PY=${PY:-$REPO/.venv/bin/python}
mkdir -p "$OUT" && cd "$OUT"
export MPLBACKEND=Agg PYTHONPATH=$REPO/src${PYTHONPATH:+:$PYTHONPATH}
env OMP_NUM_THREADS=1 "$PY" -m reldrop.cli train --epochs 100000 --set train.threads=1 --out bg_run --quiet \
    > bg.log 2>&1 &
BG=$!
trap 'kill $BG 2>/dev/null' EXIT
sleep 15
for trial in $(seq "$TRIALS"); do
  for cond in default passive one; do
    case $cond in
      default) ENVS=(env -u OMP_NUM_THREADS OMP_WAIT_POLICY=); THREADS=0 ;;
      passive) ENVS=(env -u OMP_NUM_THREADS OMP_WAIT_POLICY=PASSIVE); THREADS=0 ;;
      one)     ENVS=(env -u OMP_NUM_THREADS OMP_WAIT_POLICY=PASSIVE); THREADS=1 ;;
    esac
    rm -rf "demo_$cond"
    l0=$(cut -d' ' -f1 /proc/loadavg); t0=$(date +%s.%N)
    "${ENVS[@]}" "$PY" -m reldrop.cli demo --epochs 2 --threads $THREADS --out "demo_$cond" > "demo_$cond.log" 2>&1
    rc=$?
    t1=$(date +%s.%N); l1=$(cut -d' ' -f1 /proc/loadavg)
    printf 'trial %s cond %s rc %s seconds %.1f load_before %s load_after %s\n' "$trial" "$cond" "$rc" \
        "$(echo "$t1 - $t0" | bc)" "$l0" "$l1" | tee -a results.txt
  done
done
