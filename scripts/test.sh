#!/usr/bin/env bash
# Builds and runs the whole test suite (optimised and ASan+UBSan builds, compile-fail checks,
# package-consumer checks; CUDA sources are compiled when nvcc is present). Installs what it
# needs from Debian's packages when it is missing. The last line is ctest's own summary.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
have_catch2() {
  for d in /usr/lib/cmake/Catch2 /usr/local/lib/cmake/Catch2 /usr/lib/x86_64-linux-gnu/cmake/Catch2 \
           /usr/share/cmake/Catch2 /usr/local/share/cmake/Catch2 /usr/lib/aarch64-linux-gnu/cmake/Catch2; do
    [ -f "$d/Catch2Config.cmake" ] && return 0
  done
  return 1
}
have_catch2 || need+=(catch2)
command -v cmake >/dev/null || need+=(cmake)
command -v g++ >/dev/null || need+=(g++)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# The fuzz targets need clang and its libFuzzer runtime; without them they are skipped, so a failed
# install does not stop the suite.
have_fuzzer() { compgen -G "/usr/lib/llvm-*/lib/clang/*/lib/*/libclang_rt.fuzzer*.a" >/dev/null; }
if ! command -v clang++ >/dev/null || ! have_fuzzer; then
  echo "installing: clang libclang-rt-dev (fuzz targets)"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends clang libclang-rt-dev >/dev/null; } ||
    echo "clang's libFuzzer runtime could not be installed: the fuzz targets are skipped"
fi
# The CPU kernels' NEON path is cross-compiled for AArch64 and its tests run under qemu-user
# (tests/cpu/CMakeLists.txt); without the tools they are skipped, so a failed install does not
# stop the suite.
if [ "$(uname -m)" = x86_64 ] && { ! command -v aarch64-linux-gnu-g++ >/dev/null || ! command -v qemu-aarch64 >/dev/null; }; then
  echo "installing: g++-aarch64-linux-gnu qemu-user (NEON tests)"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends g++-aarch64-linux-gnu qemu-user >/dev/null; } ||
    echo "the aarch64 cross compiler or qemu-user could not be installed: the NEON tests are skipped"
fi

jobs=$(nproc)
cmake -S . -B build/test -DCMAKE_BUILD_TYPE=Release -DMLKV_BUILD_BENCH=ON
cmake --build build/test -j"$jobs"
cd build/test
ctest -j"$jobs" --output-on-failure
