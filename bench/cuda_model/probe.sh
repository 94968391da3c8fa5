#!/usr/bin/env bash
# One device call for issue 7's step-over-floor work: build (or reuse) the CUDA tests and both
# benchmarks in $BUILD, then run what MLKV_PROBE lists, in order:
#   test      test_cuda and test_cuda_model (pass counts)
#   rows      bench/cuda decode rows ($MLKV_ROWS, variants $MLKV_VARIANTS, forced splits $MLKV_FORCES)
#   profile   profile_step.sh over $MLKV_PROFILE ("CONFIG:BATCH ...")
#   variants  variants.sh $MLKV_VCONFIGS $MLKV_VBATCHES with the labels in $MLKV_VARGS ("l1:args;l2:args")
#   variants2 the same with $MLKV_EXE2 as the "old" binary first (old against new, one call)
# Output under $OUT; the last lines are the short tables.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/mlkv_probe_out}
mkdir -p "$OUT"
BUILD=${MLKV_BUILD_DIR:-/tmp/bg}
PROBE=${MLKV_PROBE:-"test rows profile variants"}
has() { [[ " $PROBE " == *" $1 "* ]]; }
nvidia-smi --query-gpu=name,clocks.max.sm,clocks.max.mem --format=csv,noheader
if [ ! -x "$BUILD/bench/cuda_model/mlkv-cuda-model" ] || [ -n "${MLKV_REBUILD:-}" ]; then
  t0=$(date +%s)
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMLKV_SANITIZE_TESTS=OFF -DMLKV_BUILD_BENCH=ON -DMLKV_BENCH_DECODE_VARIANTS=ON \
    -DMLKV_BUILD_EXAMPLES=OFF -DMLKV_FUZZ=OFF >"$OUT/build.log" 2>&1 &&
    cmake --build "$BUILD" --target test_cuda test_cuda_model mlkv-cuda-model mlkv_cuda_bench -j16 >>"$OUT/build.log" 2>&1 ||
    { grep -E "error" "$OUT/build.log" | head -20; echo BUILD FAILED; exit 1; }
  echo "build $(($(date +%s) - t0)) s"
fi
EXE=$BUILD/bench/cuda_model/mlkv-cuda-model
if has test; then
  "$BUILD/tests/cuda/test_cuda" >"$OUT/test_cuda.log" 2>&1; echo "test_cuda rc $?: $(grep -E 'test cases|passed' "$OUT/test_cuda.log" | tail -1)"
  "$BUILD/tests/cuda_model/test_cuda_model" >"$OUT/test_cuda_model.log" 2>&1; echo "test_cuda_model rc $?: $(grep -E 'test cases|passed' "$OUT/test_cuda_model.log" | tail -1)"
fi
if has rows; then
  python3 bench/cuda/bench.py --lib "$BUILD/bench/cuda/libmlkv_cuda_bench.so" --out "$OUT/rows.json" \
    --rows "${MLKV_ROWS:-12:1:64:128:2048;12:1:64:512:2048;12:4:64:128:2048}" --variants "${MLKV_VARIANTS:-}" \
    --forces "${MLKV_FORCES:-}" --combos "${MLKV_COMBOS:-}" ${MLKV_ROWS_ARGS:-} 2>&1 | tee "$OUT/rows.log" | grep -v "^ *$"
fi
if has profile; then
  OUT=$OUT MLKV_EXE=$EXE bash bench/cuda_model/profile_step.sh "${MLKV_PROFILE:-MQA-12:512}" 2>&1 | tee "$OUT/profile.log"
fi
if has variants2; then
  IFS=';' read -ra vs <<<"${MLKV_VARGS:-new:}"
  for v in "${vs[@]}"; do
    OUT=$OUT MLKV_EXE=${MLKV_EXE2} bash bench/cuda_model/variants.sh "$MLKV_VCONFIGS" "$MLKV_VBATCHES" "old-${v}"
    OUT=$OUT MLKV_EXE=$EXE bash bench/cuda_model/variants.sh "$MLKV_VCONFIGS" "$MLKV_VBATCHES" "new-${v}"
  done
fi
if has variants; then
  IFS=';' read -ra vs <<<"${MLKV_VARGS:-new:}"
  OUT=$OUT MLKV_EXE=$EXE bash bench/cuda_model/variants.sh "${MLKV_VCONFIGS:-MQA-12,MLKV-12}" "${MLKV_VBATCHES:-128,512}" "${vs[@]}"
fi
