#!/usr/bin/env bash
# Builds and runs the demo: the KV cache of the paper's nine configurations and decode steps over
# each. Extra arguments go to the demo (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cmake >/dev/null || { export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq cmake g++ >/dev/null; }
cmake -S . -B build/demo -DCMAKE_BUILD_TYPE=Release -DMLKV_BUILD_TESTS=OFF -DMLKV_BUILD_BENCH=OFF >/dev/null
cmake --build build/demo -j"$(nproc)" --target mlkv-memory >/dev/null
exec build/demo/examples/mlkv-memory "$@"
