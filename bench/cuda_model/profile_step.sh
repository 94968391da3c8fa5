#!/usr/bin/env bash
# Per-kernel times of one decode step of the CUDA model under Nsight Compute (issue 7): the
# uncaptured run that precedes a batch size's graph capture, kernel by kernel (isolated, so PDL
# overlap and launch gaps are not in the sum). Needs the build of run_on_gpu.sh (MLKV_BUILD_DIR).
#   bash bench/cuda_model/profile_step.sh "MQA-12:128 MQA-12:512"
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/mlkv_cuda_model_out}
BUILD=${MLKV_BUILD_DIR:-build-gpu-model}
EXE=${MLKV_EXE:-./$BUILD/bench/cuda_model/mlkv-cuda-model}
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
for cb in ${1:-"MQA-12:128"}; do
  c=${cb%%:*} b=${cb##*:}
  log="$OUT/ncu_${c}_${b}.csv"
  # Kernel 1 is the cache fill; then the uncaptured step and the first graph replay (the summary cuts one step).
  timeout 240 "$NCU" --clock-control none --metrics gpu__time_duration.sum --csv --launch-skip 1 \
    --launch-count "${MLKV_NCU_COUNT:-1200}" "$EXE" bench --no-bw --configs "$c" --batches "$b" --steps 5 \
    --out /tmp/ncu_bench.json >"$log" 2>"$OUT/ncu_${c}_${b}.err"
  python3 bench/cuda_model/ncu_summary.py "$log" "$c batch $b"
done
