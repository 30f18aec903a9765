#!/usr/bin/env bash
# One-command GPU check (issue 15). On a machine with a CUDA GPU:
#   1. the CUDA-only tests (pytest -k "cuda or gpu"; they are skipped everywhere else),
#   2. benchmarks/overhead.py --device cuda --models all, AMP off and on (per-step time and peak
#      CUDA memory of baseline / RE / RelDrop zennit / RelDrop fast, every model row),
#   3. a short real-data training run per augmentation (none / re / reldrop, one epoch, images/s):
#      CIFAR-10 (10 000-image subset, resnet18_cifar) when it is under the data root, else digits,
# then writes benchmarks/results_gpu.json and benchmarks/results_gpu.md (a Markdown table).
# Budget: under 8 minutes on one modern GPU (every step has its own timeout).
# Without CUDA it says so and exits 0.
#
#   bash benchmarks/gpu_check.sh            # PYTHON=... to choose the interpreter (default: python)
#   GPU_CHECK_DEVICE=cpu OUT_DIR=/tmp/x bash benchmarks/gpu_check.sh
#                                           # smoke run of the plumbing on CPU, tiny sizes (numbers meaningless)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
OUT_DIR=${OUT_DIR:-benchmarks}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" MPLBACKEND=Agg

if [ "$DEVICE" = cuda ] && ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_check: no CUDA GPU present (torch.cuda.is_available() is False): nothing to check, exiting 0."
    exit 0
fi
OVERHEAD_ARGS=(--models all)
if [ "$DEVICE" = cpu ]; then  # smoke mode
    OVERHEAD_ARGS=(--quick --models resnet20 --rounds 1 --warmup 0 --batch 8 --threads 1)
fi

T0=$(date +%s)
TMP=$(mktemp -d)
OUT_JSON=$OUT_DIR/results_gpu.json
OUT_MD=$OUT_DIR/results_gpu.md
step() { echo "[gpu_check $(( $(date +%s) - T0 ))s] $*"; }

step "1/3 CUDA-only tests"
if [ "$DEVICE" = cuda ]; then
    timeout 90 "$PY" -m pytest -q -k "cuda or gpu" -p no:cacheprovider --junitxml "$TMP/tests.xml" tests \
        || step "some CUDA tests failed or timed out (see the table)"
fi

step "2/3 overhead.py --device $DEVICE, AMP off"
timeout 120 "$PY" benchmarks/overhead.py --device "$DEVICE" "${OVERHEAD_ARGS[@]}" --json "$TMP/overhead.json" \
    || step "overhead.py (AMP off) failed or timed out"
step "2/3 overhead.py --device $DEVICE, AMP on"
timeout 120 "$PY" benchmarks/overhead.py --device "$DEVICE" "${OVERHEAD_ARGS[@]}" --amp --json "$TMP/overhead_amp.json" \
    || step "overhead.py (AMP on) failed or timed out"

step "3/3 real-data throughput"
if [ "$DEVICE" = cuda ] && "$PY" -c "
from reldrop.data import build_dataset, data_root
build_dataset('cifar10', data_root(None), 'test')" >/dev/null 2>&1; then
    PRESET=cifar10_resnet18
    SETS=(data.subset=10000 data.test_subset=1000 train.threads=null)
elif [ "$DEVICE" = cuda ]; then
    PRESET=digits
    SETS=(train.threads=null)
else
    PRESET=digits
    SETS=(data.subset=100 data.test_subset=50 train.threads=1 "model.kwargs={width: 4}")
fi
RUNS=()
for AUG in none re reldrop; do
    timeout 45 "$PY" -m reldrop.cli train --preset "$PRESET" --aug "$AUG" --device "$DEVICE" --epochs 1 \
        --out "$TMP/runs/$AUG" --quiet --set "${SETS[@]}" train.progress=false \
        || step "training with aug=$AUG failed or timed out"
    RUNS+=("$TMP/runs/$AUG")
done

META=$("$PY" -c "
import json, time, torch
gpu = torch.cuda.get_device_name(0) if '$DEVICE' == 'cuda' else 'none (CPU smoke run)'
print(json.dumps({'gpu': gpu, 'torch': torch.__version__, 'cuda': torch.version.cuda,
                  'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()), 'throughput_config': '$PRESET',
                  'total_s': $(( $(date +%s) - T0 ))}))")
"$PY" benchmarks/gpu_report.py --tests "$TMP/tests.xml" --overhead "$TMP/overhead.json" \
    --overhead-amp "$TMP/overhead_amp.json" --throughput "${RUNS[@]}" --meta "$META" \
    --json "$OUT_JSON" --md "$OUT_MD"
step "done: $OUT_JSON, $OUT_MD"
rm -rf "$TMP"
