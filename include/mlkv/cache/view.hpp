#pragma once
/// \file cache/view.hpp
/// What an attention kernel sees of one owner slot: K and V rows addressed by (sequence, KV
/// head, token), in runs of consecutive tokens that are contiguous in memory.
///
/// Every slot view provides
///     int batch, kv_heads, head_dim;
///     const T* k_row(int seq, int head, int token) const;   // head_dim values
///     const T* v_row(int seq, int head, int token) const;
///     int run(int seq, int token) const;  // rows token.. that follow k_row(seq, head, token)
///                                         // contiguously (stride head_dim), same for V
///     int max_tokens(int seq) const;      // tokens the sequence can address
/// so one kernel body serves the contiguous cache (one run per sequence) and the paged cache
/// (one run per page). Kernels walk a sequence as: for (t = 0; t < n; t += r) { r = min(n - t,
/// view.run(seq, t)); rows k_row(seq, h, t) .. + r * head_dim }.

#include <cstddef>
#include <cstdint>

#include "../config.hpp"

namespace mlkv {

/// One owner slot of a contiguous cache over a batch.
template <class T>
struct contiguous_slot_view {
  using value_type = T;
  const T* k = nullptr;  ///< [batch, kv_heads, capacity, head_dim]
  const T* v = nullptr;  ///< [batch, kv_heads, capacity, head_dim]
  int batch = 0;
  int kv_heads = 0;
  int head_dim = 0;
  int capacity = 0;

  MLKV_HOST_DEVICE std::size_t offset(int seq, int head, int token) const {
    return ((static_cast<std::size_t>(seq) * static_cast<std::size_t>(kv_heads) + static_cast<std::size_t>(head)) *
                static_cast<std::size_t>(capacity) +
            static_cast<std::size_t>(token)) *
           static_cast<std::size_t>(head_dim);
  }
  MLKV_HOST_DEVICE const T* k_row(int seq, int head, int token) const { return k + offset(seq, head, token); }
  MLKV_HOST_DEVICE const T* v_row(int seq, int head, int token) const { return v + offset(seq, head, token); }
  MLKV_HOST_DEVICE int run(int /*seq*/, int token) const { return capacity - token; }
  MLKV_HOST_DEVICE int max_tokens(int /*seq*/) const { return capacity; }
};

}  // namespace mlkv
