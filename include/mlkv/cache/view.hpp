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
/// (one run per page: `paged_slot_view`). Kernels walk a sequence as: for (t = 0; t < n; t += r) { r = min(n - t,
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

/// One owner slot of a paged cache over a batch. A page holds K and V of `page_tokens` tokens for
/// every owner slot and KV head: [slot][K|V][kv_head][page_tokens][head_dim], so one page
/// allocation serves all layers; `block_table` maps a sequence's j-th block of tokens to a page.
template <class T>
struct paged_slot_view {
  using value_type = T;
  const T* pages = nullptr;                 ///< page p starts at pages + p * page_stride
  const std::int32_t* block_table = nullptr;  ///< [batch, max_blocks]: page of block j of sequence b
  const std::int32_t* seq_blocks = nullptr;   ///< [batch]: blocks mapped for each sequence
  int batch = 0;
  int kv_heads = 0;
  int head_dim = 0;
  int page_tokens = 0;
  int max_blocks = 0;
  std::size_t page_stride = 0;  ///< values per page: 2 * slots * kv_heads * page_tokens * head_dim
  std::size_t k_offset = 0;     ///< this slot's K inside a page: 2 * slot * kv_heads * page_tokens * head_dim
  std::size_t v_offset = 0;     ///< this slot's V inside a page: k_offset + kv_heads * page_tokens * head_dim
  int page_shift = -1;          ///< log2(page_tokens) when that is a power of two (the paged cache sets it):
                                ///< addressing shifts and masks; -1: it divides (same result, slower)

  MLKV_HOST_DEVICE int block_of(int token) const { return page_shift >= 0 ? token >> page_shift : token / page_tokens; }
  MLKV_HOST_DEVICE int in_page(int token) const {
    return page_shift >= 0 ? token & (page_tokens - 1) : token % page_tokens;
  }
  MLKV_HOST_DEVICE std::size_t offset(int seq, int head, int token) const {
    const int page = block_table[static_cast<std::size_t>(seq) * static_cast<std::size_t>(max_blocks) +
                                 static_cast<std::size_t>(block_of(token))];
    return static_cast<std::size_t>(page) * page_stride +
           (static_cast<std::size_t>(head) * static_cast<std::size_t>(page_tokens) +
            static_cast<std::size_t>(in_page(token))) *
               static_cast<std::size_t>(head_dim);
  }
  MLKV_HOST_DEVICE const T* k_row(int seq, int head, int token) const { return pages + k_offset + offset(seq, head, token); }
  MLKV_HOST_DEVICE const T* v_row(int seq, int head, int token) const { return pages + v_offset + offset(seq, head, token); }
  MLKV_HOST_DEVICE int run(int /*seq*/, int token) const { return page_tokens - in_page(token); }
  MLKV_HOST_DEVICE int max_tokens(int seq) const { return seq_blocks[seq] * page_tokens; }

  /// The view of owner slot `slot` in a pool whose pages hold `slots` owner slots (the layout
  /// above): strides and offsets from the geometry, page_shift set when page_tokens is a power
  /// of two. For engines that keep their own pool (and the paged cache's batches).
  static constexpr paged_slot_view over_pool(const T* pages, const std::int32_t* block_table,
                                             const std::int32_t* seq_blocks, int batch, int kv_heads, int head_dim,
                                             int page_tokens, int max_blocks, int slots, int slot) {
    paged_slot_view v;
    v.pages = pages;
    v.block_table = block_table;
    v.seq_blocks = seq_blocks;
    v.batch = batch;
    v.kv_heads = kv_heads;
    v.head_dim = head_dim;
    v.page_tokens = page_tokens;
    v.max_blocks = max_blocks;
    const std::size_t half = static_cast<std::size_t>(kv_heads) * static_cast<std::size_t>(page_tokens) *
                             static_cast<std::size_t>(head_dim);
    v.page_stride = 2 * static_cast<std::size_t>(slots) * half;
    v.k_offset = 2 * static_cast<std::size_t>(slot) * half;
    v.v_offset = v.k_offset + half;
    v.page_shift = -1;
    if (page_tokens > 0 && (page_tokens & (page_tokens - 1)) == 0) {
      v.page_shift = 0;
      while ((1 << v.page_shift) < page_tokens) ++v.page_shift;
    }
    return v;
  }
};

}  // namespace mlkv
