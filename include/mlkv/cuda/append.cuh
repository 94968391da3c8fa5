#pragma once
/// \file cuda/append.cuh
/// Append on the GPU: an owner layer writes the K (rotated) and V rows of its new tokens into its
/// cache slot, contiguous or paged, with the rotary embedding fused into the write.
///
/// The rotation is the host's (rope.hpp, GPT-NeoX rotate-half over the first rotary_dims): the
/// launcher passes the host's inverse-frequency table by value, the angle is position * inv_freq
/// in f32, and the products and the sum are rounded separately (no fused multiply-add), as the
/// host computes them. Only cos/sin may differ from the host's by an ulp of f32, which moves a
/// stored f16/bf16 value by at most one unit in its last place, rarely.
///
/// Like the CPU cache's two-phase append, the write does not move any length: the caller passes
/// the context each sequence will have once the new rows are in (cached + new), the same
/// `attention_batch` the attention call that follows takes. A sequence whose lengths are out of
/// range (rows > context, context > its capacity, rows outside [0, total_rows)) is left as it was.

#include <cuda_runtime.h>

#include <cstdint>

#include "../rope.hpp"
#include "../shape.hpp"
#include "common.cuh"

namespace mlkv::cuda {
namespace detail {

/// The rotary table, by value in the kernel parameters (max_head_dim / 2 floats).
struct rope_args {
  int rotary_dims = 0;  ///< 0: no rotation
  float inv_freq[max_head_dim / 2];
};

template <class T, class In>
__device__ __forceinline__ float load_in(const In* p) {
  if constexpr (std::is_same_v<In, float>) {
    return *p;
  } else {
    return from_bits<T>(p->bits);
  }
}

/// One block per (row of a sequence, sequence); the block's threads walk kv_heads * head_dim.
/// k, v: [total_rows, kv_heads, head_dim]
template <class T, class In, class View>
__global__ void __launch_bounds__(128) append_kernel(const View kv, const In* __restrict__ k,
                                                     const In* __restrict__ v, const attention_batch ab,
                                                     const rope_args rope, const int b0) {
  pdl_wait();  // launched early (programmatic dependent launch): the previous kernel's writes first
  pdl_launch_dependents();
  const int b = static_cast<int>(blockIdx.y) + b0;
  const int i = blockIdx.x;
  const int ctx = ab.context[b];
  const int first = ab.q_offsets != nullptr ? ab.q_offsets[b] : b;
  const int rows = ab.q_offsets != nullptr ? ab.q_offsets[b + 1] - first : 1;
  const bool valid = rows >= 0 && rows <= ab.max_rows && first >= 0 && first <= ab.total_rows - rows &&
                     ctx >= rows && ctx <= device_capacity(kv, b);
  if (!valid || i >= rows) return;
  const int pos = ctx - rows + i;
  const std::size_t row = static_cast<std::size_t>(first) + static_cast<std::size_t>(i);
  const int H = kv.kv_heads, D = kv.head_dim, half = rope.rotary_dims / 2;
  // The view hands out const rows because attention only reads; append owns the slot's memory.
  std::uint16_t* const kd = reinterpret_cast<std::uint16_t*>(const_cast<T*>(kbase(kv)));
  std::uint16_t* const vd = reinterpret_cast<std::uint16_t*>(const_cast<T*>(vbase(kv)));
  for (int e = threadIdx.x; e < H * D; e += blockDim.x) {
    const int h = e / D;
    const int d = e - h * D;
    const In* krow = k + (row * static_cast<std::size_t>(H) + static_cast<std::size_t>(h)) * static_cast<std::size_t>(D);
    const In* vrow = v + (row * static_cast<std::size_t>(H) + static_cast<std::size_t>(h)) * static_cast<std::size_t>(D);
    float x = load_in<T>(krow + d);
    if (d < 2 * half) {
      // rope.hpp: x[i] <- x[i] cos - x[i+r/2] sin;  x[i+r/2] <- x[i+r/2] cos + x[i] sin.
      const int fi = d < half ? d : d - half;
      const float angle = __fmul_rn(static_cast<float>(pos), rope.inv_freq[fi]);
      float s, c;
      sincosf(angle, &s, &c);
      if (d < half) {
        x = __fsub_rn(__fmul_rn(x, c), __fmul_rn(load_in<T>(krow + d + half), s));
      } else {
        x = __fadd_rn(__fmul_rn(x, c), __fmul_rn(load_in<T>(krow + d - half), s));
      }
    }
    const std::size_t off = kv.offset(b, h, pos) + static_cast<std::size_t>(d);
    kd[off] = to_bits<T>(x);
    vd[off] = to_bits<T>(load_in<T>(vrow + d));
  }
}

}  // namespace detail

/// Writes the new tokens' K (rotated by `rope`, when given) and V into one owner slot of a
/// contiguous or paged cache, at positions context[b] - rows(b) .. context[b] - 1. Lengths do not
/// move (the caller commits them, as with the CPU cache). Stream-ordered; never synchronises.
///   kv:   the owner slot's view over device memory (written through, although its rows are const)
///   k, v: [ab.total_rows, kv_heads, head_dim], f32 or the storage type
///   ab:   context (cached + new) and row offsets on the device; max_rows, total_rows on the host
template <class View, class In>
void append_kv(const View& kv, const In* k, const In* v, const attention_batch& ab, const rotary* rope,
               cudaStream_t stream) {
  using T = typename View::value_type;
  static_assert(is_cuda_storage_v<T>, "mlkv: CUDA caches store mlkv::f16 or mlkv::bf16");
  static_assert(std::is_same_v<In, float> || std::is_same_v<In, T>,
                "mlkv: append takes f32 rows or rows of the cache's storage type");
  detail::check_view(kv);
  MLKV_CHECK(kv.head_dim >= 1 && kv.head_dim <= max_head_dim, "head dim (", kv.head_dim, ") must be in [1, ",
             max_head_dim, "]");
  MLKV_CHECK(ab.batch >= 0 && ab.batch <= kv.batch, "append batch (", ab.batch, ") must be in [0, ", kv.batch, "]");
  MLKV_CHECK(ab.max_rows >= 0 && ab.total_rows >= 0, "max rows (", ab.max_rows, ") and total rows (",
             ab.total_rows, ") must not be negative");
  detail::rope_args ra{};
  if (rope != nullptr) {
    MLKV_CHECK(rope->config().head_dim == kv.head_dim, "rotary head dim (", rope->config().head_dim,
               ") differs from the cache's head dim (", kv.head_dim, ")");
    ra.rotary_dims = rope->rotary_dims();
    for (int i = 0; i < ra.rotary_dims / 2; ++i) ra.inv_freq[i] = rope->inv_freq()[static_cast<std::size_t>(i)];
  }
  if (ab.batch == 0 || ab.max_rows == 0 || ab.total_rows == 0) return;
  MLKV_CHECK(ab.context != nullptr, "context lengths are null");
  MLKV_CHECK(k != nullptr && v != nullptr, "K or V rows are null");
  // Sequences are the grid's y: one launch per part of at most max_grid_yz.
  detail::for_each_grid_part(ab.batch, [&](int b0, int n) {
    detail::launch_pdl(detail::append_kernel<T, In, View>, dim3(static_cast<unsigned>(ab.max_rows), static_cast<unsigned>(n)),
                       dim3(128), 0, stream, /*programmatic=*/false, kv, k, v, ab, ra, b0);
  });
}

}  // namespace mlkv::cuda
