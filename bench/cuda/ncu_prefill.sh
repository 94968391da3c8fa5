#!/usr/bin/env bash
# ncu of the prefill kernels (ours and cuDNN's) on two shapes: duration, pipe utilisation, instructions.
#   MLKV_LIB=path/libmlkv_cuda_bench.so bash bench/cuda/ncu_prefill.sh   (on the GPU machine)
cd "$(dirname "$0")/../.."
LIB=${MLKV_LIB:-build-pre/libmlkv_cuda_bench.so}  # the benchmark library (prebuilt or from run_on_gpu.sh)
M=gpu__time_duration.sum,sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_xu.avg.pct_of_peak_sustained_active,sm__pipe_fma_cycles_active.avg.pct_of_peak_sustained_active,sm__pipe_alu_cycles_active.avg.pct_of_peak_sustained_active,sm__warps_active.avg.pct_of_peak_sustained_active,smsp__issue_active.avg.pct_of_peak_sustained_active,smsp__inst_executed.sum,launch__grid_size,launch__registers_per_thread
for sh in "12 1 64 4 4096" "32 8 128 1 4096"; do
  echo "-- $sh"
  ncu --clock-control none -k regex:'prefill|flash|fprop|sdpa|cudnn|sm90' --launch-skip 0 --launch-count 4 --metrics $M \
    python3 bench/cuda/profile_one.py "$LIB" prefill $sh 2>&1 | grep -E "^  [a-zA-Z_].*\(|duration|pct|inst_executed.sum|grid_size|registers" | sed -e 's/_ZN4mlkv4cuda6detail//' | cut -c1-120
done
