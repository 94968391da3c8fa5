#pragma once
/// \file cuda/model/kernels.cuh
/// The small fused kernels of the CUDA model (cuda/model/gpt_neox.cuh): embedding gather,
/// residual + LayerNorm (one or two LayerNorms of the same row), the Q/K/V split with bias and
/// rotary on the queries, bias + activation, storage conversion and a greedy argmax. Every kernel
/// takes one row per block (or a flat element range), reads only what its arguments name and
/// writes NaN where its input is out of range on the device (a token outside the vocabulary),
/// since a device kernel cannot throw. Launchers take a stream and never synchronise.
///
/// Element types: `A` is the activation type fed to the linear layers (float or mlkv::bf16, the
/// weights' type), `T` the cache storage type (mlkv::f16 or mlkv::bf16); the residual stream and
/// every linear output are f32.

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "../../dtype.hpp"
#include "../../io/hf_config.hpp"
#include "../../shape.hpp"
#include "../common.cuh"

namespace mlkv::cuda::model_detail {

/// Threads of the row kernels; a row of up to row_threads * max_row_per_thread values stays in
/// registers.
inline constexpr int row_threads = 256;
inline constexpr int max_row_per_thread = 32;
/// Widest hidden size the LayerNorm kernel holds in registers.
inline constexpr int max_hidden = row_threads * max_row_per_thread;

template <class A>
__device__ __forceinline__ float load_act(const A* p) {
  if constexpr (std::is_same_v<A, float>) {
    return *p;
  } else {
    return mlkv::cuda::detail::from_bits<A>(p->bits);
  }
}
template <class A>
__device__ __forceinline__ void store_act(A* p, float x) {
  if constexpr (std::is_same_v<A, float>) {
    *p = x;
  } else {
    p->bits = mlkv::cuda::detail::to_bits<A>(x);
  }
}

/// Sum over the block (row_threads threads); every thread gets the result.
__device__ __forceinline__ float block_sum(float v, float* red) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // red may still be read by a previous call
  if (lane == 0) red[warp] = v;
  __syncthreads();
  float s = 0.f;
#pragma unroll
  for (int w = 0; w < row_threads / 32; ++w) s += red[w];
  return s;
}

/// x[r, :] = embed[tokens[r], :] (f32). A token outside [0, vocab) gives a NaN row.
/// tokens: [rows]; embed: [vocab, hidden]; x: [rows, hidden]
template <class W>
__global__ void __launch_bounds__(row_threads) embed_kernel(const std::int32_t* __restrict__ tokens,
                                                            const W* __restrict__ embed, int hidden, int vocab,
                                                            float* __restrict__ x) {
  mlkv::cuda::detail::pdl_wait();
  mlkv::cuda::detail::pdl_launch_dependents();
  const int r = blockIdx.x;
  const int t = tokens[r];
  const bool ok = t >= 0 && t < vocab;
  float* xr = x + static_cast<std::size_t>(r) * hidden;
  const W* er = embed + static_cast<std::size_t>(ok ? t : 0) * hidden;
  for (int i = threadIdx.x; i < hidden; i += blockDim.x) xr[i] = ok ? load_act(er + i) : __int_as_float(0x7fc00000);
}

/// Parameters of the residual + LayerNorm kernel (one block per output row).
template <class A>
struct residual_ln_params {
  float* x = nullptr;            ///< [rows, hidden] residual stream, updated in place when adds are given
  const float* add1 = nullptr;   ///< [rows, hidden] or null
  const float* bias1 = nullptr;  ///< [hidden] or null (with add1)
  const float* add2 = nullptr;   ///< [rows, hidden] or null: x = ((add2 + bias2) + (add1 + bias1)) + x
  const float* bias2 = nullptr;
  const float* w1 = nullptr;     ///< LayerNorm 1 [hidden]
  const float* b1 = nullptr;
  A* out1 = nullptr;             ///< [out rows, hidden]
  const float* w2 = nullptr;     ///< LayerNorm 2 [hidden] or null
  const float* b2 = nullptr;
  A* out2 = nullptr;
  const std::int32_t* src = nullptr;  ///< out row i reads x row src[i] (null: row i); no adds then
  int hidden = 0;
  float eps = 1e-5f;
};

/// This thread's LayerNorm weights and biases of a row (values threadIdx.x + j * row_threads),
/// loaded unconditionally (indices clamped to the row) so that all are in flight at once.
template <int PER>
__device__ __forceinline__ void ln_affine_load(const float* w, const float* b, int H, float (&wv)[PER], float (&bv)[PER]) {
#pragma unroll
  for (int j = 0; j < PER; ++j) {
    const int i0 = threadIdx.x + j * row_threads;
    const int i = i0 < H ? i0 : H - 1;
    wv[j] = w[i];
    bv[j] = b[i];
  }
}

/// out[i] = (v - mean) * inv * w + b for this thread's values of a row.
template <class A, int PER>
__device__ __forceinline__ void ln_store(const float (&v)[PER], float mean, float inv, const float (&w)[PER],
                                         const float (&b)[PER], int H, A* out) {
#pragma unroll
  for (int j = 0; j < PER; ++j) {
    const int i = threadIdx.x + j * row_threads;
    if (i < H) store_act(out + i, (v[j] - mean) * inv * w[j] + b[j]);
  }
}

/// x += adds (in the CPU model's order), then out1 = LN1(x), out2 = LN2(x) (biased variance,
/// as torch.nn.LayerNorm; mean and variance in two passes over the row held in registers).
/// The adds are fixed at compile time (MODE 0: none; 1: add1 + bias1; 2: both adds and biases)
/// and every load is unconditional (indices clamped to the row, only the stores predicated), so
/// a thread's loads are all in flight at once: a load under a run-time branch waits for the
/// loads before it, one memory round trip per value.
template <class A, int PER, int MODE>
__global__ void __launch_bounds__(row_threads) residual_ln_fixed_kernel(const residual_ln_params<A> p) {
  mlkv::cuda::detail::pdl_wait();
  mlkv::cuda::detail::pdl_launch_dependents();
  __shared__ float red[row_threads / 32];
  const int row = blockIdx.x;
  const int src = p.src != nullptr ? p.src[row] : row;
  const int H = p.hidden;
  float* xr = p.x + static_cast<std::size_t>(src) * H;
  constexpr int NA = MODE >= 1 ? PER : 1, NB = MODE == 2 ? PER : 1;
  float v[PER], a1[NA], c1[NA], a2[NB], c2[NB];
#pragma unroll
  for (int j = 0; j < PER; ++j) {
    const int i0 = threadIdx.x + j * row_threads;
    const int i = i0 < H ? i0 : H - 1;
    v[j] = xr[i];
    if constexpr (MODE >= 1) {
      a1[j] = p.add1[static_cast<std::size_t>(src) * H + i];
      c1[j] = p.bias1[i];
    }
    if constexpr (MODE == 2) {
      a2[j] = p.add2[static_cast<std::size_t>(src) * H + i];
      c2[j] = p.bias2[i];
    }
  }
  float sum = 0.f;
#pragma unroll
  for (int j = 0; j < PER; ++j) {
    const int i = threadIdx.x + j * row_threads;
    if constexpr (MODE == 1) v[j] = (a1[j] + c1[j]) + v[j];
    if constexpr (MODE == 2) v[j] = ((a2[j] + c2[j]) + (a1[j] + c1[j])) + v[j];
    if (i < H) {
      if constexpr (MODE >= 1) xr[i] = v[j];
      sum += v[j];
    }
  }
  const float mean = block_sum(sum, red) / static_cast<float>(H);
  float sq = 0.f;
#pragma unroll
  for (int j = 0; j < PER; ++j) {
    const int i = threadIdx.x + j * row_threads;
    if (i < H) sq += (v[j] - mean) * (v[j] - mean);
  }
  float w[PER], b[PER];
  ln_affine_load<PER>(p.w1, p.b1, H, w, b);  // before the second reduction: in flight during it
  const float var = block_sum(sq, red) / static_cast<float>(H);
  const float inv = rsqrtf(var + p.eps);
  ln_store<A, PER>(v, mean, inv, w, b, H, p.out1 + static_cast<std::size_t>(row) * H);
  if (p.out2 != nullptr) {
    ln_affine_load<PER>(p.w2, p.b2, H, w, b);
    ln_store<A, PER>(v, mean, inv, w, b, H, p.out2 + static_cast<std::size_t>(row) * H);
  }
}

/// The rotary table by value (as append.cuh's).
struct rope_table {
  int rotary_dims = 0;
  float inv_freq[max_head_dim / 2];
};

/// Splits one row of the fused Q/K/V projection: q = rope(qkv[0:q_dim] + bias) rounded to T;
/// k, v = qkv[q_dim:] + bias (f32; append rotates k). The position of row r is pos[r], or
/// context[r] - 1 when pos is null (decode: row r is sequence r's new token).
/// qkv: [rows, qkv_ld]; q: [rows, q_dim]; k, v: [rows, kv_dim] (only when kv_dim > 0)
template <class T>
__global__ void __launch_bounds__(row_threads) qkv_split_kernel(const float* __restrict__ qkv, int qkv_ld,
                                                                const float* __restrict__ bias, int q_dim,
                                                                int kv_dim, int head_dim,
                                                                const std::int32_t* __restrict__ pos,
                                                                const std::int32_t* __restrict__ context,
                                                                const rope_table rope, T* __restrict__ q,
                                                                float* __restrict__ k, float* __restrict__ v) {
  mlkv::cuda::detail::pdl_wait();
  mlkv::cuda::detail::pdl_launch_dependents();
  const int r = blockIdx.x;
  const float* row = qkv + static_cast<std::size_t>(r) * qkv_ld;
  const int p = pos != nullptr ? pos[r] : context[r] - 1;
  const int half = rope.rotary_dims / 2;
  std::uint16_t* qo = reinterpret_cast<std::uint16_t*>(q) + static_cast<std::size_t>(r) * q_dim;
  for (int e = threadIdx.x; e < q_dim; e += blockDim.x) {
    const int d = e % head_dim;
    float x = row[e] + bias[e];
    if (d < 2 * half) {
      // rope.hpp's arithmetic: products and sums rounded separately.
      const int fi = d < half ? d : d - half;
      const float angle = __fmul_rn(static_cast<float>(p), rope.inv_freq[fi]);
      float s, c;
      sincosf(angle, &s, &c);
      if (d < half) {
        const float y = row[e + half] + bias[e + half];
        x = __fsub_rn(__fmul_rn(x, c), __fmul_rn(y, s));
      } else {
        const float y = row[e - half] + bias[e - half];
        x = __fadd_rn(__fmul_rn(x, c), __fmul_rn(y, s));
      }
    }
    qo[e] = mlkv::cuda::detail::to_bits<T>(x);
  }
  for (int e = threadIdx.x; e < kv_dim; e += blockDim.x) {
    k[static_cast<std::size_t>(r) * kv_dim + e] = row[q_dim + e] + bias[q_dim + e];
    v[static_cast<std::size_t>(r) * kv_dim + e] = row[q_dim + kv_dim + e] + bias[q_dim + kv_dim + e];
  }
}

__device__ __forceinline__ float activate(io::activation a, float x) {
  switch (a) {
    case io::activation::gelu_tanh: {
      const float c = 0.7978845608028654f;
      return 0.5f * x * (1.0f + tanhf(c * (x + 0.044715f * x * x * x)));
    }
    case io::activation::relu: return x > 0.f ? x : 0.f;
    case io::activation::silu: return x / (1.0f + expf(-x));
    case io::activation::gelu:
    default: return 0.5f * x * (1.0f + erff(x * 0.7071067811865476f));
  }
}

/// out[r, c] = act(in[r, c] + bias[c]) for rows x n values, n a multiple of 4 and every row
/// 16-byte aligned: four values per thread (16-byte loads), grid (columns / 1024, rows up to
/// 65535, striding over the rest); no index division.
template <class A>
__global__ void __launch_bounds__(256) bias_act4_kernel(const float* __restrict__ in, const float* __restrict__ bias,
                                                        int rows, int n, io::activation act, A* __restrict__ out) {
  mlkv::cuda::detail::pdl_wait();
  mlkv::cuda::detail::pdl_launch_dependents();
  const int c = 4 * (blockIdx.x * blockDim.x + threadIdx.x);
  if (c >= n) return;
  const float4 b = *reinterpret_cast<const float4*>(bias + c);
  for (int r = blockIdx.y; r < rows; r += gridDim.y) {
    const std::size_t o = static_cast<std::size_t>(r) * static_cast<std::size_t>(n) + static_cast<std::size_t>(c);
    const float4 v = *reinterpret_cast<const float4*>(in + o);
    const float y0 = activate(act, v.x + b.x), y1 = activate(act, v.y + b.y);
    const float y2 = activate(act, v.z + b.z), y3 = activate(act, v.w + b.w);
    if constexpr (std::is_same_v<A, float>) {
      *reinterpret_cast<float4*>(out + o) = make_float4(y0, y1, y2, y3);
    } else {
      uint2 u;
      u.x = static_cast<std::uint32_t>(mlkv::cuda::detail::to_bits<A>(y0)) |
            static_cast<std::uint32_t>(mlkv::cuda::detail::to_bits<A>(y1)) << 16;
      u.y = static_cast<std::uint32_t>(mlkv::cuda::detail::to_bits<A>(y2)) |
            static_cast<std::uint32_t>(mlkv::cuda::detail::to_bits<A>(y3)) << 16;
      *reinterpret_cast<uint2*>(out + o) = u;
    }
  }
}

/// The linear layers of decode steps of a few rows (gemv_kernel): outputs per warp, warps per
/// block, and the most rows one launch takes.
inline constexpr int gemv_outputs = 4;
inline constexpr int gemv_warps = 4;
inline constexpr int gemv_max_rows = 8;

/// The dot product of 16 bytes of x with 16 bytes of w (8 bf16 or 4 f32 each), added to acc.
template <class W>
__device__ __forceinline__ float dot16(const uint4& a, const uint4& b, float acc) {
  const std::uint32_t av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    if constexpr (std::is_same_v<W, float>) {
      acc = fmaf(__uint_as_float(av[k]), __uint_as_float(bv[k]), acc);
    } else {  // bf16 pairs: the low half is the first value
      acc = fmaf(__uint_as_float(av[k] << 16), __uint_as_float(bv[k] << 16), acc);
      acc = fmaf(__uint_as_float(av[k] & 0xffff0000u), __uint_as_float(bv[k] & 0xffff0000u), acc);
    }
  }
  return acc;
}

/// y[r, o] = sum_i x[r, i] w[o, i] (f32 sums) for the first `rows` (<= R) rows: the linear layers
/// of decode steps of a few sequences, where a GEMM is a matrix-vector product bound by the
/// weights' bytes. Each warp makes gemv_outputs outputs from 16-byte loads of their weight rows,
/// every lane a strided part of the row, and sums across lanes at the end; the x values of a
/// 16-byte step serve every output of the warp. The block's weight rows (consecutive in memory)
/// are prefetched into the L2 before pdl_wait(): weights are never written by a step, so under
/// programmatic dependent launch their DRAM reads overlap the previous kernel's tail.
/// Needs in * sizeof(W) a multiple of 16 and 16-byte aligned x, w (gemv_fits).
/// x: [rows, in] (W), w: [out, in], y: [rows, out]
template <class W, int R>
__global__ void __launch_bounds__(gemv_warps * 32) gemv_kernel(const W* __restrict__ x, int rows, int in,
                                                              const W* __restrict__ w, int out, float* __restrict__ y) {
  constexpr int NO = gemv_outputs, V = 16 / static_cast<int>(sizeof(W)), BO = gemv_warps * NO;
  const int blocks = (out + BO - 1) / BO;  // of BO outputs; a grid smaller than that strides over them
  if (threadIdx.x == 0) {
    for (int b = blockIdx.x; b < blocks; b += gridDim.x) {
      const int n = min(BO, out - b * BO);
      mlkv::cuda::detail::prefetch_l2_bulk(w + static_cast<std::size_t>(b) * BO * in,
                                           static_cast<unsigned>(static_cast<std::size_t>(n) * in * sizeof(W)));
    }
  }
  mlkv::cuda::detail::pdl_wait();
  mlkv::cuda::detail::pdl_launch_dependents();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const uint4* xr[R];
#pragma unroll
  for (int r = 0; r < R; ++r) xr[r] = reinterpret_cast<const uint4*>(x + static_cast<std::size_t>(min(r, rows - 1)) * in);
  const int steps = in / V;
  for (int b = blockIdx.x; b < blocks; b += gridDim.x) {
    const int o0 = b * BO + warp * NO;
    if (o0 >= out) continue;
    // Rows past `out` and past `rows` read the last valid one (every load unconditional) and are
    // not stored.
    const uint4* wr[NO];
#pragma unroll
    for (int j = 0; j < NO; ++j) {
      wr[j] = reinterpret_cast<const uint4*>(w + static_cast<std::size_t>(min(o0 + j, out - 1)) * in);
    }
    float acc[NO][R];
#pragma unroll
    for (int j = 0; j < NO; ++j) {
#pragma unroll
      for (int r = 0; r < R; ++r) acc[j][r] = 0.f;
    }
#pragma unroll 2
    for (int c = lane; c < steps; c += 32) {
      uint4 wv[NO], xv[R];
#pragma unroll
      for (int j = 0; j < NO; ++j) wv[j] = __ldg(wr[j] + c);
#pragma unroll
      for (int r = 0; r < R; ++r) xv[r] = xr[r][c];
#pragma unroll
      for (int j = 0; j < NO; ++j) {
#pragma unroll
        for (int r = 0; r < R; ++r) acc[j][r] = dot16<W>(xv[r], wv[j], acc[j][r]);
      }
    }
#pragma unroll
    for (int j = 0; j < NO; ++j) {
#pragma unroll
      for (int r = 0; r < R; ++r) {
        float v = acc[j][r];
#pragma unroll
        for (int m = 16; m > 0; m >>= 1) v += __shfl_xor_sync(0xffffffffu, v, m);
        if (lane == (j * R + r) % 32 && o0 + j < out && r < rows) y[static_cast<std::size_t>(r) * out + o0 + j] = v;
      }
    }
  }
}

/// True when gemv() can take y[rows, out] = x[rows, in] w[out, in]^T: at most gemv_max_rows rows,
/// whole 16-byte steps along a row and 16-byte aligned operands.
template <class W>
bool gemv_fits(const W* x, int rows, int in, const W* w, int out) {
  const auto a16 = [](const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; };
  // in <= 2^26: a block's weight rows (16 of them) stay below 2^32 bytes, the bulk prefetch's size.
  return rows >= 1 && rows <= gemv_max_rows && in >= 1 && in <= (1 << 26) && out >= 1 &&
         (static_cast<std::size_t>(in) * sizeof(W)) % 16 == 0 && a16(x) && a16(w);
}

/// Launches gemv_kernel (programmatic dependent launch) for the smallest compiled R >= rows, on
/// at most max_blocks blocks when that is positive (each then makes several blocks' outputs: a
/// kernel beside another one leaves it the other SMs).
template <class W>
void gemv(const W* x, int rows, int in, const W* w, int out, float* y, cudaStream_t stream, int max_blocks = 0) {
  MLKV_CHECK(gemv_fits(x, rows, in, w, out) && y != nullptr, "gemv of ", rows, " rows (at most ", gemv_max_rows, ") x ",
             in, " inputs (whole 16-byte steps) x ", out,
             " outputs needs 16-byte aligned x and w and an output: use a GEMM for these operands");
  const int blocks = (out + gemv_warps * gemv_outputs - 1) / (gemv_warps * gemv_outputs);
  const dim3 grid(static_cast<unsigned>(max_blocks > 0 && max_blocks < blocks ? max_blocks : blocks));
  const dim3 block(gemv_warps * 32);
  auto go = [&](auto kernel) { mlkv::cuda::detail::launch_pdl(kernel, grid, block, 0, stream, true, x, rows, in, w, out, y); };
  if (rows <= 1) go(gemv_kernel<W, 1>);
  else if (rows <= 2) go(gemv_kernel<W, 2>);
  else if (rows <= 4) go(gemv_kernel<W, 4>);
  else go(gemv_kernel<W, gemv_max_rows>);
}

/// out[i] = in[i] converted from the cache type T to the activation type A.
template <class T, class A>
__global__ void convert_kernel(const T* __restrict__ in, std::size_t total, A* __restrict__ out) {
  mlkv::cuda::detail::pdl_wait();
  mlkv::cuda::detail::pdl_launch_dependents();
  const std::size_t stride = static_cast<std::size_t>(gridDim.x) * blockDim.x;
  for (std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    store_act(out + i, mlkv::cuda::detail::from_bits<T>(in[i].bits));
  }
}

/// Threads of the argmax kernel (one block per row: 16-byte loads, many in flight).
inline constexpr int argmax_threads = 1024;

/// out[r] = the first index of the largest logit of row r (std::max_element's choice; NaNs are
/// never chosen; a row of NaN gives 0). logits: [rows, vocab]
template <int Unused = 0>
__global__ void __launch_bounds__(argmax_threads) argmax_kernel(const float* __restrict__ logits, int vocab,
                                                                std::int32_t* __restrict__ out) {
  mlkv::cuda::detail::pdl_wait();
  mlkv::cuda::detail::pdl_launch_dependents();
  __shared__ float sv[argmax_threads / 32];
  __shared__ int si[argmax_threads / 32];
  const float* row = logits + static_cast<std::size_t>(blockIdx.x) * vocab;
  float best = -INFINITY;
  int idx = 0x7fffffff;
  auto take = [&](float x, int i) {  // i increases along each thread's walk: '>' keeps the first
    if (x > best) {
      best = x;
      idx = i;
    }
  };
  if ((vocab & 3) == 0 && (reinterpret_cast<std::uintptr_t>(row) & 15u) == 0) {
    // Up to 8 float4 loads of a thread in flight at once, the tail masked rather than a second
    // loop: a row of Pythia's 50304 logits is two rounds of loads instead of four (NOTES.md v5).
    constexpr int U = 8;
    const float4* r4 = reinterpret_cast<const float4*>(row);
    const int n4 = vocab / 4;
    for (int i = threadIdx.x; i < n4; i += U * argmax_threads) {
      float4 v[U];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int j = i + u * argmax_threads;
        v[u] = j < n4 ? __ldcs(r4 + j) : make_float4(-INFINITY, -INFINITY, -INFINITY, -INFINITY);
      }
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int b = 4 * (i + u * argmax_threads);  // -inf padding is never taken ('>')
        take(v[u].x, b), take(v[u].y, b + 1), take(v[u].z, b + 2), take(v[u].w, b + 3);
      }
    }
  } else {
    for (int i = threadIdx.x; i < vocab; i += argmax_threads) take(row[i], i);
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ob = __shfl_xor_sync(0xffffffffu, best, o);
    const int oi = __shfl_xor_sync(0xffffffffu, idx, o);
    if (ob > best || (ob == best && oi < idx)) {
      best = ob;
      idx = oi;
    }
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) {
    sv[warp] = best;
    si[warp] = idx;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < argmax_threads / 32; ++w) {
      if (sv[w] > best || (sv[w] == best && si[w] < idx)) {
        best = sv[w];
        idx = si[w];
      }
    }
    out[blockIdx.x] = idx == 0x7fffffff ? 0 : idx;
  }
}

/// Fills n values of T with uniform values in [-scale, scale) from a hash of (seed, index): cache
/// contents for benchmarks that do not prefill (never time on zeros).
template <class T>
__global__ void fill_random_kernel(T* __restrict__ out, std::size_t n, std::uint64_t seed, float scale) {
  const std::size_t stride = static_cast<std::size_t>(gridDim.x) * blockDim.x;
  for (std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    std::uint64_t z = seed + 0x9E3779B97F4A7C15ull * (i + 1);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    const float u = static_cast<float>(static_cast<std::int64_t>(z >> 40) - (1ll << 23)) * 0x1p-23f;
    store_act(out + i, u * scale);
  }
}

/// Grid size for the flat kernels: enough blocks for the elements, at most 8 per SM-ish (capped).
inline unsigned flat_blocks(std::size_t total, int threads = 256) {
  const std::size_t b = (total + static_cast<std::size_t>(threads) - 1) / static_cast<std::size_t>(threads);
  return static_cast<unsigned>(b < 1 ? 1 : (b > 4096 ? 4096 : b));
}

}  // namespace mlkv::cuda::model_detail
