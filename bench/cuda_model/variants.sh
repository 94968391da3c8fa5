#!/usr/bin/env bash
# Old against new in one call (issue 7, NOTES.md): the benchmark's step time for each variant of
# the model, same process build, same machine. Needs the build of run_on_gpu.sh.
#   bash bench/cuda_model/variants.sh CONFIGS BATCHES "label1:args1" "label2:args2" ...
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/mlkv_cuda_model_out}
BUILD=${MLKV_BUILD_DIR:-build-gpu-model}
EXE=${MLKV_EXE:-./$BUILD/bench/cuda_model/mlkv-cuda-model}
configs=$1 batches=$2
shift 2
for v in "$@"; do
  label=${v%%:*} args=${v#*:}
  # shellcheck disable=SC2086
  $EXE bench --no-bw --configs "$configs" --batches "$batches" --out "$OUT/v_$label.json" $args \
    >"$OUT/v_$label.log" 2>&1 || { echo "$label FAILED"; tail -5 "$OUT/v_$label.log"; continue; }
  grep -E "^ +[A-Z].* batch" "$OUT/v_$label.log" | awk -v l="$label" '{printf "%-14s %-8s b%-6s %9.1f us\n", l, $1, $3, $4}' | tr -d ':'
  grep -E "^ +gemm" "$OUT/v_$label.log" | head -${MLKV_SHOW_GEMMS:-0}
done
