#!/usr/bin/env bash
# Issue 5, the rows at batch >= 16 where decode is more than 5% slower than PyTorch (mostly small
# K/V: a call's fixed cost shows) and the one large row under 85% of the read bandwidth: every
# kernel shape (bench variants) and forced split count on each, PyTorch timed beside them, in one
# device call (through verify_rows.sh). Also prints the host CPU's VDPBF16PS/FMA FLOP-rate ratio
# (cpu::bf16_dot_gain).
#   bash bench/cuda/sweep_small_rows.sh      (on the GPU machine; logs under $OUT or /tmp)
set -uo pipefail
cd "$(dirname "$0")/../.."
export OUT=${OUT:-/tmp/mlkv_sweep_out}
mkdir -p "$OUT"
printf '#include <mlkv/cpu/isa.hpp>\n#include <cstdio>\nint main() { std::printf("host CPU: VDPBF16PS/FMA FLOP rate %%.3f, best_isa %%s\\n", mlkv::cpu::bf16_dot_gain(), std::string(mlkv::cpu::name_of(mlkv::cpu::best_isa())).c_str()); }\n' >/tmp/mlkv_probe.cpp
g++ -O2 -std=c++20 -Iinclude /tmp/mlkv_probe.cpp -o /tmp/mlkv_probe && /tmp/mlkv_probe | tee "$OUT/cpu_probe.txt"
grep -m1 "model name" /proc/cpuinfo | tee -a "$OUT/cpu_probe.txt"
D64="12:12:64:16:1024;12:12:64:16:4096;12:12:64:16:16384;12:4:64:16:1024;12:4:64:64:1024;12:4:64:16:4096"
D64="$D64;12:1:64:16:1024;12:1:64:16:4096;12:1:64:16:16384;12:1:64:16:32768;12:1:64:64:1024;12:1:64:64:4096;12:1:64:256:1024"
D128="32:8:128:64:4096;32:1:128:16:1024;32:1:128:16:4096;32:1:128:16:16384;32:1:128:16:32768;32:1:128:64:1024"
D128="$D128;32:1:128:64:4096;32:1:128:64:16384;32:1:128:256:1024"
F=${MLKV_F:-1,2,4,8,16,32}
MLKV_SKIP_TEST=1 MLKV_LABEL=sweep_d64 MLKV_ROWS="$D64" MLKV_V="${MLKV_V64:-1,2,5,6,7,8}" MLKV_F="$F" \
  bash bench/cuda/verify_rows.sh
MLKV_SKIP_TEST=1 MLKV_LABEL=sweep_d128 MLKV_ROWS="$D128" MLKV_V="${MLKV_V128:-1,2,3,5}" MLKV_F="$F" \
  bash bench/cuda/verify_rows.sh
