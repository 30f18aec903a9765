# Sourced by the experiment scripts (effnet_finetune.sh, vit_tiny.sh); defines one function.
#
#   evaluate_runs OUT "VARIANTS" "SEEDS" METRICS LIMIT [more reldrop evaluate arguments ...]
#
# runs `reldrop evaluate --checkpoint OUT/<variant>/seed<s> --which last --metrics METRICS --limit LIMIT ...`
# for every variant and seed, except where eval/metrics.json already holds "morf" computed with that
# limit (re-running a script reuses finished evaluations), and leaves the run folders in the array RUNS.
evaluate_runs() {
  local out=$1 variants=$2 seeds=$3 metrics=$4 limit=$5
  shift 5
  RUNS=()
  local v s json
  for v in $variants; do
    for s in $seeds; do
      json="$out/$v/seed$s/eval/metrics.json"
      if [ ! -f "$json" ] || ! grep -q '"morf"' "$json" || ! grep -q "\"limit\": $limit," "$json"; then
        reldrop evaluate --checkpoint "$out/$v/seed$s" --which last --metrics "$metrics" --limit "$limit" "$@"
      fi
      RUNS+=("$out/$v/seed$s")
    done
  done
}
