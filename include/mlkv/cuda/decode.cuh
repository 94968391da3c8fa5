#pragma once
/// \file cuda/decode.cuh
/// Decode attention on the GPU: one query row per sequence over its cached tokens, for a batch of
/// sequences of their own lengths, over a contiguous or paged slot view.
///
/// Memory-bound design (the KV read is the whole cost):
///  - every query head of a KV head is packed into one tile (Hq/Hkv rows, padded to 16 or 32), so
///    K and V are read once for the whole group, on the tensor cores (mma.sync m16n8k16, f32
///    accumulators); a group above 32 heads is cut into blocks of 32;
///  - long contexts are split across CTAs ("flash-decoding": Dao et al. 2023) and merged by
///    log-sum-exp inside the same kernel: the last CTA of each group of up to 16 splits to finish
///    (a threadfence and an atomic counter in the workspace) merges the group, and the last group
///    merger of a work item merges the groups, so a split call is one launch; each merging CTA
///    puts its counter back to zero, so the workspace stays reusable (and graph replays valid);
///    the split is chosen on the host from the batch, the group and the device, never from the
///    device-side lengths;
///  - K/V tiles stream through a multi-stage cp.async pipeline of 16-byte copies (L2 only),
///    refilled as soon as a stage is consumed, so every stage is in flight while a CTA waits.
/// Inside a CTA, each warp takes 16 tokens of every tile (16 x warps tokens), keeps its own online
/// softmax (Milakov & Gimelshein 2018), and the warps merge pairwise through shared memory at the
/// end. The warps and stages per CTA are a compile-time config (decode_cfg).

#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "common.cuh"

namespace mlkv::cuda {
namespace detail {

inline constexpr int decode_max_splits = 256;
/// Splits merged together by the last CTA of their group; the group mergers of a work item are
/// merged by the last of them (at most decode_max_splits / decode_merge_group groups).
inline constexpr int decode_merge_group = 16;
/// The workspace starts with this many merge counters whenever a call splits, whatever its plan,
/// so that no call's partials ever overlap another call's counters: a workspace zero-filled once
/// stays valid for calls of any shape. A plan that would need more counters does not split (the
/// split rule splits only when work items are fewer than the SMs, far below this).
inline constexpr int decode_counter_slots = 4096;
static_assert(decode_max_splits <= decode_merge_group * decode_merge_group, "mlkv: two merge levels must suffice");

/// A decode kernel shape: warps per CTA (each takes 16 tokens of a tile), pipeline stages, and
/// the pipeline's schedule and cache hint (bit 0: refill a stage as soon as every warp is done
/// with it, so all `Stages` tiles are in flight while a CTA waits, at the cost of a second
/// __syncthreads per tile; without it a stage is refilled one tile later and Stages - 1 are in
/// flight; bit 2: L2::256B prefetch hint on the K/V copies). An L2 evict-first policy on the
/// copies (cp.async ... L2::cache_hint) is not offered: ptxas 13.0 encoded some of those copies
/// with a descriptor that faults (illegal instruction; bench/cuda/NOTES.md, v5).
template <int Warps, int Stages, int Flags = 1>
struct decode_cfg {
  static constexpr int warps = Warps, stages = Stages, threads = 32 * Warps, tile = 16 * Warps, flags = Flags;
  static constexpr bool early_refill = (Flags & 1) != 0, prefetch256 = (Flags & 4) != 0;
};
/// The default shape per head dim (bench/cuda sweep, NOTES.md v3): head dim 64, 8 warps x 2 stages
/// of 128 tokens (74 KB, three CTAs per SM); larger head dims, 4 warps x 3-4 stages of 64 tokens.
template <int D>
using decode_default_cfg = std::conditional_t<D <= 64, decode_cfg<8, 2>, decode_cfg<4, D <= 96 ? 4 : 3>>;

template <int D, int MT, class Cfg>
__host__ __device__ constexpr std::size_t decode_smem_bytes() {
  constexpr int LD = D + 8;  // padded rows: ldmatrix reads 8 rows without bank conflicts
  return (static_cast<std::size_t>(16 * MT) * LD + 2u * Cfg::stages * Cfg::tile * LD) * 2u;
}

/// Benchmarking knobs (bench/cuda only): force the number of splits (0: the plan's), the split
/// rule's CTAs per SM (0: 2) and fewest tiles per split (0: 2); programmatic dependent launch is
/// pdl_enabled in common.cuh.
inline std::atomic<int> decode_force_splits{0};
inline std::atomic<int> decode_ctas_per_sm{0};
inline std::atomic<int> decode_min_tiles{0};

template <class T, class View>
struct decode_params {
  View kv;
  const T* q;                   // [batch, q_heads, head_dim]
  T* out;                       // [batch, q_heads, head_dim]
  const std::int32_t* context;  // [batch]
  int q_heads;
  int group;        // query heads per KV head
  int head_blocks;  // blocks of 16*MT heads per KV head
  int chunk;        // tokens per split (multiple of the tile)
  int max_splits;   // splits per (sequence, KV head, head block)
  int max_groups;   // merge groups per work item: ceil(max_splits / decode_merge_group)
  float scale_log2; // softmax scale * log2(e)
  int* counters;    // [items, 1 + max_groups] of decode_counter_slots: arrivals (level 2, then one per
                    // group); zero between calls
  float* part_o;    // [items, max_splits, 16*MT, head_dim]: each split's normalised output
  float* part_lse;  // [items, max_splits, 16*MT]: each split's log2-sum-exp2
  float* group_o;   // [items, max_groups, 16*MT, head_dim]: each merge group's output (max_groups > 1)
  float* group_lse; // [items, max_groups, 16*MT]
};

template <class T, class View>
__device__ __forceinline__ bool decode_bad_context(const decode_params<T, View>& p, int b, int ctx) {
  return ctx < 1 || ctx > device_capacity(p.kv, b) || ctx > p.chunk * p.max_splits;
}

/// cp_async_16 with the decode config's L2 prefetch hint.
template <class Cfg>
__device__ __forceinline__ void cp_async_16_kv(std::uint32_t dst, const void* src, bool valid) {
  if constexpr (Cfg::prefetch256) {
    asm volatile("cp.async.cg.shared.global.L2::256B [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0)
                 : "memory");
  } else {
    cp_async_16(dst, src, valid);
  }
}

/// Merges n <= decode_merge_group partial results (normalised rows and their log2-sum-exp2) of the
/// first nh rows: out = sum_j w_j O_j / sum_j w_j, w_j = 2^(lse_j - max). Written as T rows to
/// `out` (row stride D) or, when `out` is null, as another partial to dst_o / dst_lse. One thread
/// per (row, 4 columns); every load of a thread is issued before the first use. The sources were
/// written by other CTAs of this launch: read through L2 only (ld.global.cg).
template <class T, int D, int RB, int NT>
__device__ __forceinline__ void decode_merge(const float* src_o, const float* src_lse, int n, int nh, T* out,
                                             float* dst_o, float* dst_lse) {
  constexpr int C4 = D / 4, K = 8;  // partials loaded at a time (registers: the kernel keeps 3 CTAs per SM)
  for (int e = threadIdx.x; e < nh * C4; e += NT) {
    const int r = e / C4, c = e - r * C4;
    float mx = -INFINITY, sum = 0.f;
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int j0 = 0; j0 < n; j0 += K) {
      float ls[K];
      float4 x[K];
#pragma unroll
      for (int j = 0; j < K; ++j) {
        if (j0 + j < n) {
          ls[j] = __ldcg(src_lse + (j0 + j) * RB + r);
          x[j] = __ldcg(reinterpret_cast<const float4*>(src_o + (static_cast<std::size_t>(j0 + j) * RB + r) * D) + c);
        }
      }
      float m_new = mx;
#pragma unroll
      for (int j = 0; j < K; ++j) {
        if (j0 + j < n) m_new = fmaxf(m_new, ls[j]);
      }
      const float corr = fast_exp2(mx - m_new);  // 0 on the first chunk (mx = -inf)
      mx = m_new;
      sum *= corr;
      acc.x *= corr;
      acc.y *= corr;
      acc.z *= corr;
      acc.w *= corr;
#pragma unroll
      for (int j = 0; j < K; ++j) {
        if (j0 + j < n) {
          const float w = fast_exp2(ls[j] - mx);
          sum += w;
          acc.x += w * x[j].x;
          acc.y += w * x[j].y;
          acc.z += w * x[j].z;
          acc.w += w * x[j].w;
        }
      }
    }
    const float inv = 1.f / sum;  // sum >= 1: the largest weight is exactly 1
    if (out != nullptr) {
      uint2 v;
      v.x = pack2<T>(acc.x * inv, acc.y * inv);
      v.y = pack2<T>(acc.z * inv, acc.w * inv);
      *(reinterpret_cast<uint2*>(out + static_cast<std::size_t>(r) * D) + c) = v;
    } else {
      __stcg(reinterpret_cast<float4*>(dst_o + static_cast<std::size_t>(r) * D) + c,
             make_float4(acc.x * inv, acc.y * inv, acc.z * inv, acc.w * inv));
      if (c == 0) __stcg(dst_lse + r, mx + __log2f(sum));
    }
  }
}

/// Arrival at a merge counter, by the whole CTA after its partial results are written: returns
/// true (in every thread) for the last of `members` arrivals, which puts the counter back to zero.
/// The fences make the partials of every earlier arrival visible to the last one (the CUDA
/// programming guide's threadfence reduction).
__device__ __forceinline__ bool decode_arrive(int* counter, int members, int* s_flag) {
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    const int prev = atomicAdd(counter, 1);
    const bool last = prev == members - 1;
    if (last) atomicExch(counter, 0);
    *s_flag = last ? 1 : 0;
  }
  __syncthreads();
  const bool last = *s_flag != 0;
  if (last) __threadfence();
  return last;
}

/// One CTA per (split, KV head x head block, sequence); the splits of a work item are merged by
/// the last CTAs to finish (decode_merge).
/// Resident CTAs per SM that a kernel shape's shared memory allows (227 KB per SM, 1 KB reserved
/// per CTA); the kernel's registers are bounded so that they never allow fewer.
template <int D, int MT, class Cfg>
constexpr int decode_min_ctas() {
  const int n = static_cast<int>((227u * 1024u) / (decode_smem_bytes<D, MT, Cfg>() + 1024u + 16u));
  const int by_threads = 2048 / Cfg::threads;
  return n < 1 ? 1 : (n < by_threads ? n : by_threads);
}

template <class T, int D, int MT, class Cfg, class View>
__global__ void __launch_bounds__(Cfg::threads, decode_min_ctas<D, MT, Cfg>()) decode_split_kernel(const decode_params<T, View> p) {
  constexpr int RB = 16 * MT, N = Cfg::tile, LD = D + 8, ST = Cfg::stages, CH = D / 8, NT = Cfg::threads;
  constexpr int W = Cfg::warps;
  static_assert(W == 1 || W == 2 || W == 4 || W == 8, "mlkv: decode warps must be 1, 2, 4 or 8");
  static_assert(ST >= 2, "mlkv: decode needs at least two pipeline stages");
  static_assert((W / 2) * RB * (D + 2) * 4 <= 2 * ST * N * LD * 2, "mlkv: the warp merge must fit the pipeline");
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ int s_flag;
  std::uint16_t* const sQ = reinterpret_cast<std::uint16_t*>(smem);  // [RB][LD]
  std::uint16_t* const sK = sQ + RB * LD;                            // [ST][N][LD]
  std::uint16_t* const sV = sK + ST * N * LD;                        // [ST][N][LD]

  pdl_wait();  // launched early (programmatic dependent launch): the previous kernel's writes first
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int b = blockIdx.z, hk = blockIdx.y / p.head_blocks, hb = blockIdx.y - hk * p.head_blocks;
  const int split = blockIdx.x;
  const int head0 = hk * p.group + hb * RB;
  const int nh = min(RB, p.group - hb * RB);
  const int ctx = p.context[b];
  if (decode_bad_context(p, b, ctx)) {
    // Out-of-range length: this sequence's rows become NaN, nothing is read.
    if (split == 0) {
      uint4* o = reinterpret_cast<uint4*>(p.out + (static_cast<std::size_t>(b) * p.q_heads + head0) * D);
      for (int e = tid; e < nh * CH; e += NT) o[e] = nan_vec<T>();
    }
    return;
  }
  const int t0 = split * p.chunk;
  if (t0 >= ctx) return;
  const int t1 = min(ctx, t0 + p.chunk);
  const int nsplit = (ctx + p.chunk - 1) / p.chunk;
  const int ntiles = (t1 - t0 + N - 1) / N;

  // Q rows of this head block (zero rows past the group).
  {
    const T* qb = p.q + (static_cast<std::size_t>(b) * p.q_heads + head0) * D;
    for (int e = tid; e < RB * CH; e += NT) {
      const int r = e / CH, c = e - r * CH;
      cp_async_16(smem_addr(sQ + r * LD + c * 8), qb + (r < nh ? r : 0) * D + c * 8, r < nh);
    }
  }
  const T* const kb = kbase(p.kv);
  const T* const vb = vbase(p.kv);
  auto load_tile = [&](int tile, int stage) {
    const int base = t0 + tile * N;
#pragma unroll
    for (int it = 0; it < N * CH / NT; ++it) {
      const int e = tid + it * NT;
      const int r = e / CH, c = e - r * CH;
      const int tok = base + r;
      const bool ok = tok < t1;
      const std::size_t off = p.kv.offset(b, hk, ok ? tok : t0) + static_cast<std::size_t>(c * 8);
      cp_async_16_kv<Cfg>(smem_addr(sK + (stage * N + r) * LD + c * 8), kb + off, ok);
      cp_async_16_kv<Cfg>(smem_addr(sV + (stage * N + r) * LD + c * 8), vb + off, ok);
    }
  };
  // Early refill: all ST stages are loaded up front and tile t + ST goes into tile t's stage as
  // soon as every warp is done with it. Otherwise ST - 1 up front, and tile t + ST - 1 goes into
  // tile t - 1's stage at the start of tile t.
  constexpr int PRE = Cfg::early_refill ? ST : ST - 1;
#pragma unroll
  for (int s = 0; s < PRE; ++s) {
    if (s < ntiles) load_tile(s, s);
    cp_async_commit();  // the first group carries Q too
  }
  cp_async_wait<PRE - 1>();
  __syncthreads();

  std::uint32_t qa[MT][D / 16][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks) {
      ldmatrix_x4(qa[mt][ks],
                  smem_addr(sQ + (mt * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * LD + ks * 16 + (lane >> 4) * 8));
    }
  }

  float o[MT][D / 8][4];
  float m[MT][2], l[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt) o[mt][dt][0] = o[mt][dt][1] = o[mt][dt][2] = o[mt][dt][3] = 0.f;
    m[mt][0] = m[mt][1] = -INFINITY;
    l[mt][0] = l[mt][1] = 0.f;
  }

  for (int tile = 0; tile < ntiles; ++tile) {
    const int stage = tile % ST;
    if (tile > 0) {
      cp_async_wait<PRE - 1>();
      __syncthreads();  // tile's data visible (and, without early refill, every warp is done with tile - 1's stage)
    }
    if constexpr (!Cfg::early_refill) {
      const int next = tile + ST - 1;
      if (next < ntiles) load_tile(next, next % ST);
      cp_async_commit();
    }
    const std::uint16_t* ks_ = sK + (stage * N + warp * 16) * LD;
    const std::uint16_t* vs_ = sV + (stage * N + warp * 16) * LD;

    // S = Q K^T for this warp's 16 tokens: [RB x 16] in MT x 2 accumulator tiles.
    float s[MT][2][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) s[mt][nt][0] = s[mt][nt][1] = s[mt][nt][2] = s[mt][nt][3] = 0.f;
    }
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      std::uint32_t kf[4];
      ldmatrix_x4(kf, smem_addr(ks_ + ((lane & 7) + (lane >> 4) * 8) * LD + kk * 16 + ((lane >> 3) & 1) * 8));
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        mma_16816<T>(s[mt][0], qa[mt][kk], kf[0], kf[1]);
        mma_16816<T>(s[mt][1], qa[mt][kk], kf[2], kf[3]);
      }
    }
    // Scale into the log2 domain; mask tokens past this split's end (last tile only).
    const bool tail = t0 + (tile + 1) * N > t1;
    const int tok0 = t0 + tile * N + warp * 16 + 2 * (lane & 3);
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          float x = s[mt][nt][e] * p.scale_log2;
          if (tail && tok0 + nt * 8 + (e & 1) >= t1) x = -INFINITY;
          s[mt][nt][e] = x;
        }
      }
    }
    // Online softmax per row; P rounded to T, and l summed from the rounded P so that the
    // weights used for V sum exactly to the normaliser.
    std::uint32_t pa[MT][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        float mx = fmaxf(fmaxf(s[mt][0][2 * h], s[mt][0][2 * h + 1]), fmaxf(s[mt][1][2 * h], s[mt][1][2 * h + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float m_new = fmaxf(m[mt][h], mx);
        const float base = m_new == -INFINITY ? 0.f : m_new;
        const float corr = fast_exp2(m[mt][h] - base);
        m[mt][h] = m_new;
        const std::uint32_t p0 = pack2<T>(fast_exp2(s[mt][0][2 * h] - base), fast_exp2(s[mt][0][2 * h + 1] - base));
        const std::uint32_t p1 = pack2<T>(fast_exp2(s[mt][1][2 * h] - base), fast_exp2(s[mt][1][2 * h + 1] - base));
        pa[mt][h] = p0;      // a0 (row lane/4) / a1 (row lane/4 + 8): tokens 2t, 2t+1
        pa[mt][2 + h] = p1;  // a2 / a3: tokens 8 + 2t, 8 + 2t + 1
        const float2 r0 = unpack2<T>(p0), r1 = unpack2<T>(p1);
        l[mt][h] = l[mt][h] * corr + ((r0.x + r0.y) + (r1.x + r1.y));
#pragma unroll
        for (int dt = 0; dt < D / 8; ++dt) {
          o[mt][dt][2 * h] *= corr;
          o[mt][dt][2 * h + 1] *= corr;
        }
      }
    }
    // O += P V for this warp's 16 tokens.
#pragma unroll
    for (int dp = 0; dp < D / 16; ++dp) {
      std::uint32_t vf[4];
      ldmatrix_x4_trans(vf, smem_addr(vs_ + ((lane & 7) + ((lane >> 3) & 1) * 8) * LD + dp * 16 + (lane >> 4) * 8));
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        mma_16816<T>(o[mt][2 * dp], pa[mt], vf[0], vf[1]);
        mma_16816<T>(o[mt][2 * dp + 1], pa[mt], vf[2], vf[3]);
      }
    }
    if constexpr (Cfg::early_refill) {
      const int next = tile + ST;
      if (next < ntiles) {
        __syncthreads();  // every warp is done with this stage
        load_tile(next, stage);
      }
      cp_async_commit();
    }
  }
  cp_async_wait<0>();

  // Row sums over the quad (the 4 lanes that share a row).
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      l[mt][h] += __shfl_xor_sync(0xffffffffu, l[mt][h], 1);
      l[mt][h] += __shfl_xor_sync(0xffffffffu, l[mt][h], 2);
    }
  }
  // Merge the warps pairwise through the pipeline's shared memory (free now): log2(W) rounds.
  float* const s_o = reinterpret_cast<float*>(sK);  // [W/2][RB][D]
  float* const s_ml = s_o + (W / 2) * RB * D;       // [W/2][RB][2]
#pragma unroll
  for (int active = W / 2; active >= 1; active /= 2) {
    __syncthreads();  // the previous round's (or the pipeline's) reads are done
    if (warp >= active && warp < 2 * active) {
      const int slot = warp - active;
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int row = mt * 16 + (lane >> 2) + h * 8;
          if ((lane & 3) == 0) {
            s_ml[(slot * RB + row) * 2] = m[mt][h];
            s_ml[(slot * RB + row) * 2 + 1] = l[mt][h];
          }
#pragma unroll
          for (int dt = 0; dt < D / 8; ++dt) {
            *reinterpret_cast<float2*>(s_o + (slot * RB + row) * D + dt * 8 + 2 * (lane & 3)) =
                make_float2(o[mt][dt][2 * h], o[mt][dt][2 * h + 1]);
          }
        }
      }
    }
    __syncthreads();
    if (warp < active) {
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int row = mt * 16 + (lane >> 2) + h * 8;
          const float pm = s_ml[(warp * RB + row) * 2], pl = s_ml[(warp * RB + row) * 2 + 1];
          const float mm = fmaxf(m[mt][h], pm);
          const float fa = m[mt][h] == -INFINITY ? 0.f : fast_exp2(m[mt][h] - mm);
          const float fb = pm == -INFINITY ? 0.f : fast_exp2(pm - mm);
          m[mt][h] = mm;
          l[mt][h] = l[mt][h] * fa + pl * fb;
#pragma unroll
          for (int dt = 0; dt < D / 8; ++dt) {
            const float2 x = *reinterpret_cast<const float2*>(s_o + (warp * RB + row) * D + dt * 8 + 2 * (lane & 3));
            o[mt][dt][2 * h] = o[mt][dt][2 * h] * fa + x.x * fb;
            o[mt][dt][2 * h + 1] = o[mt][dt][2 * h + 1] * fa + x.y * fb;
          }
        }
      }
    }
  }
  const std::size_t item = static_cast<std::size_t>(b) * gridDim.y + blockIdx.y;
  const std::size_t slot0 = item * static_cast<std::size_t>(p.max_splits);
  T* const out_rows = p.out + (static_cast<std::size_t>(b) * p.q_heads + head0) * D;
  if (warp == 0) {
    const std::size_t slot = slot0 + static_cast<std::size_t>(split);
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int row = mt * 16 + (lane >> 2) + h * 8;
        if (row >= nh) continue;
        const float inv = 1.f / l[mt][h];  // l >= 1: the row's maximum weighs exactly 1
        if (nsplit == 1) {
          T* dst = out_rows + static_cast<std::size_t>(row) * D + 2 * (lane & 3);
#pragma unroll
          for (int dt = 0; dt < D / 8; ++dt) {
            *reinterpret_cast<std::uint32_t*>(dst + dt * 8) = pack2<T>(o[mt][dt][2 * h] * inv, o[mt][dt][2 * h + 1] * inv);
          }
        } else {
          float* dst = p.part_o + (slot * RB + row) * D + 2 * (lane & 3);
#pragma unroll
          for (int dt = 0; dt < D / 8; ++dt) {
            __stcg(reinterpret_cast<float2*>(dst + dt * 8), make_float2(o[mt][dt][2 * h] * inv, o[mt][dt][2 * h + 1] * inv));
          }
          if ((lane & 3) == 0) __stcg(p.part_lse + slot * RB + row, m[mt][h] + __log2f(l[mt][h]));
        }
      }
    }
  }
  if (nsplit > 1) {
    // Level 1: the last CTA of this split's group merges the group; level 2 (more than one
    // group): the last group merger merges the groups.
    constexpr int G = decode_merge_group;
    const int g = split / G, ngroups = (nsplit + G - 1) / G;
    int* const cnt = p.counters + item * static_cast<std::size_t>(1 + p.max_groups);
    if (decode_arrive(cnt + 1 + g, min(G, nsplit - g * G), &s_flag)) {
      const std::size_t first = slot0 + static_cast<std::size_t>(g) * G;
      const int n = min(G, nsplit - g * G);
      if (ngroups == 1) {
        decode_merge<T, D, RB, NT>(p.part_o + first * RB * D, p.part_lse + first * RB, n, nh, out_rows, nullptr,
                                   nullptr);
      } else {
        const std::size_t gs = item * static_cast<std::size_t>(p.max_groups) + static_cast<std::size_t>(g);
        decode_merge<T, D, RB, NT>(p.part_o + first * RB * D, p.part_lse + first * RB, n, nh, nullptr,
                                   p.group_o + gs * RB * D, p.group_lse + gs * RB);
        if (decode_arrive(cnt, ngroups, &s_flag)) {
          const std::size_t g0 = item * static_cast<std::size_t>(p.max_groups);
          decode_merge<T, D, RB, NT>(p.group_o + g0 * RB * D, p.group_lse + g0 * RB, ngroups, nh, out_rows, nullptr,
                                     nullptr);
        }
      }
    }
  }
  pdl_launch_dependents();
}

/// The device's multiprocessors and the resident CTAs per multiprocessor of a kernel, computed
/// once per device (the first call should not be inside a stream capture, though the calls it
/// makes are legal there too).
struct kernel_occupancy {
  int sms = 0, ctas = 0;
};
template <class T, int D, int MT, class Cfg, class View>
kernel_occupancy decode_occupancy() {
  // Packed (sms << 16 | ctas), 0 until computed; atomics keep concurrent callers safe.
  static std::atomic<std::uint32_t> cache[16];
  int dev = 0;
  MLKV_CUDA_CHECK(cudaGetDevice(&dev));
  const bool cached = dev >= 0 && dev < 16;
  if (cached) {
    const std::uint32_t c = cache[dev].load(std::memory_order_relaxed);
    if (c != 0) return {static_cast<int>(c >> 16), static_cast<int>(c & 0xffffu)};
  }
  kernel_occupancy o;
  int cc = 0;
  device_info(o.sms, cc);
  const auto kernel = decode_split_kernel<T, D, MT, Cfg, View>;
  constexpr std::size_t smem = decode_smem_bytes<D, MT, Cfg>();
  MLKV_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  MLKV_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&o.ctas, kernel, Cfg::threads, smem));
  MLKV_CHECK(o.ctas >= 1, "decode kernel does not fit a multiprocessor (", smem, " bytes of shared memory)");
  if (cached) cache[dev].store(static_cast<std::uint32_t>(o.sms) << 16 | static_cast<std::uint32_t>(o.ctas), std::memory_order_relaxed);
  return o;
}

inline std::size_t round16(std::size_t n) { return (n + 15u) & ~static_cast<std::size_t>(15u); }

/// The launch shape of a decode call, a pure function of the host-side arguments and the device,
/// and the workspace layout: decode_counter_slots counters (zero between calls), then the split
/// partials and the group partials.
struct decode_plan {
  int head_blocks = 1;  // head blocks per KV head
  int chunk = 0;        // tokens per split
  int splits = 1;       // splits per (sequence, KV head, head block)
  int groups = 1;       // merge groups per work item
  std::size_t items = 0;
  std::size_t counter_bytes = 0, part_bytes = 0, part_lse_bytes = 0, group_bytes = 0, group_lse_bytes = 0;
  std::size_t workspace = 0;  // bytes
};

/// Chooses the split: about two CTAs per SM in all (floor(2 x SMs / work items)), at most
/// decode_max_splits splits and at least two tiles per split. bench/cuda's sweeps over forced
/// splits (NOTES.md, v3 and v5) found the best split of every measured shape near this rule.
template <class T, int D, int MT, class Cfg, class View>
decode_plan make_decode_plan(const View& kv, int q_heads, const attention_batch& ab) {
  decode_plan pl;
  const int group = q_heads / kv.kv_heads;
  pl.head_blocks = (group + 16 * MT - 1) / (16 * MT);
  pl.items = static_cast<std::size_t>(ab.batch) * static_cast<std::size_t>(kv.kv_heads) *
             static_cast<std::size_t>(pl.head_blocks);
  const int tiles = (ab.max_context + Cfg::tile - 1) / Cfg::tile;
  const kernel_occupancy occ = decode_occupancy<T, D, MT, Cfg, View>();
  const int per_sm = decode_ctas_per_sm.load(std::memory_order_relaxed) > 0 ? decode_ctas_per_sm.load() : 2;
  const int min_tiles = decode_min_tiles.load(std::memory_order_relaxed) > 0 ? decode_min_tiles.load() : 2;
  const std::size_t want =
      std::max<std::size_t>(1, static_cast<std::size_t>(per_sm) * static_cast<std::size_t>(occ.sms) / pl.items);
  int s = static_cast<int>(std::min<std::size_t>(want, decode_max_splits));
  s = std::min(s, std::max(1, tiles / min_tiles));
  const int forced = decode_force_splits.load(std::memory_order_relaxed);
  if (forced > 0) s = std::min(forced, std::min(tiles, decode_max_splits));
  int ct = (tiles + s - 1) / s;  // tiles per split
  pl.splits = (tiles + ct - 1) / ct;
  pl.groups = (pl.splits + decode_merge_group - 1) / decode_merge_group;
  if (pl.splits > 1 && pl.items * static_cast<std::size_t>(1 + pl.groups) > decode_counter_slots) {
    ct = tiles;  // more counters than the workspace holds: no split
    pl.splits = pl.groups = 1;
  }
  pl.chunk = ct * Cfg::tile;
  if (pl.splits > 1) {
    constexpr std::size_t RB = 16 * MT;
    pl.counter_bytes = decode_counter_slots * sizeof(int);
    const std::size_t part = pl.items * static_cast<std::size_t>(pl.splits) * RB;
    pl.part_bytes = part * static_cast<std::size_t>(D) * sizeof(float);
    pl.part_lse_bytes = round16(part * sizeof(float));
    if (pl.groups > 1) {
      const std::size_t gp = pl.items * static_cast<std::size_t>(pl.groups) * RB;
      pl.group_bytes = gp * static_cast<std::size_t>(D) * sizeof(float);
      pl.group_lse_bytes = round16(gp * sizeof(float));
    }
    pl.workspace = pl.counter_bytes + pl.part_bytes + pl.part_lse_bytes + pl.group_bytes + pl.group_lse_bytes;
  }
  return pl;
}

/// Calls f(D, MT) for the head dim and the tile rows (16 or 32 query heads per CTA) of a call.
template <class View, class F>
decltype(auto) with_decode_config(const View& kv, int q_heads, F&& f) {
  const int group = q_heads / kv.kv_heads;
  return with_head_dim(kv.head_dim, [&](auto d) -> decltype(auto) {
    if (group <= 16) return f(d, std::integral_constant<int, 1>{});
    return f(d, std::integral_constant<int, 2>{});
  });
}

template <class View>
void check_decode_args(const View& kv, int q_heads, const typename View::value_type* q,
                       const typename View::value_type* out, const attention_batch& ab, float scale) {
  check_attention_args(kv, q_heads, q, out, ab, scale);
  MLKV_CHECK(ab.q_offsets == nullptr, "decode takes one query row per sequence (q_offsets must be null); "
                                      "use prefill_attention for chunks of rows");
  MLKV_CHECK(ab.batch <= 65535, "decode batch (", ab.batch, ") must be at most 65535");
  const long long hb = (q_heads / kv.kv_heads + 31) / 32;
  MLKV_CHECK(static_cast<long long>(kv.kv_heads) * hb <= 65535, "KV heads x head blocks (", kv.kv_heads * hb,
             ") must be at most 65535");
}

template <class View>
void check_workspace_args(const View& kv, int q_heads, const attention_batch& ab) {
  check_view(kv);
  MLKV_CHECK(q_heads >= 1 && kv.kv_heads >= 1 && q_heads % kv.kv_heads == 0, "query heads (", q_heads,
             ") must be a positive multiple of KV heads (", kv.kv_heads, ")");
  MLKV_CHECK(ab.max_context >= 1 && ab.max_context <= host_capacity(kv), "max context (", ab.max_context,
             ") must be in [1, ", host_capacity(kv), "] (the view's capacity)");
}

/// Plans and launches one decode call with kernel shape Cfg (decode_attention uses the default).
template <class T, int D, int MT, class Cfg, class View>
void decode_launch(const View& kv, int q_heads, const T* q, T* out, const attention_batch& ab, float scale,
                   void* workspace, std::size_t workspace_bytes, cudaStream_t stream) {
  const decode_plan pl = make_decode_plan<T, D, MT, Cfg>(kv, q_heads, ab);
  MLKV_CHECK(workspace_bytes >= pl.workspace, "decode workspace holds ", workspace_bytes, " bytes; this call needs ",
             pl.workspace, " (decode_workspace_bytes)");
  MLKV_CHECK(pl.workspace == 0 || (workspace != nullptr && aligned16(workspace)),
             "decode workspace must be a 16-byte aligned device pointer");
  MLKV_CHECK(pl.items <= static_cast<std::size_t>(INT_MAX), "decode batch x heads too large");
  decode_params<T, View> p{};
  p.kv = kv;
  p.q = q;
  p.out = out;
  p.context = ab.context;
  p.q_heads = q_heads;
  p.group = q_heads / kv.kv_heads;
  p.head_blocks = pl.head_blocks;
  p.chunk = pl.chunk;
  p.max_splits = pl.splits;
  p.max_groups = pl.groups;
  p.scale_log2 = scale * 1.4426950408889634f;
  if (pl.workspace != 0) {
    unsigned char* w = static_cast<unsigned char*>(workspace);
    p.counters = reinterpret_cast<int*>(w);
    w += pl.counter_bytes;
    p.part_o = reinterpret_cast<float*>(w);
    w += pl.part_bytes;
    p.part_lse = reinterpret_cast<float*>(w);
    w += pl.part_lse_bytes;
    p.group_o = pl.group_bytes != 0 ? reinterpret_cast<float*>(w) : nullptr;
    w += pl.group_bytes;
    p.group_lse = pl.group_lse_bytes != 0 ? reinterpret_cast<float*>(w) : nullptr;
  }
  // Launched plainly: launched early (programmatic dependent launch), its CTAs were placed
  // wherever the previous kernel left room and packed onto few SMs (NOTES.md, v3).
  launch_pdl(decode_split_kernel<T, D, MT, Cfg, View>,
             dim3(static_cast<unsigned>(pl.splits), static_cast<unsigned>(kv.kv_heads * pl.head_blocks),
                  static_cast<unsigned>(ab.batch)),
             dim3(Cfg::threads), decode_smem_bytes<D, MT, Cfg>(), stream, /*programmatic=*/false, p);
}

}  // namespace detail

/// Bytes of device workspace decode_attention needs for these arguments on the current device
/// (0 when it needs none). Zero-fill the workspace once before its first decode call
/// (cudaMemset(ws, 0, bytes)): it holds the split merge's arrival counters, which every call
/// leaves at zero again, so no call needs a memset of its own. A workspace sized for a larger
/// call serves every smaller one.
template <class View>
std::size_t decode_workspace_bytes(const View& kv, int q_heads, const attention_batch& ab) {
  using T = typename View::value_type;
  static_assert(is_cuda_storage_v<T>, "mlkv: CUDA caches store mlkv::f16 or mlkv::bf16");
  detail::check_workspace_args(kv, q_heads, ab);
  if (ab.batch <= 0) return 0;
  return detail::with_decode_config(kv, q_heads, [&](auto d, auto mt) {
    constexpr int D = decltype(d)::value;
    return detail::make_decode_plan<T, D, decltype(mt)::value, detail::decode_default_cfg<D>>(kv, q_heads, ab)
        .workspace;
  });
}

/// Decode attention: out[b, h] = softmax(scale * q[b, h] . K[b, kvh, 0..ctx)) V, one query row per
/// sequence, ctx = context[b] (the new token included), kvh = h / (q_heads / kv_heads).
///   kv:        the layer's owner slot (contiguous or paged), device memory
///   q, out:    [ab.batch, q_heads, head_dim], storage type, 16-byte aligned
///   ab:        attention_batch::decode(batch, context, max_context); max_context bounds every
///              context[b] and sizes the split (a longer context gives NaN rows, never a bad read)
///   workspace: decode_workspace_bytes(kv, q_heads, ab) bytes of device memory (may be null when 0),
///              zero-filled once before its first use; one call at a time per workspace
/// Stream-ordered, allocation-free and synchronisation-free: capturable in a CUDA graph.
template <class View>
void decode_attention(const View& kv, int q_heads, const typename View::value_type* q,
                      typename View::value_type* out, const attention_batch& ab, float scale, void* workspace,
                      std::size_t workspace_bytes, cudaStream_t stream) {
  using T = typename View::value_type;
  static_assert(is_cuda_storage_v<T>, "mlkv: CUDA caches store mlkv::f16 or mlkv::bf16");
  detail::check_decode_args(kv, q_heads, q, out, ab, scale);
  if (ab.batch == 0) return;
  detail::with_decode_config(kv, q_heads, [&](auto d, auto mt) {
    constexpr int D = decltype(d)::value;
    detail::decode_launch<T, D, decltype(mt)::value, detail::decode_default_cfg<D>>(kv, q_heads, q, out, ab, scale,
                                                                                   workspace, workspace_bytes, stream);
  });
}

}  // namespace mlkv::cuda
