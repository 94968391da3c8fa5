#!/usr/bin/env bash
# Everything the CUDA model needs on the GPU machine, in one call (issue 7): build (or take
# binaries built elsewhere with the same nvcc), the GPU model test (CUDA model against the CPU
# model), compute-sanitizer memcheck on it, the fidelity script (Hugging Face and a PyTorch
# reference against mlkv), Hugging Face's eager decode speed, the benchmark of the nine
# configurations, and the report (JSON, markdown table, plot). Logs and results go to $OUT
# (default /tmp/mlkv_cuda_model_out); a short summary is printed last.
#
#   bash bench/cuda_model/run_on_gpu.sh
#   MLKV_STEPS="build test fidelity hf bench report" bash ...   # a subset (memcheck is extra)
#   MLKV_PREBUILT=DIR bash ...    # DIR holds test_cuda_model and mlkv-cuda-model built with nvcc 13.0
#   MLKV_BENCH_ARGS="--configs MHA-144,MLKV-2" bash ...
#   MLKV_HF_JSON=F MLKV_FIDELITY_JSON=F MLKV_REPORT_NOTE="..." bash ...   # report with earlier HF/fidelity results
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/mlkv_cuda_model_out}
mkdir -p "$OUT"
STEPS=${MLKV_STEPS:-"build test fidelity hf bench report"}
BUILD=${MLKV_BUILD_DIR:-build-gpu-model}
PY=${PYTHON:-python3}
status=0
has() { [[ " $STEPS " == *" $1 "* ]]; }
step() { echo "== $1 ($(date +%T))"; }

nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem,driver_version --format=csv,noheader \
  | tee "$OUT/gpu.txt"

TEST=./$BUILD/tests/cuda_model/test_cuda_model
EXE=./$BUILD/bench/cuda_model/mlkv-cuda-model
if [ -n "${MLKV_PREBUILT:-}" ] && [ -x "$MLKV_PREBUILT/test_cuda_model" ] && [ -x "$MLKV_PREBUILT/mlkv-cuda-model" ]; then
  # Binaries built on a machine without a GPU (same nvcc, sm_90a): use them when they load here.
  probe=$("$MLKV_PREBUILT/mlkv-cuda-model" 2>&1)
  if [[ $probe == *usage* ]]; then
    TEST=$MLKV_PREBUILT/test_cuda_model
    EXE=$MLKV_PREBUILT/mlkv-cuda-model
    STEPS=${STEPS/build/}
    echo "using prebuilt binaries from $MLKV_PREBUILT"
  else
    echo "prebuilt binaries do not run here; building"
    echo "$probe" | head -3
  fi
fi

# The build reads a snapshot of the tree without the other areas' test and benchmark folders:
# work in progress there must not stop this run.
SRC=${MLKV_SRC:-/tmp/mlkv_cuda_model_src}
if has build; then
  step build
  excl=(--exclude=./build --exclude='./build-*' --exclude=./.git --exclude=./.cm_bin)
  for d in tests/*/ bench/*/; do
    case "${d%/}" in
      tests/cuda | tests/cuda_model | tests/model | tests/compile_fail | tests/consumer | tests/data | bench/cuda_model | bench/common | bench/results) ;;
      *) excl+=("--exclude=./${d%/}") ;;
    esac
  done
  rm -rf "$SRC" && mkdir -p "$SRC" && tar -cf - "${excl[@]}" . | tar -xf - -C "$SRC"
  cmake -S "$SRC" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMLKV_SANITIZE_TESTS=OFF -DMLKV_BUILD_BENCH=ON \
    -DMLKV_BUILD_EXAMPLES=OFF >"$OUT/build.log" 2>&1 &&
    cmake --build "$BUILD" --target test_cuda_model mlkv-cuda-model -j"$(nproc)" >>"$OUT/build.log" 2>&1
  rc=$?
  tail -3 "$OUT/build.log"
  if [ $rc -ne 0 ]; then
    grep -E "error|Error" "$OUT/build.log" | head -30
    echo "BUILD FAILED"
    exit 1
  fi
fi

if has test; then
  step test
  MLKV_TEST_VERBOSE=1 $TEST --durations yes >"$OUT/test.log" 2>&1
  rc=$?
  grep -E "cuda model|test cases|assertions|FAILED|passed" "$OUT/test.log" | tail -14
  [ $rc -ne 0 ] && { echo "TESTS FAILED (rc $rc)"; grep -B5 -A25 "FAILED" "$OUT/test.log" | head -80; status=1; }
fi

if has memcheck; then
  step memcheck
  timeout "${MLKV_SAN_TIMEOUT:-200}" compute-sanitizer --tool memcheck --error-exitcode 3 $TEST \
    "CUDA model matches the CPU model: one owner layer*,CUDA model: bad input*,The decode steps' matrix-vector kernel*" \
    >"$OUT/memcheck.log" 2>&1
  rc=$?
  grep -E "ERROR SUMMARY|test cases|All tests passed" "$OUT/memcheck.log" | tail -3
  [ $rc -eq 124 ] && echo "MEMCHECK TIMED OUT"
  [ $rc -ne 0 ] && [ $rc -ne 124 ] && { echo "MEMCHECK FAILED (rc $rc)"; grep -v "^=========     " "$OUT/memcheck.log" | head -30; status=1; }
fi

if has fidelity; then
  step fidelity
  PYTHONUNBUFFERED=1 timeout 300 $PY bench/cuda_model/fidelity.py --exe "$EXE" --out "$OUT/fid" \
    ${MLKV_FIDELITY_ARGS:-} >"$OUT/fidelity.log" 2>&1
  rc=$?
  grep -vE "^(f32|bf16|cpu): " "$OUT/fidelity.log" | tail -12
  cp "$OUT/fid/cuda_model_fidelity.json" "$OUT/" 2>/dev/null
  [ $rc -ne 0 ] && { echo "FIDELITY FAILED (rc $rc)"; status=1; }
fi

if has hf; then
  step hf
  PYTHONUNBUFFERED=1 timeout 420 $PY bench/cuda_model/hf_peer.py --out "$OUT/hf.json" ${MLKV_HF_ARGS:-} \
    >"$OUT/hf.log" 2>&1
  rc=$?
  grep -E "^HF" "$OUT/hf.log"
  [ $rc -ne 0 ] && { echo "HF PEER FAILED (rc $rc)"; tail -15 "$OUT/hf.log"; status=1; }
fi

if has bench; then
  step bench
  $EXE bench --out "$OUT/bench.json" ${MLKV_BENCH_ARGS:-} >"$OUT/bench.log" 2>&1
  rc=$?
  cat "$OUT/bench.log" | cut -c1-150
  [ $rc -ne 0 ] && { echo "BENCH FAILED (rc $rc)"; status=1; }
fi

if has report; then
  step report
  # MLKV_HF_JSON / MLKV_FIDELITY_JSON: results of an earlier run when this one skips those steps
  # (say so with MLKV_REPORT_NOTE, a line for the table's header).
  note=()
  [ -n "${MLKV_REPORT_NOTE:-}" ] && note=(--note "$MLKV_REPORT_NOTE")
  $PY bench/cuda_model/report.py --bench "$OUT/bench.json" --hf "${MLKV_HF_JSON:-$OUT/hf.json}" \
    --fidelity "${MLKV_FIDELITY_JSON:-$OUT/cuda_model_fidelity.json}" --out "$OUT/report" "${note[@]}" \
    >"$OUT/report.log" 2>&1 || status=1
  cp "$OUT/report/"* "$OUT/" 2>/dev/null
  grep -A12 "^Targets:" "$OUT/report.log" | head -14
fi
rm -rf "$OUT/fid/work" "$OUT/report" 2>/dev/null
step done
exit $status
