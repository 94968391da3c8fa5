#pragma once
/// \file cuda/prefill_common.cuh
/// What the two prefill kernels (prefill.cuh: mma.sync, any head dim; prefill_sm90.cuh: wgmma,
/// sm_90a) share: their parameters, the per-sequence row bookkeeping and the argument checks.

#include <cuda_runtime.h>

#include <climits>
#include <cstdint>

#include "common.cuh"

namespace mlkv::cuda {
namespace detail {

/// Packed rows (token, query head of one KV head) per prefill CTA.
inline constexpr int prefill_bm = 128;

template <class T, class View>
struct prefill_params {
  View kv;
  const T* q;  // [total_rows, q_heads, head_dim]
  T* out;      // [total_rows, q_heads, head_dim]
  attention_batch ab;
  int q_heads;
  int group;
  float scale_log2;
  // Work order of the warp-specialised kernel (prefill_sm90.cuh): a launch covers the (sequence,
  // KV head) pairs head0 .. head0 + heads - 1, flattened b * kv_heads + hk, in bands of band_heads
  // pairs; inside a band, heaviest row blocks first. z_blocks: row blocks per pair.
  long long head0 = 0;
  int heads = 0;
  int band_heads = 1;
  int z_blocks = 0;
};

/// Where a sequence's rows are, and whether its lengths are in range.
struct seq_rows {
  int first, rows, ctx;
  bool offsets_ok, ok;
};
template <class View>
__device__ __forceinline__ seq_rows read_seq_rows(const View& kv, const attention_batch& ab, int b) {
  seq_rows s;
  s.ctx = ab.context[b];
  s.first = ab.q_offsets != nullptr ? ab.q_offsets[b] : b;
  s.rows = ab.q_offsets != nullptr ? ab.q_offsets[b + 1] - s.first : 1;
  s.offsets_ok = s.rows >= 0 && s.rows <= ab.max_rows && s.first >= 0 && s.first <= ab.total_rows - s.rows;
  s.ok = s.offsets_ok && s.ctx >= s.rows && s.ctx <= device_capacity(kv, b);
  return s;
}

/// Out-of-range lengths: NaN in this CTA's packed rows [r0, r0 + bm) where the offsets say where
/// they are; nothing is read and nothing else is written.
/// Threads t0, t0 + nt, ... of the CTA share the work (default: every thread).
template <class T, class View>
__device__ __forceinline__ void prefill_nan_rows(const prefill_params<T, View>& p, const seq_rows& sr, int hk, int r0,
                                                 int bm, int D, int t0 = -1, int nt = -1) {
  if (!sr.offsets_ok) return;
  if (t0 < 0) {
    t0 = static_cast<int>(threadIdx.x);
    nt = static_cast<int>(blockDim.x);
  }
  const int g = p.group, CH = D / 8, R = sr.rows * g;
  for (int e = t0; e < bm * CH; e += nt) {
    const int pr = r0 + e / CH, c = e % CH;
    if (pr >= R) continue;
    const int i = pr / g, j = pr - i * g;
    uint4* o = reinterpret_cast<uint4*>(p.out + ((static_cast<std::size_t>(sr.first) + i) * p.q_heads + hk * g + j) * D);
    o[c] = nan_vec<T>();
  }
}

template <class View>
void check_prefill_args(const View& kv, int q_heads, const typename View::value_type* q,
                        const typename View::value_type* out, const attention_batch& ab, float scale) {
  check_attention_args(kv, q_heads, q, out, ab, scale);
  if (ab.batch == 0) return;
  MLKV_CHECK(ab.q_offsets != nullptr || ab.total_rows >= ab.batch, "total rows (", ab.total_rows,
             ") must cover one row per sequence (", ab.batch, ") when q_offsets is null");
  const long long packed = static_cast<long long>(ab.max_rows) * (q_heads / kv.kv_heads);
  MLKV_CHECK(packed <= INT_MAX && (packed + prefill_bm - 1) / prefill_bm <= max_grid_yz, "max rows (", ab.max_rows,
             ") x query heads per KV head (", q_heads / kv.kv_heads, ") is too large for one launch");
  MLKV_CHECK(kv.kv_heads <= max_grid_yz, "KV heads (", kv.kv_heads, ") must be at most ", max_grid_yz);
}

}  // namespace detail
}  // namespace mlkv::cuda
