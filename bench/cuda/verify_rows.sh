#!/usr/bin/env bash
# Builds test_cuda and the benchmark library, runs the CUDA tests, then times chosen decode rows
# (default plan and PyTorch) in one device call: the check after a change to the decode plan.
#   MLKV_ROWS="32:1:128:16:4096;..." bash bench/cuda/verify_rows.sh     (on the GPU machine)
#   MLKV_F=1,2 MLKV_V=1,3 MLKV_C=1:8 MLKV_TEST_FILTER="[decode]" ...  forced splits, shapes, pairs; a test filter
#   MLKV_SKIP_TEST=1 MLKV_LABEL=name ...                               no tests; the rows' label and file name
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/mlkv_verify_out}
mkdir -p "$OUT"
BUILD=${MLKV_BUILD_DIR:-/tmp/bg}
LABEL=${MLKV_LABEL:-row}
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMLKV_SANITIZE_TESTS=OFF -DMLKV_BUILD_BENCH=ON -DMLKV_BENCH_DECODE_VARIANTS=ON \
  -DMLKV_BUILD_EXAMPLES=OFF -DMLKV_FUZZ=OFF >"$OUT/build.log" 2>&1 &&
  cmake --build "$BUILD" --target test_cuda mlkv_cuda_bench -j"$(nproc)" >>"$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
if [ -z "${MLKV_SKIP_TEST:-}" ]; then
  "$BUILD/tests/cuda/test_cuda" ${MLKV_TEST_FILTER:-} 2>&1 | tail -4 | tee "$OUT/test.log"
fi
LIB=$(find "$BUILD" -name 'libmlkv_cuda_bench.so' | head -1)
PYTHONUNBUFFERED=1 python3 bench/cuda/bench.py --lib "$LIB" --out "$OUT/$LABEL.json" --rows "$MLKV_ROWS" \
  --forces "${MLKV_F:-}" --variants "${MLKV_V:-}" --combos "${MLKV_C:-}" --label "$LABEL" 2>&1 | tee "$OUT/$LABEL.log"
