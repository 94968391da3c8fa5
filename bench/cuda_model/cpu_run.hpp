#pragma once
// The CPU model's side of `mlkv-cuda-model run --dtype cpu` (compiled by the host compiler in
// cpu_run.cpp, so nvcc never sees the CPU kernels).
#include <cstdint>
#include <string>
#include <vector>

#include <mlkv/io/hf_config.hpp>

/// Teacher-forced run of the CPU model (f32 weights, f32 cache): a prefill of toks[0, prompt)
/// (every row's logits), then one decode step per later token. logits [rows, vocab]; argmax the
/// greedy choice of every row.
void cpu_run(const std::string& dir, const std::vector<std::int32_t>& toks, int prompt, std::vector<float>& logits,
             std::vector<std::int32_t>& argmax, int& vocab);

/// The MLP width the paper's converter gives `mha` converted to (kv_heads, kv_layers)
/// (mlkv::io::plan_conversion; here so that nvcc's host pass never compiles convert.hpp, where
/// GCC 12 at -O3 reports a false -Wrestrict).
int paper_intermediate(const mlkv::io::gpt_neox_config& mha, int kv_heads, int kv_layers);
