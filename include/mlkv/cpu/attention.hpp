#pragma once
/// \file cpu/attention.hpp
/// The fast CPU attention: decode and causal prefill over one owner slot (contiguous or paged
/// view), SIMD on every compiled ISA path, in parallel on an executor.
///
/// Same semantics, arguments and checks as `reference_attention` (cpu/reference.hpp), plus
/// `attention_options`:
///     mlkv::cpu::thread_pool pool(2);
///     mlkv::cpu::attention_options opt{.exec = &pool};           // path: default_isa()
///     mlkv::cpu::attention(cache.layer_view(l), Hq, q, out, {batch, context, offsets}, scale, opt);
///
/// How the work is cut (the kernels are in kernel_body.inc):
///  - a task is (sequence, KV head, block of query rows, range of context): each K/V row of the
///    range is loaded once for all the query heads of the group and all the rows of the block;
///  - decode (one row per sequence) runs one task per (sequence, KV head); when there are too
///    few of them to keep every thread busy (batch 1, few KV heads), each context is cut into
///    chunks and the chunk results are merged by log-sum-exp (the last chunk to finish merges,
///    always in chunk order);
///  - prefill cuts each sequence's rows into blocks of about 48 query vectors (rows x heads);
///    blocks near the end of a causal sequence read more tokens, so the biggest go first.
///  - decode over a paged cache whose per-head runs are short (16-token pages of d128 bf16 are
///    4 KiB per head) walks all the KV heads of a sequence in one task, tile by tile, so that it
///    reads each page's K and V as long runs (attention_options::kv_heads_per_task);
///  - on the AVX-512 paths a task with at least 8 queries per K/V row walks 64-token tiles, the
///    others 32-token ones (detail::wide_tiles), and a task whose query heads are a multiple of 16
///    puts the queries, not the tokens, in the SIMD lanes (no K transposes; kernel_body.inc's
///    kt_mode). Neither changes the results beyond rounding.
/// Results do not depend on the thread count beyond rounding: the chunking depends on the
/// executor's concurrency and on the number of tasks, and a different chunking sums in a
/// different order. On one thread (no chunking) a paged and a contiguous cache holding the same
/// rows give the same bits; on several, they do when kv_heads_per_task is the same fixed value.
///
/// Instantiations: one kernel per (ISA path, storage type, view type); the head dim, the group
/// size and the model geometry are run-time values (the register blocks are over queries and
/// SIMD vectors, not over them), so a model adds no kernel code. To compile them once per
/// program rather than once per translation unit, see MLKV_CPU_EXTERN_KERNELS below.
///
/// Memory: a step that streams the cache from DRAM prefetches the rows two tiles ahead (see
/// attention_options::prefetch_min_bytes). Put large caches on huge pages (madvise
/// MADV_HUGEPAGE, as the paged pool does): with 4 KiB pages every tile of K and V starts a new
/// page, with a table walk and a hardware-prefetch restart each.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

#include "../cache/buffer.hpp"
#include "../cache/view.hpp"
#include "../error.hpp"
#include "../shape.hpp"
#include "detail/task.hpp"
#include "executor.hpp"
#include "isa.hpp"
#include "reference.hpp"
#include "simd_avx2.hpp"
#include "simd_avx512.hpp"
#include "simd_neon.hpp"
#include "simd_scalar.hpp"

/// The kernels' instantiations, one per (ISA path, storage type, view type): a list for
/// `extern template` (MLKV_CPU_EXTERN_KERNELS) and for cpu/instantiate.hpp. `prefix` is `extern`
/// or empty.
#define MLKV_CPU_KERNEL_(prefix, path, T, View) \
  prefix template void path::attend<T, View<T>>(const View<T>&, const task_desc&, const call_desc&);
#define MLKV_CPU_KERNELS_OF_(prefix, path)                               \
  MLKV_CPU_KERNEL_(prefix, path, float, ::mlkv::contiguous_slot_view)    \
  MLKV_CPU_KERNEL_(prefix, path, ::mlkv::f16, ::mlkv::contiguous_slot_view) \
  MLKV_CPU_KERNEL_(prefix, path, ::mlkv::bf16, ::mlkv::contiguous_slot_view) \
  MLKV_CPU_KERNEL_(prefix, path, float, ::mlkv::paged_slot_view)         \
  MLKV_CPU_KERNEL_(prefix, path, ::mlkv::f16, ::mlkv::paged_slot_view)   \
  MLKV_CPU_KERNEL_(prefix, path, ::mlkv::bf16, ::mlkv::paged_slot_view)
#if defined(MLKV_CPU_X86)
#define MLKV_CPU_KERNELS_(prefix)                                                                     \
  MLKV_CPU_KERNELS_OF_(prefix, scalar) MLKV_CPU_KERNELS_OF_(prefix, avx2) MLKV_CPU_KERNELS_OF_(prefix, avx512) \
  MLKV_CPU_KERNELS_OF_(prefix, avx512_bf16)
#elif defined(MLKV_CPU_NEON)
#define MLKV_CPU_KERNELS_(prefix) MLKV_CPU_KERNELS_OF_(prefix, scalar) MLKV_CPU_KERNELS_OF_(prefix, neon)
#else
#define MLKV_CPU_KERNELS_(prefix) MLKV_CPU_KERNELS_OF_(prefix, scalar)
#endif

/// A program with many translation units that call the fast attention can compile the kernels
/// once: define MLKV_CPU_EXTERN_KERNELS in all of them and include <mlkv/cpu/instantiate.hpp> in
/// exactly one (same compiler flags). Each kernel costs seconds to compile, more under sanitizers.
#if defined(MLKV_CPU_EXTERN_KERNELS)
namespace mlkv::cpu::detail {
MLKV_CPU_KERNELS_(extern)
}  // namespace mlkv::cpu::detail
#endif

namespace mlkv::cpu {

/// How a call runs.
struct attention_options {
  /// The instruction-set path; default_isa() is the best one the compile flags enable, best_isa()
  /// the best one of the running CPU. A path that cannot run here is an mlkv::error.
  cpu::isa isa = default_isa();
  /// Where the tasks run; nullptr: on the calling thread.
  executor* exec = nullptr;
  /// 0: choose context chunks automatically. n > 0: cut every query block's context into chunks
  /// of n tokens, merged by log-sum-exp (for tests and tuning; any n >= 1 is valid).
  int split_tokens = 0;
  /// Software prefetch of the K/V rows two tiles ahead when the call reads at least this many
  /// bytes of K/V (then they come from DRAM, and the prefetches keep it busy; on a cache-resident
  /// context they only cost issue slots). 0: always; a huge value: never. The default guesses
  /// from the call alone; a caller that reads other data between calls (a model step streams
  /// its weights) knows the K/V will come from DRAM and should pass 0. Measured on Zen 4: 12:1
  /// d64 bf16, 8 sequences x 4096 tokens (8 MiB a call), four slots a step: 4.6 ms with, 6.9 ms
  /// without; the same call repeated on cache-resident K/V: +16% with.
  std::size_t prefetch_min_bytes = std::size_t{16} << 20;
  /// KV heads one decode task walks together, tile by tile (see kernel_body.inc's attend).
  /// 0: automatic (all of a sequence's KV heads, up to 64 query heads, over a paged cache whose
  /// per-head runs are short; one otherwise). n > 0: n (for tests and tuning).
  int kv_heads_per_task = 0;
};

namespace detail {

/// Query vectors (rows x heads) a prefill task aims for: enough that a tile's K^T/V preparation
/// is a small share of its arithmetic, few enough that the task's scratch stays near L1.
inline constexpr int prefill_queries = 48;
/// Most query heads one task handles (huge groups are cut; every cut re-reads K/V).
inline constexpr int max_task_heads = 64;
/// Shortest automatic context chunk (tokens): shorter ones cost more in merging than they gain.
inline constexpr int min_chunk = 256;

/// Runs shorter than this (bytes of one KV head's K, or V, in a page) make decode walk all the
/// KV heads of a sequence together. Measured on Zen 4 (32:8 d128 bf16, batch 8, 4096 tokens):
/// one head per task, 4 KiB runs (16-token pages) cost 13-23% over a contiguous cache, 16 KiB
/// runs (64-token pages) 3-5%; all heads together, 16-token pages 6-10%, 64-token pages 6-9%.
inline constexpr std::size_t short_run_bytes = std::size_t{16} << 10;

/// Automatic attention_options::kv_heads_per_task.
template <class View>
int auto_kv_per_task(const View& kv, int group) {
  if constexpr (requires { kv.page_tokens; }) {
    const std::size_t run = static_cast<std::size_t>(kv.page_tokens) * static_cast<std::size_t>(kv.head_dim) *
                            sizeof(typename View::value_type);
    if (run < short_run_bytes) return std::max(1, std::min(kv.kv_heads, max_task_heads / group));
  }
  return 1;
}

/// One (sequence, KV head, heads, rows) block whose context was cut into chunks.
struct merge_unit {
  task_desc where;      ///< rows/heads/KV head of the block (t0, t1, partial unused)
  float* partials;      ///< [chunks][partial_floats(Q, D)]
  int chunks;
};

/// Log-sum-exp merge of a block's chunk results, in chunk order: with m_s the chunk maxima
/// (base 2), M = max m_s, out = sum_s 2^(m_s - M) O_s / sum_s 2^(m_s - M) l_s. A chunk that saw
/// nothing (m_s = -inf) weighs exactly 0; no chunk seeing anything gives zeros, not NaN.
inline void merge_chunks(const merge_unit& u, const call_desc& c) {
  const task_desc& w = u.where;
  const int D = c.head_dim, Q = task_queries(w);
  const std::size_t stride = partial_floats(Q, D);
  for (int j = 0; j < Q; ++j) {
    float M = -std::numeric_limits<float>::infinity();
    for (int s = 0; s < u.chunks; ++s) M = std::max(M, u.partials[s * stride + static_cast<std::size_t>(Q) * D + j]);
    float* dst = c.out + query_offset(w, c, j);
    for (int d = 0; d < D; ++d) dst[d] = 0.f;
    if (M == -std::numeric_limits<float>::infinity()) continue;
    float L = 0.f;
    for (int s = 0; s < u.chunks; ++s) {
      const float* ps = u.partials + s * stride;
      const float ms = ps[static_cast<std::size_t>(Q) * D + j];
      if (ms == -std::numeric_limits<float>::infinity()) continue;
      const float wgt = std::exp2(ms - M);
      L += wgt * ps[static_cast<std::size_t>(Q) * D + Q + j];
      const float* os = ps + static_cast<std::size_t>(j) * D;
      for (int d = 0; d < D; ++d) dst[d] += wgt * os[d];
    }
    const float inv = L > 0.f ? 1.f / L : 0.f;
    for (int d = 0; d < D; ++d) dst[d] *= inv;
  }
}

template <class View>
using task_fn = void (*)(const View&, const task_desc&, const call_desc&);

/// The kernel of path `i` for this view and storage type.
template <class View>
task_fn<View> kernel_for(cpu::isa i) {
  using T = typename View::value_type;
  switch (i) {
#if defined(MLKV_CPU_X86)
    case isa::avx2: return &avx2::attend<T, View>;
    case isa::avx512: return &avx512::attend<T, View>;
    case isa::avx512_bf16: return &avx512_bf16::attend<T, View>;
#endif
#if defined(MLKV_CPU_NEON)
    case isa::neon: return &neon::attend<T, View>;
#endif
    default: return &scalar::attend<T, View>;
  }
}

/// The work of one call, cut into tasks (kept per calling thread and reused, so that a step
/// allocates nothing once the buffers have grown).
struct plan {
  std::vector<task_desc> blocks;      ///< (sequence, KV head, heads, rows) blocks
  std::vector<task_desc> tasks;       ///< the blocks cut into context chunks
  std::vector<int> unit_of;           ///< per task: its merge unit, or -1
  std::vector<int> order;             ///< task indices, biggest first
  std::vector<merge_unit> units;
  std::vector<int> pending;           ///< per unit: chunks not finished yet
  std::vector<int> next_chunk;        ///< per unit: chunks handed a partial buffer so far
  aligned_buffer<float> partials;
};

inline plan& thread_plan() {
  thread_local plan p;
  return p;
}

}  // namespace detail

/// Attention of the query rows in `ab` over one slot view, on the path and executor of `opt`.
/// Semantics and checks as reference_attention.
/// q:   [rows, q_heads, head_dim], already rotated
/// out: [rows, q_heads, head_dim]
template <class View>
void attention(const View& kv, int q_heads, const float* q, float* out, const attention_batch& ab, float scale,
               const attention_options& opt = {}) {
  using namespace detail;
  check_attention(kv, q_heads, q, out, ab, scale);
  MLKV_CHECK(kv.head_dim >= 8 && kv.head_dim <= max_head_dim && kv.head_dim % 8 == 0, "head dim (", kv.head_dim,
             ") must be a multiple of 8 between 8 and ", max_head_dim);
  MLKV_CHECK(opt.split_tokens >= 0, "split_tokens (", opt.split_tokens, ") must be 0 (automatic) or positive");
  MLKV_CHECK(opt.kv_heads_per_task >= 0, "kv_heads_per_task (", opt.kv_heads_per_task,
             ") must be 0 (automatic) or positive");
  require(opt.isa);
  if (ab.batch == 0 || ab.total_rows() == 0) return;

  const int Hkv = kv.kv_heads, G = q_heads / Hkv, D = kv.head_dim;
  double kv_bytes = 0;  // K and V bytes the call reads
  for (int b = 0; b < ab.batch; ++b) {
    if (ab.rows(b) > 0) kv_bytes += 2.0 * ab.context[b] * Hkv * D * sizeof(typename View::value_type);
  }
  const call_desc c{q, out, q_heads, G, D, scale * 1.4426950408889634f,
                    kv_bytes >= static_cast<double>(opt.prefetch_min_bytes)};
  serial_executor serial;
  executor& ex = opt.exec != nullptr ? *opt.exec : serial;
  const int conc = std::max(1, ex.concurrency());

  const int kv_per_task = std::min(Hkv, opt.kv_heads_per_task > 0 ? opt.kv_heads_per_task : auto_kv_per_task(kv, G));
  // Blocks of (sequence, KV head, heads, rows).
  const int head_chunks = (G + max_task_heads - 1) / max_task_heads;
  plan& pl = thread_plan();
  pl.blocks.clear();
  pl.tasks.clear();
  pl.unit_of.clear();
  pl.units.clear();
  pl.pending.clear();
  std::vector<task_desc>& blocks = pl.blocks;
  long long max_visible = 0;
  for (int b = 0; b < ab.batch; ++b) {
    const int n = ab.rows(b), ctx = ab.context[b];
    if (n == 0) continue;
    for (int hc = 0; hc < head_chunks; ++hc) {
      const int h0 = hc * G / head_chunks, h1 = (hc + 1) * G / head_chunks;
      const int R = n == 1 ? 1 : std::max(1, prefill_queries / (h1 - h0));
      for (int r0 = 0; r0 < n; r0 += R) {
        const int kvn = n == 1 ? kv_per_task : 1;
        for (int kh = 0; kh < Hkv; kh += kvn) {
          task_desc t;
          t.seq = b;
          t.kvh = kh;
          t.kv_count = std::min(kvn, Hkv - kh);
          t.head0 = h0;
          t.heads = h1 - h0;
          t.row0 = ab.first_row(b) + r0;
          t.rows = std::min(R, n - r0);
          t.pos0 = ctx - n + r0;
          t.t0 = 0;
          t.t1 = t.pos0 + t.rows;  // the block's last row sees tokens 0..t1-1
          max_visible = std::max<long long>(max_visible, t.t1);
          blocks.push_back(t);
        }
      }
    }
  }

  // Context chunks: enough tasks for every thread, two each (a thread held up elsewhere then
  // costs half a task, not a whole one). Each chunk costs a task's set-up and a partial result
  // that one thread merges at the end: four per thread were 6-10% slower than two (12:1 d64
  // bf16 batch 1 x 4096 on 2 Zen 4 cores, best and median of 1500 steps, alternating runs).
  long long chunk = std::numeric_limits<int>::max();
  const long long nblocks = static_cast<long long>(blocks.size());
  if (opt.split_tokens > 0) {
    chunk = opt.split_tokens;
  } else if (conc > 1 && nblocks < 2LL * conc) {
    const long long want = (2LL * conc + nblocks - 1) / nblocks;
    chunk = std::max<long long>(min_chunk, ((max_visible + want - 1) / want + 63) / 64 * 64);
  }

  std::vector<task_desc>& cut = pl.tasks;
  std::size_t partial_total = 0;
  for (const task_desc& blk : blocks) {
    const long long chunks = (blk.t1 + chunk - 1) / chunk;
    if (chunks <= 1) {
      cut.push_back(blk);
      pl.unit_of.push_back(-1);
      continue;
    }
    const int u = static_cast<int>(pl.units.size());
    pl.units.push_back(merge_unit{blk, nullptr, static_cast<int>(chunks)});
    pl.pending.push_back(static_cast<int>(chunks));
    for (long long s = 0; s < chunks; ++s) {
      task_desc t = blk;
      t.t0 = static_cast<int>(s * chunk);
      t.t1 = static_cast<int>(std::min<long long>(blk.t1, (s + 1) * chunk));
      cut.push_back(t);
      pl.unit_of.push_back(u);
    }
    partial_total += static_cast<std::size_t>(chunks) * partial_floats(task_queries(blk), D);
  }
  if (pl.partials.size() < partial_total) pl.partials = aligned_buffer<float>(partial_total + partial_total / 4);
  {
    std::size_t off = 0;
    for (merge_unit& u : pl.units) {
      u.partials = pl.partials.data() + off;
      off += static_cast<std::size_t>(u.chunks) * partial_floats(task_queries(u.where), D);
    }
  }
  pl.next_chunk.assign(pl.units.size(), 0);
  for (std::size_t i = 0; i < cut.size(); ++i) {
    const int u = pl.unit_of[i];
    if (u < 0) continue;
    const merge_unit& mu = pl.units[static_cast<std::size_t>(u)];
    cut[i].partial = mu.partials + static_cast<std::size_t>(pl.next_chunk[static_cast<std::size_t>(u)]++) *
                                       partial_floats(task_queries(mu.where), D);
  }
  // Biggest tasks first (causal prefill blocks differ in length; decode contexts may too).
  std::vector<int>& order = pl.order;
  order.resize(cut.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int>(i);
  std::sort(order.begin(), order.end(), [&](int a, int b) {  // ties in index order: deterministic
    const auto work = [&](const task_desc& t) { return static_cast<long long>(t.t1 - t.t0) * task_queries(t); };
    const long long wa = work(cut[static_cast<std::size_t>(a)]), wb = work(cut[static_cast<std::size_t>(b)]);
    return wa != wb ? wa > wb : a < b;
  });

  const task_fn<View> kernel = kernel_for<View>(opt.isa);
  auto body = [&](int i) {
    const std::size_t k = static_cast<std::size_t>(order[static_cast<std::size_t>(i)]);
    kernel(kv, cut[k], c);
    const int u = pl.unit_of[k];
    if (u >= 0) {
      std::atomic_ref<int> left(pl.pending[static_cast<std::size_t>(u)]);
      if (left.fetch_sub(1, std::memory_order_acq_rel) == 1) merge_chunks(pl.units[static_cast<std::size_t>(u)], c);
    }
  };
  ex.parallel_for(static_cast<int>(cut.size()), task_ref(body));
}

/// Decode: one query row per sequence, attending over context[b] tokens (the new one included).
/// q, out: [batch, q_heads, head_dim]
template <class View>
void decode(const View& kv, int q_heads, const float* q, float* out, int batch, const std::int32_t* context,
            float scale, const attention_options& opt = {}) {
  attention(kv, q_heads, q, out, attention_batch{batch, context, nullptr}, scale, opt);
}

}  // namespace mlkv::cpu
