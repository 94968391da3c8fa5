#pragma once
/// \file cpu/detail/task.hpp
/// What one parallel task of the CPU attention does, in terms every ISA path shares: the task
/// and call descriptors, the per-thread scratch, and the walk over a slot view's runs.
///
/// A task is one KV head (or a few consecutive ones) of one sequence, a set of query rows
/// (consecutive, so consecutive positions) and a set of the query heads that read that KV head,
/// over a range of cached tokens. Its "queries" are the KV heads x rows x heads vectors; each K/V
/// row of the range is loaded once and used for all the queries of its KV head (MLKV/GQA
/// sharing turned into arithmetic intensity).

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>

#include "../../cache/buffer.hpp"
#include "../../dtype.hpp"
#include "../../shape.hpp"

/// Unrolls the loop that follows: loops over compile-time register blocks must be unrolled for
/// the blocks to stay in registers (GCC's -O2 does not unroll them by itself).
#define MLKV_UNROLL _Pragma("GCC unroll 16")

/// Forces inlining of the SIMD policies' operations and of the helpers called inside the
/// kernels' inner loops. GCC 12 left ops::load_v and row_prefetch::step out of line in the f16
/// kernels only; a call inside the P.V loop spills every accumulator register around it
/// (measured on Zen 4, 32:8 d128 f16 decode: 2x the time of bf16 on the same path).
#define MLKV_SIMD_INLINE __attribute__((always_inline)) inline
/// The same for a lambda (after its parameter list).
#define MLKV_SIMD_INLINE_LAMBDA __attribute__((always_inline))

namespace mlkv::cpu::detail {

/// Shared by every task of one call.
struct call_desc {
  const float* q = nullptr;  ///< [rows, q_heads, head_dim]
  float* out = nullptr;      ///< [rows, q_heads, head_dim]
  int q_heads = 0;
  int group = 0;      ///< query heads per KV head
  int head_dim = 0;
  float qscale = 0;   ///< softmax scale * log2(e): scores are kept in base-2 units
  bool prefetch = false;  ///< prefetch K/V rows ahead (when they will not be in the caches)
};

/// One task (see the file comment).
struct task_desc {
  int seq = 0;     ///< sequence
  int kvh = 0;     ///< (first) KV head
  int kv_count = 1;  ///< KV heads kvh..kvh+kv_count-1, walked tile by tile (see attend)
  int head0 = 0;   ///< first query head of the group handled (0..group-1)
  int heads = 0;   ///< query heads handled
  int row0 = 0;    ///< first query row (global row index into q/out)
  int rows = 0;    ///< query rows
  int pos0 = 0;    ///< position of the first row; row i sees tokens 0..pos0+i
  int t0 = 0;      ///< first token of the range
  int t1 = 0;      ///< one past the last token of the range
  float* partial = nullptr;  ///< nullptr: write out; else [Q][D] unnormalised O, [Q] max, [Q] sum
};

/// Queries of a task: KV heads x rows x heads, in that order.
inline int task_queries(const task_desc& t) { return t.kv_count * t.rows * t.heads; }

/// Offset (in floats) of task query j's vector in the call's q and out: query j is KV head
/// t.kvh + j / (rows * heads), row (j % (rows * heads)) / heads, head j % heads of the group.
inline std::size_t query_offset(const task_desc& t, const call_desc& c, int j) {
  const int per_kv = t.rows * t.heads, hk = j / per_kv, r = j % per_kv / t.heads, h = j % t.heads;
  return (static_cast<std::size_t>(t.row0 + r) * static_cast<std::size_t>(c.q_heads) +
          static_cast<std::size_t>(t.kvh + hk) * static_cast<std::size_t>(c.group) + static_cast<std::size_t>(t.head0 + h)) *
         static_cast<std::size_t>(c.head_dim);
}

/// True when a task should walk its range in the wide tiles of the paths that compile two widths
/// (AVX-512: 64 tokens instead of 32): when at least 8 queries read each K/V row, the arithmetic
/// bounds the task, and a wide tile halves the per-tile costs (the lazy max of each query, the
/// P.V accumulators loaded and stored, the q.K^T broadcasts per K^T load). Streaming tasks (few
/// queries per row) keep 32-token tiles: their software prefetch keeps DRAM busier with them.
/// Measured on Zen 4 (2 threads, bf16 unless said): 12:1 d64 decode 8 x 32768 8% faster (f16
/// 13%), 32:1 d128 3-5%; 12:4 d64 8 x 32768 20% slower, 32:8 d128 8 x 4096 15% slower.
inline constexpr int wide_tile_queries = 8;
inline bool wide_tiles(const task_desc& t) { return t.rows * t.heads >= wide_tile_queries; }

/// The tasks a compiled kernel body serves: every task, or (paths that compile two tile widths)
/// those of one width only, so that each body instantiates only the modes its tasks can reach.
enum class tile_use { every_task, narrow, wide };

/// Floats a partial result of `queries` queries takes.
inline std::size_t partial_floats(int queries, int head_dim) {
  return static_cast<std::size_t>(queries) * (static_cast<std::size_t>(head_dim) + 2);
}

/// A zero K/V row: the rows of a tile past the end of a range point here, so a tile is always
/// full and nothing past the cache is read. Zero in every storage type.
template <class T>
alignas(64) inline constexpr T zero_row[max_head_dim] = {};

/// Per-thread scratch of the kernels, 64-byte aligned, grown on demand and kept.
inline float* thread_scratch(std::size_t floats) {
  thread_local aligned_buffer<float> buf;
  if (buf.size() < floats) buf = aligned_buffer<float>(floats + floats / 4);
  return buf.data();
}

/// Fills `krows`/`vrows` with the rows of tokens t..t+n-1 of (seq, kvh), following the view's
/// runs (one per sequence for the contiguous cache, one per page for the paged cache); entries
/// n..tile-1 point at zero rows.
template <class View, class T = typename View::value_type>
inline void gather_rows(const View& kv, int seq, int kvh, int t, int n, int tile, const T** krows, const T** vrows) {
  const std::size_t D = static_cast<std::size_t>(kv.head_dim);
  int i = 0;
  while (i < n) {
    const int r = std::max(1, std::min(n - i, kv.run(seq, t + i)));  // a run is never empty
    const T* kp = kv.k_row(seq, kvh, t + i);
    const T* vp = kv.v_row(seq, kvh, t + i);
    for (int j = 0; j < r; ++j) {
      krows[i + j] = kp + static_cast<std::size_t>(j) * D;
      vrows[i + j] = vp + static_cast<std::size_t>(j) * D;
    }
    i += r;
  }
  for (; i < tile; ++i) krows[i] = vrows[i] = zero_row<T>;
}

}  // namespace mlkv::cpu::detail
