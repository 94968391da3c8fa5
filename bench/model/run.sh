#!/usr/bin/env bash
# bench/cpu_model in one command: builds it, runs the nine configurations (batch 1 and 16,
# contexts 2048 and 8192) against the bandwidth floor, then the PyTorch peer on the same rows.
# Writes bench/results/cpu_model.json. Run it on a quiet machine. PyTorch comes from Debian
# (python3-torch), installed when missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
cmake -S . -B build/bench -DCMAKE_BUILD_TYPE=Release -DMLKV_BUILD_TESTS=OFF -DMLKV_CUDA=OFF >/dev/null
cmake --build build/bench --target cpu_model -j"$(nproc)" >/dev/null
build/bench/bench/model/cpu_model --out bench/results/cpu_model.json "$@"
if ! /usr/bin/python3 -c "import torch" 2>/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq python3-torch >/dev/null
fi
/usr/bin/python3 bench/model/torch_peer.py bench/results/cpu_model.json --threads "$(nproc)"
