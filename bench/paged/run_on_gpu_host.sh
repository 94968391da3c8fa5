#!/usr/bin/env bash
# Runs mlkv-bench-paged on the host CPU of the lent GPU machine (a larger, quieter x86 than the
# 2-core VM), in one device call:
#   run: MLKV_COMMIT=<sha> bash bench/paged/run_on_gpu_host.sh   (writes $OUT/paged.json and paged.log)
# THREADS (default 8) sets the multi-thread figure; one thread is always measured too.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-bench/results}
build=${MLKV_PAGED_BUILD:-/tmp/mlkv-paged-build}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DMLKV_BUILD_TESTS=OFF -DMLKV_BUILD_EXAMPLES=OFF \
  -DMLKV_CUDA=OFF >/dev/null
cmake --build "$build" --target mlkv-bench-paged -j"$(nproc)" >/dev/null
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
echo "host: $cpu, $(nproc) hardware threads; load: $(cut -d' ' -f1-3 /proc/loadavg)"
"$build/bench/paged/mlkv-bench-paged" --threads "${THREADS:-8}" --reps 40 --out "$out/paged.json" \
  --note "host CPU of the lent GPU machine ($cpu), nothing else running; library at ${MLKV_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}" \
  | tee "$out/paged.log"
