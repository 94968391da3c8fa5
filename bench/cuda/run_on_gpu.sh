#!/usr/bin/env bash
# Everything the CUDA path needs on the GPU machine, in one call: configure and build the CUDA
# tests and benchmark, run the tests, run them again under compute-sanitizer (memcheck and
# racecheck), summarise the SASS (tensor-core and 16-byte load instructions), then benchmark
# against PyTorch. Logs and results go to $OUT (default /tmp/mlkv_gpu_out); a short table is printed
# last.
#
#   bash bench/cuda/run_on_gpu.sh                 # all of it
#   MLKV_STEPS="build test bench" bash ...        # a subset: build test memcheck racecheck sass bench
#   MLKV_BENCH_ARGS="--quick" bash ...            # extra arguments for bench.py
#   MLKV_PREBUILT=DIR bash ...   # DIR holds test_cuda and libmlkv_cuda_bench.so built elsewhere with
#                                # the same nvcc (sm_90a): the build step is skipped when they load
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/mlkv_gpu_out}
mkdir -p "$OUT"
STEPS=${MLKV_STEPS:-"build test memcheck racecheck sass bench"}
BUILD=${MLKV_BUILD_DIR:-build-gpu}
status=0
has() { [[ " $STEPS " == *" $1 "* ]]; }
step() { echo "== $1 ($(date +%T))"; }

nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem,driver_version --format=csv,noheader \
  | tee "$OUT/gpu.txt"

TEST=./$BUILD/tests/cuda/test_cuda
LIB=./$BUILD/bench/cuda/libmlkv_cuda_bench.so
if [ -n "${MLKV_PREBUILT:-}" ] && [ -x "$MLKV_PREBUILT/test_cuda" ] && [ -f "$MLKV_PREBUILT/libmlkv_cuda_bench.so" ]; then
  if ! ldd "$MLKV_PREBUILT/test_cuda" "$MLKV_PREBUILT/libmlkv_cuda_bench.so" 2>&1 | grep -q "not found"; then
    TEST=$MLKV_PREBUILT/test_cuda
    LIB=$MLKV_PREBUILT/libmlkv_cuda_bench.so
    STEPS=${STEPS/build/}
    echo "using prebuilt binaries from $MLKV_PREBUILT"
  else
    echo "prebuilt binaries do not run here; building"
  fi
fi

# The build reads a snapshot of the tree without the other areas' test and benchmark folders
# (cpu, paged, model, ...): work in progress there must not stop this run. mtimes are kept, so
# rebuilds are incremental.
SRC=${MLKV_SRC:-/tmp/mlkv_cuda_src}
if has build; then
  step build
  excl=(--exclude=./build --exclude='./build-*' --exclude=./.git)
  for d in tests/*/ bench/*/; do
    case "${d%/}" in
      tests/cuda | tests/compile_fail | tests/consumer | tests/data | bench/cuda | bench/common | bench/results) ;;
      *) excl+=("--exclude=./${d%/}") ;;
    esac
  done
  rm -rf "$SRC" && mkdir -p "$SRC" && tar -cf - "${excl[@]}" . | tar -xf - -C "$SRC"
  cmake -S "$SRC" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMLKV_SANITIZE_TESTS=OFF -DMLKV_BUILD_BENCH=ON -DMLKV_BENCH_DECODE_VARIANTS=ON \
    -DMLKV_BUILD_EXAMPLES=OFF >"$OUT/build.log" 2>&1 &&
    cmake --build "$BUILD" --target test_cuda mlkv_cuda_bench -j"$(nproc)" >>"$OUT/build.log" 2>&1
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
  grep -E "worst error|test cases|assertions|FAILED|passed" "$OUT/test.log" | tail -8
  [ $rc -ne 0 ] && { echo "TESTS FAILED (rc $rc)"; grep -B5 -A25 "FAILED" "$OUT/test.log" | head -80; status=1; }
fi

if has memcheck; then
  step memcheck
  timeout "${MLKV_SAN_TIMEOUT:-280}" compute-sanitizer --tool memcheck --leak-check full --error-exitcode 3 $TEST \
    >"$OUT/memcheck.log" 2>&1
  rc=$?
  grep -E "ERROR SUMMARY|LEAK SUMMARY|test cases|All tests passed" "$OUT/memcheck.log" | tail -4
  [ $rc -eq 124 ] && echo "MEMCHECK TIMED OUT (${MLKV_SAN_TIMEOUT:-280} s)"
  [ $rc -ne 0 ] && { echo "MEMCHECK FAILED (rc $rc)"; grep -v "^=========     " "$OUT/memcheck.log" | head -40; status=1; }
fi

if has racecheck; then
  step racecheck
  timeout "${MLKV_SAN_TIMEOUT:-280}" compute-sanitizer --tool racecheck --racecheck-report hazard --error-exitcode 3 \
    $TEST >"$OUT/racecheck.log" 2>&1
  rc=$?
  grep -E "RACECHECK SUMMARY|ERROR SUMMARY|test cases|All tests passed" "$OUT/racecheck.log" | tail -4
  [ $rc -eq 124 ] && echo "RACECHECK TIMED OUT (${MLKV_SAN_TIMEOUT:-280} s)"
  [ $rc -ne 0 ] && { echo "RACECHECK FAILED (rc $rc)"; grep -v "^=========     " "$OUT/racecheck.log" | head -40; status=1; }
fi

if has sass; then
  step sass
  cuobjdump -sass "$LIB" >"$OUT/sass.txt" 2>&1
  python3 - "$OUT/sass.txt" <<'EOF' | tee "$OUT/sass_summary.txt"
import re, sys
cur, stats = None, {}
for line in open(sys.argv[1]):
    m = re.search(r"Function : (\S+)", line)
    if m:
        cur = m.group(1); stats[cur] = {}
        continue
    if cur is None:
        continue
    for op in ("HMMA", "HGMMA", "LDGSTS", "LDG.E.128", "LDSM", "STL", "LDL", "UTMALDG", "SYNCS"):
        if re.search(r"\b" + re.escape(op), line):
            stats[cur][op] = stats[cur].get(op, 0) + 1
for f, s in stats.items():
    short = re.sub(r"_ZN4mlkv4cuda6detail", "", f)[:70]
    print("%-70s %s" % (short, " ".join("%s=%d" % kv for kv in sorted(s.items()))))
EOF
fi

if has ncu; then
  step ncu
  # MLKV_NCU: shapes "kind hq hkv d batch ctx" separated by ';'
  IFS=';' read -ra shapes <<<"${MLKV_NCU:-decode 12 12 64 64 4096;decode 12 1 64 1 32768}"
  n=0
  for sh in "${shapes[@]}"; do
    n=$((n + 1))
    ncu --clock-control none -k regex:'decode|prefill|flash|fprop|lean|reduction|sdpa' \
      --section SpeedOfLight --section LaunchStats --section Occupancy --section WarpStateStats \
      --section MemoryWorkloadAnalysis \
      python3 bench/cuda/profile_one.py "$LIB" $sh >"$OUT/ncu_$n.txt" 2>&1
    echo "-- ncu $sh"
    grep -E "^  [A-Za-z_].*\(|Duration|DRAM Throughput|Achieved Occupancy|Grid Size|Registers Per|Dynamic Shared Memory Per|Warp Cycles Per Issued|L2 Hit Rate  " \
      "$OUT/ncu_$n.txt" | sed -e 's/_ZN4mlkv4cuda6detail//' | cut -c1-110 | head -60
  done
fi

if has bench; then
  step bench
  PYTHONUNBUFFERED=1 python3 bench/cuda/bench.py --lib "$LIB" --out "$OUT/cuda_attention.json" \
    --table "$OUT/cuda_table.md" ${MLKV_BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.log"
  [ "${PIPESTATUS[0]}" -ne 0 ] && { echo "BENCH FAILED"; status=1; }
fi
if has bench && [ -f "$OUT/cuda_table.md" ]; then
  step table
  grep -E "^\| (12:1 d64|32:1 d128) \| (1|16|64|256) \| 32768|^\| 12:1 d64 \| 1 \||Causal|^\| [0-9:]+ d[0-9]+ \| [14] \| [0-9.]+ \| [0-9]+ \| [0-9.]+ \| [0-9]+ \|" "$OUT/cuda_table.md" | head -30
fi
step done
exit $status
