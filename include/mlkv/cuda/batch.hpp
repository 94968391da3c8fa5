#pragma once
/// \file cuda/batch.hpp
/// What a CUDA attention or append call needs to know about its batch: the same semantics as
/// `mlkv::cpu::attention_batch` (cpu/reference.hpp), with the per-sequence arrays on the device
/// and a few host-side bounds that size the launch without reading those arrays (a launcher
/// never synchronises, so it cannot look at device memory).
///
/// Plain C++ (no CUDA header): host code compiled by any C++ compiler can fill it in and pass it
/// to code compiled by nvcc.
///
/// Semantics. Sequence b attends over its first context[b] cached tokens; its rows (query rows for
/// attention, new K/V rows for append) are the last rows(b) of those tokens, so row i of sequence b
/// sits at position context[b] - rows(b) + i and (attention) sees tokens 0 .. that position.
/// rows(b) = q_offsets[b+1] - q_offsets[b], or 1 when q_offsets is null (decode).

#include <cstdint>

namespace mlkv::cuda {

/// A batch of sequences for one CUDA call. The pointers are device pointers.
struct attention_batch {
  int batch = 0;                            ///< sequences (<= the view's batch)
  const std::int32_t* context = nullptr;    ///< device [batch]: tokens attended (cached + new)
  const std::int32_t* q_offsets = nullptr;  ///< device [batch + 1]: first row of each sequence,
                                            ///< q_offsets[0] == 0; nullptr: one row each (decode)
  int max_context = 0;  ///< host bound: every context[b] <= max_context (sizes the decode split;
                        ///< each sequence spreads its own length over it, so a loose bound costs
                        ///< idle CTAs only: 12:1 d64 batch 16 at 2048 tokens, 10.7 us planned for
                        ///< 2048, 12.1 planned for 32768 on an H100)
  int max_rows = 1;     ///< host bound: every rows(b) <= max_rows (sizes the prefill grid)
  int total_rows = 0;   ///< host: rows of q and out (k and v for append); q_offsets[batch] <= it

  /// A decode step: one row per sequence, row b belongs to sequence b.
  static constexpr attention_batch decode(int batch, const std::int32_t* context, int max_context) {
    return attention_batch{batch, context, nullptr, max_context, 1, batch};
  }
  /// Chunks of rows per sequence (prefill, chunked prefill, several new tokens).
  static constexpr attention_batch chunks(int batch, const std::int32_t* context, const std::int32_t* q_offsets,
                                          int max_context, int max_rows, int total_rows) {
    return attention_batch{batch, context, q_offsets, max_context, max_rows, total_rows};
  }
};

/// Head dims the CUDA kernels are compiled for.
inline constexpr int compiled_head_dims[] = {64, 80, 96, 128};

/// True when the CUDA kernels support head dim `d`.
constexpr bool cuda_head_dim_supported(int d) {
  for (int x : compiled_head_dims) {
    if (x == d) return true;
  }
  return false;
}

}  // namespace mlkv::cuda
