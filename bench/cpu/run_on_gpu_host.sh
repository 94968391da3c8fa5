#!/usr/bin/env bash
# Runs the CPU attention benchmark (issue 3's grid, with the peers) on the host CPU of the lent
# GPU machine (a larger, quieter x86 than the 2-core VM), in one device call:
#   run: bash bench/cpu/run_on_gpu_host.sh   (writes $OUT/cpu_attention_host.json and .log)
# THREADS (default: every hardware thread) sets the pool size.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-bench/results}
build=${MLKV_CPU_BUILD:-/tmp/mlkv-cpu-build}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DMLKV_BUILD_TESTS=ON -DMLKV_BUILD_BENCH=ON -DMLKV_BUILD_EXAMPLES=OFF \
  -DMLKV_CUDA=OFF -DMLKV_SANITIZE_TESTS=OFF -DMLKV_FUZZ=OFF >/dev/null
cmake --build "$build" --target cpu_attention -j"$(nproc)" >/dev/null
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
echo "host: $cpu, $(nproc) hardware threads; load: $(cut -d' ' -f1-3 /proc/loadavg); library at $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
"$build/bench/cpu/cpu_attention" --threads "${THREADS:-$(nproc)}" --out "$out/cpu_attention_host.json" \
  | tee "$out/cpu_attention_host.log"
