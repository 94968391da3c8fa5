#!/usr/bin/env bash
# Builds and runs the demo, mlkv-generate: the paper's nine MLKV configurations of a
# Pythia-160M-shaped model (random weights, fixed seed) generating a batch of tokens on the CPU,
# with each one's KV cache size and speed. Extra arguments go to mlkv-generate (try --help;
# --model DIR runs a checkpoint). The cache-size table of the paper: build/demo/examples/mlkv-memory.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cmake >/dev/null || { export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq cmake g++ >/dev/null; }
cmake -S . -B build/demo -DCMAKE_BUILD_TYPE=Release -DMLKV_BUILD_TESTS=OFF -DMLKV_BUILD_BENCH=OFF -DMLKV_CUDA=OFF >/dev/null
cmake --build build/demo -j"$(nproc)" --target mlkv-generate mlkv-memory >/dev/null
exec build/demo/examples/mlkv-generate "$@"
