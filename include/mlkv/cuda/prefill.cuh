#pragma once
/// \file cuda/prefill.cuh
/// Causal prefill on the GPU: a chunk of new query rows per sequence over its cached + new
/// tokens, for a batch of sequences with their own chunk and context lengths, over a contiguous
/// or paged slot view. Also serves any call with several rows per sequence (speculative decoding,
/// chunked prefill); decode_attention is the faster path for one row per sequence.
///
/// FlashAttention-2 style (Dao 2023): a CTA owns 128 query rows, streams K/V tiles of 64 tokens
/// through a two-stage cp.async pipeline, keeps an online softmax per row in registers and never
/// writes the score matrix; 4 warps of 32 rows each on the tensor cores (mma.sync m16n8k16, f32
/// accumulators). The rows of a CTA are (token, query head) pairs of ONE KV head, token-major: all
/// Hq/Hkv query heads of a KV head share every K/V tile that the CTA loads (GQA/MQA/MLKV packing),
/// so a chunk of few tokens still fills the tile. Causal masking is per row (each token has its
/// own position); tiles past a warp's last position are skipped, and CTAs run heaviest first.
/// On Hopper, in builds for sm_90a that define MLKV_CUDA_SM90A, prefill_attention runs head dims
/// 64 and 128 on the wgmma kernel of prefill_sm90.cuh instead (contiguous and paged views alike).

#include <cuda_runtime.h>

#include <climits>
#include <cstdint>
#include <type_traits>

#include "common.cuh"
#include "prefill_common.cuh"
#include "prefill_sm90.cuh"

namespace mlkv::cuda {
namespace detail {

inline constexpr int prefill_threads = 128;  // 4 warps x 32 rows
inline constexpr int prefill_bn = 64;        // tokens per K/V tile

template <int D>
__host__ __device__ constexpr std::size_t prefill_smem_bytes() {
  return static_cast<std::size_t>(prefill_bm + 2 * 2 * prefill_bn) * (D + 8) * 2u;
}

/// One CTA per (sequence, KV head, block of 128 packed rows), heaviest blocks first.
template <class T, int D, class View>
__global__ void __launch_bounds__(prefill_threads) prefill_kernel(const prefill_params<T, View> p) {
  constexpr int BM = prefill_bm, BN = prefill_bn, LD = D + 8, CH = D / 8;
  constexpr bool QREG = D <= 64;  // keep Q's fragments in registers when they are few
  extern __shared__ __align__(16) unsigned char smem[];
  std::uint16_t* const sQ = reinterpret_cast<std::uint16_t*>(smem);  // [BM][LD]
  std::uint16_t* const sK = sQ + BM * LD;                            // [2][BN][LD]
  std::uint16_t* const sV = sK + 2 * BN * LD;                        // [2][BN][LD]

  pdl_wait();  // launched early (programmatic dependent launch): the previous kernel's writes first
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int b = blockIdx.x, hk = blockIdx.y;
  const int mb = gridDim.z - 1 - blockIdx.z;
  const int g = p.group;
  const seq_rows sr = read_seq_rows(p.kv, p.ab, b);
  const int r0 = mb * BM;
  if (!sr.ok) {
    prefill_nan_rows(p, sr, hk, r0, BM, D);
    return;
  }
  const int R = sr.rows * g;  // packed rows of this (sequence, KV head)
  if (r0 >= R) return;
  const int pos0 = sr.ctx - sr.rows;  // position of the chunk's first token

  // Q tile: packed row r -> token i = r / g, query head hk * g + r % g.
  for (int e = tid; e < BM * CH; e += prefill_threads) {
    const int r = e / CH, c = e - r * CH;
    const int pr = r0 + r;
    const bool ok = pr < R;
    const int i = ok ? pr / g : 0, j = ok ? pr - i * g : 0;
    const T* src = p.q + ((static_cast<std::size_t>(sr.first) + i) * p.q_heads + hk * g + j) * D + c * 8;
    cp_async_16(smem_addr(sQ + r * LD + c * 8), src, ok);
  }
  cp_async_commit();

  const int last_row = min(R, r0 + BM) - 1;
  const int pos_last = pos0 + last_row / g;
  const int n_tiles = pos_last / BN + 1;
  const int wr0 = r0 + warp * 32;                        // this warp's first packed row
  const int w_last = min(R - 1, wr0 + 31);
  const int w_min_pos = wr0 < R ? pos0 + wr0 / g : INT_MAX;  // rows past R see nothing
  const int w_max_pos = wr0 < R ? pos0 + w_last / g : -1;
  int my_pos[2][2];
#pragma unroll
  for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int pr = wr0 + mt * 16 + (lane >> 2) + h * 8;
      my_pos[mt][h] = pr < R ? pos0 + pr / g : -1;
    }
  }

  const T* const kb = kbase(p.kv);
  const T* const vb = vbase(p.kv);
  auto load_tile = [&](int tile, int stage) {
#pragma unroll
    for (int it = 0; it < BN * CH / prefill_threads; ++it) {
      const int e = tid + it * prefill_threads;
      const int r = e / CH, c = e - r * CH;
      const int tok = tile * BN + r;
      const bool ok = tok <= pos_last;
      const std::size_t off = p.kv.offset(b, hk, ok ? tok : 0) + static_cast<std::size_t>(c * 8);
      cp_async_16(smem_addr(sK + (stage * BN + r) * LD + c * 8), kb + off, ok);
      cp_async_16(smem_addr(sV + (stage * BN + r) * LD + c * 8), vb + off, ok);
    }
  };

  float o[2][D / 8][4];
  float m[2][2], l[2][2];
#pragma unroll
  for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt) o[mt][dt][0] = o[mt][dt][1] = o[mt][dt][2] = o[mt][dt][3] = 0.f;
    m[mt][0] = m[mt][1] = -INFINITY;
    l[mt][0] = l[mt][1] = 0.f;
  }
  std::uint32_t qa[QREG ? 2 : 1][QREG ? D / 16 : 1][4];
  const std::uint16_t* const qw = sQ + (warp * 32) * LD;
  auto q_frag = [&](std::uint32_t (&a)[4], int mt, int kk) {
    ldmatrix_x4(a, smem_addr(qw + (mt * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * LD + kk * 16 + (lane >> 4) * 8));
  };

  load_tile(0, 0);
  cp_async_commit();
  for (int j = 0; j < n_tiles; ++j) {
    const int stage = j & 1;
    if (j + 1 < n_tiles) load_tile(j + 1, stage ^ 1);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    if constexpr (QREG) {
      if (j == 0) {
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
          for (int kk = 0; kk < D / 16; ++kk) q_frag(qa[mt][kk], mt, kk);
        }
      }
    }
    if (j * BN <= w_max_pos) {  // some row of this warp sees a token of this tile
      const std::uint16_t* const ks_ = sK + stage * BN * LD;
      const std::uint16_t* const vs_ = sV + stage * BN * LD;
      float s[2][BN / 8][4];
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
        for (int nt = 0; nt < BN / 8; ++nt) s[mt][nt][0] = s[mt][nt][1] = s[mt][nt][2] = s[mt][nt][3] = 0.f;
      }
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        std::uint32_t a[2][4];
        if constexpr (QREG) {
#pragma unroll
          for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
            for (int x = 0; x < 4; ++x) a[mt][x] = qa[mt][kk][x];
          }
        } else {
          q_frag(a[0], 0, kk);
          q_frag(a[1], 1, kk);
        }
#pragma unroll
        for (int np = 0; np < BN / 16; ++np) {
          std::uint32_t kf[4];
          ldmatrix_x4(kf, smem_addr(ks_ + (np * 16 + (lane & 7) + (lane >> 4) * 8) * LD + kk * 16 + ((lane >> 3) & 1) * 8));
#pragma unroll
          for (int mt = 0; mt < 2; ++mt) {
            mma_16816<T>(s[mt][2 * np], a[mt], kf[0], kf[1]);
            mma_16816<T>(s[mt][2 * np + 1], a[mt], kf[2], kf[3]);
          }
        }
      }
      const bool masked = (j + 1) * BN - 1 > w_min_pos;  // some row of the warp ends inside the tile
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
        for (int nt = 0; nt < BN / 8; ++nt) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            float x = s[mt][nt][e] * p.scale_log2;
            if (masked && j * BN + nt * 8 + 2 * (lane & 3) + (e & 1) > my_pos[mt][e >> 1]) x = -INFINITY;
            s[mt][nt][e] = x;
          }
        }
      }
      std::uint32_t pa[2][BN / 16][4];
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          float mx = -INFINITY;
#pragma unroll
          for (int nt = 0; nt < BN / 8; ++nt) mx = fmaxf(mx, fmaxf(s[mt][nt][2 * h], s[mt][nt][2 * h + 1]));
          mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
          mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
          const float m_new = fmaxf(m[mt][h], mx);
          const float base = m_new == -INFINITY ? 0.f : m_new;
          const float corr = fast_exp2(m[mt][h] - base);
          m[mt][h] = m_new;
          float rs = 0.f;
#pragma unroll
          for (int kt = 0; kt < BN / 16; ++kt) {
            const std::uint32_t p0 =
                pack2<T>(fast_exp2(s[mt][2 * kt][2 * h] - base), fast_exp2(s[mt][2 * kt][2 * h + 1] - base));
            const std::uint32_t p1 =
                pack2<T>(fast_exp2(s[mt][2 * kt + 1][2 * h] - base), fast_exp2(s[mt][2 * kt + 1][2 * h + 1] - base));
            pa[mt][kt][h] = p0;
            pa[mt][kt][2 + h] = p1;
            const float2 f0 = unpack2<T>(p0), f1 = unpack2<T>(p1);
            rs += (f0.x + f0.y) + (f1.x + f1.y);
          }
          l[mt][h] = l[mt][h] * corr + rs;
#pragma unroll
          for (int dt = 0; dt < D / 8; ++dt) {
            o[mt][dt][2 * h] *= corr;
            o[mt][dt][2 * h + 1] *= corr;
          }
        }
      }
#pragma unroll
      for (int kt = 0; kt < BN / 16; ++kt) {
#pragma unroll
        for (int dp = 0; dp < D / 16; ++dp) {
          std::uint32_t vf[4];
          ldmatrix_x4_trans(vf, smem_addr(vs_ + (kt * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * LD + dp * 16 + (lane >> 4) * 8));
#pragma unroll
          for (int mt = 0; mt < 2; ++mt) {
            mma_16816<T>(o[mt][2 * dp], pa[mt][kt], vf[0], vf[1]);
            mma_16816<T>(o[mt][2 * dp + 1], pa[mt][kt], vf[2], vf[3]);
          }
        }
      }
    }
    __syncthreads();  // every warp is done with this stage before it is refilled
  }

#pragma unroll
  for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int pr = wr0 + mt * 16 + (lane >> 2) + h * 8;
      float lt = l[mt][h];
      lt += __shfl_xor_sync(0xffffffffu, lt, 1);
      lt += __shfl_xor_sync(0xffffffffu, lt, 2);
      if (pr >= R) continue;
      const float inv = 1.f / lt;
      const int i = pr / g, jh = pr - i * g;
      T* const dst = p.out + ((static_cast<std::size_t>(sr.first) + i) * p.q_heads + hk * g + jh) * D;
#pragma unroll
      for (int dt = 0; dt < D / 8; ++dt) {
        *reinterpret_cast<std::uint32_t*>(dst + dt * 8 + 2 * (lane & 3)) =
            pack2<T>(o[mt][dt][2 * h] * inv, o[mt][dt][2 * h + 1] * inv);
      }
    }
  }
}

template <class T, int D, class View>
void launch_prefill_mma(const prefill_params<T, View>& p, cudaStream_t stream) {
  const long long packed = static_cast<long long>(p.ab.max_rows) * p.group;
  const dim3 grid(static_cast<unsigned>(p.ab.batch), static_cast<unsigned>(p.kv.kv_heads),
                  static_cast<unsigned>((packed + prefill_bm - 1) / prefill_bm));
  constexpr std::size_t smem = prefill_smem_bytes<D>();
  const auto kernel = prefill_kernel<T, D, View>;
  MLKV_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  launch_pdl(kernel, grid, dim3(prefill_threads), smem, stream, /*programmatic=*/false, p);
}

}  // namespace detail

/// Causal attention of chunks of query rows: row i of sequence b sits at position
/// context[b] - rows(b) + i and attends over tokens 0 .. that position of its cache slot (the
/// chunk's own K/V must have been appended first, as on the CPU).
///   kv:     the layer's owner slot (contiguous or paged), device memory
///   q, out: [ab.total_rows, q_heads, head_dim], storage type, 16-byte aligned
///   ab:     attention_batch::chunks(...) (or ::decode); max_rows bounds every rows(b) and sizes
///           the grid. Sequences with no rows are skipped; a sequence whose lengths are out of
///           range gets NaN rows (when its offsets are valid) and is never read past its capacity.
/// Stream-ordered, allocation-free and synchronisation-free: capturable in a CUDA graph.
template <class View>
void prefill_attention(const View& kv, int q_heads, const typename View::value_type* q,
                       typename View::value_type* out, const attention_batch& ab, float scale,
                       cudaStream_t stream) {
  using T = typename View::value_type;
  static_assert(is_cuda_storage_v<T>, "mlkv: CUDA caches store mlkv::f16 or mlkv::bf16");
  detail::check_prefill_args(kv, q_heads, q, out, ab, scale);
  if (ab.batch == 0 || ab.max_rows == 0 || ab.total_rows == 0) return;
  detail::prefill_params<T, View> p{};
  p.kv = kv;
  p.q = q;
  p.out = out;
  p.ab = ab;
  p.q_heads = q_heads;
  p.group = q_heads / kv.kv_heads;
  p.scale_log2 = scale * 1.4426950408889634f;
  detail::with_head_dim(kv.head_dim, [&](auto d) {
    constexpr int D = decltype(d)::value;
    if constexpr (D == 64 || D == 128) {
      if (detail::prefill_sm90_available(D)) {
        detail::launch_prefill_sm90<T, D>(p, stream);
        return;
      }
    }
    detail::launch_prefill_mma<T, D>(p, stream);
  });
}

}  // namespace mlkv::cuda
