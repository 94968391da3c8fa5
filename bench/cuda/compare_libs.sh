#!/usr/bin/env bash
# Same-call comparison of decode builds (development): runs bench.py --rows over each library given,
# so that the current kernel and a candidate are timed on the same card in one device call.
#   MLKV_ROWS="12:1:64:1:32768;12:12:64:64:4096" bash bench/cuda/compare_libs.sh base.so new.so [-- extra bench.py args]
# Per-library extra arguments: MLKV_ARGS_<n> (n = 1, 2, ... in the order given), e.g.
# MLKV_ARGS_2="--variants 1,2 --forces 64,128"; rows per library: MLKV_ROWS_<n>. Logs to $OUT (default /tmp/mlkv_cmp_out).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/mlkv_cmp_out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,clocks.max.sm,clocks.max.mem --format=csv,noheader
i=0
for lib in "$@"; do
  i=$((i + 1))
  var="MLKV_ARGS_$i"
  rvar="MLKV_ROWS_$i"
  PYTHONUNBUFFERED=1 python3 bench/cuda/bench.py --lib "$lib" --out "$OUT/cmp_$i.json" --rows "${!rvar:-$MLKV_ROWS}" \
    --label "[$(basename "$lib" .so)]" ${!var:-} 2>&1 | grep -v "^device\|^read bandwidth" | tee -a "$OUT/cmp.log"
  python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print('[%s] read bw %.3f TB/s on %s' % (sys.argv[2], r['read_bw_tbps'], r['gpu']))" \
    "$OUT/cmp_$i.json" "$(basename "$lib" .so)" | tee -a "$OUT/cmp.log"
done
