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
///    log-sum-exp in a second small kernel, started early with programmatic dependent launch;
///    the split is chosen on the host from the batch, the group and the device, never from the
///    device-side lengths;
///  - K/V tiles stream through a multi-stage cp.async pipeline of 16-byte copies (L2 only), so
///    100+ KB per SM are in flight.
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
inline constexpr int combine_threads = 128;

/// A decode kernel shape: warps per CTA (each takes 16 tokens of a tile), pipeline stages, and
/// whether the K/V copies carry the L2::256B prefetch hint.
template <int Warps, int Stages, bool Prefetch256 = false>
struct decode_cfg {
  static constexpr int warps = Warps, stages = Stages, threads = 32 * Warps, tile = 16 * Warps;
  static constexpr bool prefetch256 = Prefetch256;
};

/// cp_async_16 with the decode config's L2 prefetch hint, and with `policy` (an L2 cache policy
/// from createpolicy) when `hinted` (a value uniform over the CTA).
template <class Cfg>
__device__ __forceinline__ void cp_async_16_kv(std::uint32_t dst, const void* src, bool valid, bool hinted = false,
                                               std::uint64_t policy = 0) {
  if (hinted) {
    if constexpr (Cfg::prefetch256) {
      asm volatile("cp.async.cg.shared.global.L2::cache_hint.L2::256B [%0], [%1], 16, %2, %3;\n" ::"r"(dst), "l"(src),
                   "r"(valid ? 16 : 0), "l"(policy)
                   : "memory");
    } else {
      asm volatile("cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2, %3;\n" ::"r"(dst), "l"(src),
                   "r"(valid ? 16 : 0), "l"(policy)
                   : "memory");
    }
  } else if constexpr (Cfg::prefetch256) {
    asm volatile("cp.async.cg.shared.global.L2::256B [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0)
                 : "memory");
  } else {
    cp_async_16(dst, src, valid);
  }
}

/// An L2 policy under which the lines a copy brings in are the first evicted (streamed K/V that
/// nothing reads again soon: the activations beside them stay in L2).
__device__ __forceinline__ std::uint64_t l2_evict_first_policy() {
  std::uint64_t pol = 0;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(pol));
#endif
  return pol;
}

/// The default shape per head dim (bench/cuda sweep, NOTES.md v3): head dim 64, 8 warps x 2 stages
/// of 128 tokens (74 KB, three CTAs per SM); larger head dims, 4 warps x 3-4 stages of 64 tokens.
/// The copies carry the L2::256B prefetch hint (NOTES.md v6: 0.7-1.7% faster on every large batch).
template <int D>
using decode_default_cfg =
    std::conditional_t<D <= 64, decode_cfg<8, 2, true>, decode_cfg<4, D <= 96 ? 4 : 3, true>>;

template <int D, int MT, class Cfg>
__host__ __device__ constexpr std::size_t decode_smem_bytes() {
  constexpr int LD = D + 8;  // padded rows: ldmatrix reads 8 rows without bank conflicts
  return (static_cast<std::size_t>(16 * MT) * LD + 2u * Cfg::stages * Cfg::tile * LD) * 2u;
}

/// Benchmarking knobs (bench/cuda only): force the number of splits (0: the plan's), and turn
/// programmatic dependent launch off (pdl_enabled in common.cuh).
inline std::atomic<int> decode_force_splits{0};
/// Benchmarking knob (bench/cuda only): 0 turns off the early start of contiguous views' split
/// kernels (programmatic launch and the L2 prefetch of their first tiles before the wait).
inline std::atomic<int> decode_early_start{1};

/// How a decode call streams its K/V (the CUDA model's choice, NOTES.md v7 of bench/cuda_model):
/// `evict_first` gives the K/V copies an L2 evict-first policy, so that K/V read once leaves the
/// L2 to the activations and weights of the step around the kernel.
struct decode_walk {
  int evict_first = 0;
};

/// Fused Q/K/V split of the CUDA model's decode steps (decode_attention_qkv): the kernel takes its
/// query rows from the f32 Q/K/V projection of the new tokens (bias added, rotary applied at
/// position context - 1, rounded to the storage type: the arithmetic of the model's split kernel),
/// and on an owner layer the new token's K (rotated) and V too, which the CTA holding that token
/// writes into the slot (head block 0) and into its own tile.
struct decode_fused_qkv {
  const float* qkv = nullptr;   // [batch, qkv_ld]: Q (q_heads x head_dim), then K and V (kv_heads x head_dim each)
  const float* bias = nullptr;  // [q_dim (+ 2 kv_heads x head_dim on owner layers)]
  int qkv_ld = 0;
  int q_dim = 0;
  int write_kv = 0;     // owner layer: K and V of the new token go into the slot
  int rotary_dims = 0;  // leading dims of each head rotated (GPT-NeoX rotate-half)
  float inv_freq[64];   // [rotary_dims / 2]
};

/// decode_fused_qkv's rotation of element e (dim d of its head) of src + bias at position pos:
/// rope.hpp's arithmetic, products and sums rounded separately (as the model's split kernels).
__device__ __forceinline__ float decode_rotate(const float* __restrict__ src, const float* __restrict__ bias, int e,
                                               int d, int pos, const decode_fused_qkv& f) {
  const int half = f.rotary_dims / 2;
  const int pe = d < half ? e + half : (d < 2 * half ? e - half : e);
  float x = src[e] + bias[e];
  const float y = src[pe] + bias[pe];
  if (d < 2 * half) {
    const float angle = __fmul_rn(static_cast<float>(pos), f.inv_freq[d < half ? d : d - half]);
    float sn, cs;
    sincosf(angle, &sn, &cs);
    x = d < half ? __fsub_rn(__fmul_rn(x, cs), __fmul_rn(y, sn)) : __fadd_rn(__fmul_rn(x, cs), __fmul_rn(y, sn));
  }
  return x;
}

template <class T, class View>
struct decode_params {
  View kv;
  const T* q;                   // [batch, q_heads, head_dim]
  T* out;                       // [batch, q_heads, head_dim]
  const std::int32_t* context;  // [batch]
  int q_heads;
  int group;        // query heads per KV head
  int head_blocks;  // blocks of 16*MT heads per KV head
  int chunk;        // the plan's tokens per split (multiple of the tile), for max_context
  int tile;         // tokens per tile
  int max_splits;   // splits per (sequence, KV head, head block)
  int split_from_tiles;  // sequences of fewer tiles keep one split (0: all spread; decode_seq_chunk)
  float scale_log2; // softmax scale * log2(e)
  float* part_o;    // [items, max_splits, 16*MT, head_dim]: each split's normalised output
  float* part_lse;  // [items, max_splits, 16*MT]: each split's log2-sum-exp2
  decode_fused_qkv fq;  // the fused kernel's inputs (q unused then)
  int early_rows;       // contiguous view: rows of K and V from each split's start prefetched into
                        // the L2 before pdl_wait() (the kernel then starts behind the previous one)
  int batch0;           // the split kernel's first sequence: blockIdx.z + batch0 (launches of at
                        // most max_grid_yz sequences)
  decode_walk walk;
};

template <class T, class View>
__device__ __forceinline__ bool decode_bad_context(const decode_params<T, View>& p, int b, int ctx) {
  return ctx < 1 || ctx > device_capacity(p.kv, b) || ctx > p.chunk * p.max_splits;
}

/// Tokens per split of a sequence of ctx tokens (ctx <= max_context), decided at run time: its
/// own context over the plan's splits in whole tiles, at least two tiles (or the plan's chunk if
/// shorter) and at most the plan's chunk. A plan made for a max_context far above the actual
/// contexts (an engine that captures one graph for long contexts and runs short ones) thus still
/// spreads each sequence over the splits it launched, instead of leaving its context to the first
/// split while the others return (measured on an H100, 12:1 d64 batch 16 at 2048 tokens planned
/// for 32768: 27.9 us with the plan's chunk, against 10.5 us with a plan for 2048).
/// A plan that splits only for balance (decode_plan::split_from_tiles) leaves a sequence of fewer
/// tiles than that in one split: there the other CTAs of its item return at once.
/// The split and combine kernels both take a sequence's splits from here.
template <class T, class View>
__device__ __forceinline__ int decode_seq_chunk(const decode_params<T, View>& p, int ctx) {
  const int plan_tiles = p.chunk / p.tile;
  const int tiles = (ctx + p.tile - 1) / p.tile;
  if (tiles < p.split_from_tiles) return tiles * p.tile;
  return min(plan_tiles, max(min(2, plan_tiles), (tiles + p.max_splits - 1) / p.max_splits)) * p.tile;
}

/// A decode tile's row addresses in two steps, so that a paged view's block-table read can be
/// issued a tile ahead of the copies that need it: decode_row_page loads what the row's address
/// depends on (the page of the token's block; nothing for a contiguous view), decode_row_offset
/// finishes the address from it. Together they equal the view's offset(seq, head, token).
template <class T>
__device__ __forceinline__ int decode_row_page(const contiguous_slot_view<T>& /*v*/, int /*b*/, int /*tok*/) {
  return 0;
}
template <class T>
__device__ __forceinline__ std::size_t decode_row_offset(const contiguous_slot_view<T>& v, int b, int hk, int tok,
                                                         int /*page*/) {
  return v.offset(b, hk, tok);
}
template <class T>
__device__ __forceinline__ int decode_row_page(const paged_slot_view<T>& v, int b, int tok) {
  return v.block_table[static_cast<std::size_t>(b) * static_cast<std::size_t>(v.max_blocks) +
                       static_cast<std::size_t>(v.block_of(tok))];
}
template <class T>
__device__ __forceinline__ std::size_t decode_row_offset(const paged_slot_view<T>& v, int /*b*/, int hk, int tok,
                                                         int page) {
  return static_cast<std::size_t>(page) * v.page_stride +
         (static_cast<std::size_t>(hk) * static_cast<std::size_t>(v.page_tokens) +
          static_cast<std::size_t>(v.in_page(tok))) *
             static_cast<std::size_t>(v.head_dim);
}

/// One CTA per (split, KV head x head block, sequence). Fused: the query rows (and the new token's
/// K/V) from p.fq (decode_fused_qkv).
template <class T, int D, int MT, class Cfg, class View, bool Fused = false>
__global__ void __launch_bounds__(Cfg::threads) decode_split_kernel(const decode_params<T, View> p) {
  constexpr int RB = 16 * MT, N = Cfg::tile, LD = D + 8, ST = Cfg::stages, CH = D / 8, NT = Cfg::threads;
  constexpr int W = Cfg::warps;
  static_assert(W == 1 || W == 2 || W == 4 || W == 8, "mlkv: decode warps must be 1, 2, 4 or 8");
  static_assert((W / 2) * RB * (D + 2) * 4 <= 2 * ST * N * LD * 2, "mlkv: the warp merge must fit the pipeline");
  extern __shared__ __align__(16) unsigned char smem[];
  std::uint16_t* const sQ = reinterpret_cast<std::uint16_t*>(smem);  // [RB][LD]
  std::uint16_t* const sK = sQ + RB * LD;                            // [ST][N][LD]
  std::uint16_t* const sV = sK + ST * N * LD;                        // [ST][N][LD]

  if constexpr (std::is_same_v<View, contiguous_slot_view<T>>) {
    // Started early (programmatic dependent launch) behind the previous kernel of the stream: the
    // first tiles' K and V rows head for the L2 while it finishes. Their addresses come from the
    // host (view and plan), not from device memory: the lengths are read after the wait, so the
    // rows are those of the split's start at max_context (decode_seq_chunk moves the starts of
    // shorter contexts), and a split past its sequence's end prefetches rows it will not read
    // (within the capacity).
    const int seq = static_cast<int>(blockIdx.z) + p.batch0;
    if (p.early_rows > 0 && threadIdx.x == 0 && static_cast<int>(blockIdx.y) % p.head_blocks == 0 && seq < p.kv.batch) {
      const int r0 = static_cast<int>(blockIdx.x) * p.chunk, r1 = min(p.kv.capacity, r0 + min(p.chunk, p.early_rows));
      if (r0 < r1) {
        const std::size_t off = p.kv.offset(seq, static_cast<int>(blockIdx.y) / p.head_blocks, r0);
        const unsigned bytes = static_cast<unsigned>(r1 - r0) * static_cast<unsigned>(D * sizeof(T));
        prefetch_l2_bulk(p.kv.k + off, bytes);
        prefetch_l2_bulk(p.kv.v + off, bytes);
      }
    }
  }
  pdl_wait();  // launched early (programmatic dependent launch): the previous kernel's writes first
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int b = static_cast<int>(blockIdx.z) + p.batch0, hk = blockIdx.y / p.head_blocks, hb = blockIdx.y - hk * p.head_blocks;
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
  const int chunk = decode_seq_chunk(p, ctx);
  const int t0 = split * chunk;
  if (t0 >= ctx) return;
  const int t1 = min(ctx, t0 + chunk);
  const int nsplit = (ctx + chunk - 1) / chunk;
  const int ntiles = (t1 - t0 + N - 1) / N;
  const bool hinted = p.walk.evict_first != 0;
  const std::uint64_t policy = hinted ? l2_evict_first_policy() : 0;

  // Q rows of this head block (zero rows past the group); fused: computed below, after the first
  // tiles' copies are on their way.
  [[maybe_unused]] bool has_new = false;  // fused, owner layer: this CTA holds the new token
  [[maybe_unused]] std::uint16_t knew = 0, vnew = 0;  // its K and V, dim tid (tid < D)
  if constexpr (!Fused) {
    const T* qb = p.q + (static_cast<std::size_t>(b) * p.q_heads + head0) * D;
    for (int e = tid; e < RB * CH; e += NT) {
      const int r = e / CH, c = e - r * CH;
      cp_async_16(smem_addr(sQ + r * LD + c * 8), qb + (r < nh ? r : 0) * D + c * 8, r < nh);
    }
  }
  const T* const kb = kbase(p.kv);
  const T* const vb = vbase(p.kv);
  // The pages of the next tile's rows, read one tile ahead (a block-table read right before the
  // copies delayed each tile's copies by an L2 round trip; NOTES.md of bench/cuda_model, v5).
  constexpr int IT = N * CH / NT;
  int pg[IT];
  auto fetch_pages = [&](int tile) {
    const int base = t0 + tile * N;
#pragma unroll
    for (int it = 0; it < IT; ++it) {
      const int tok = base + (tid + it * NT) / CH;
      pg[it] = decode_row_page(p.kv, b, tok < t1 ? tok : t0);
    }
  };
  auto load_tile = [&](int tile, int stage) {
    const int base = t0 + tile * N;
#pragma unroll
    for (int it = 0; it < IT; ++it) {
      const int e = tid + it * NT;
      const int r = e / CH, c = e - r * CH;
      const int tok = base + r;
      const bool ok = tok < t1;
      const std::size_t off = decode_row_offset(p.kv, b, hk, ok ? tok : t0, pg[it]) + static_cast<std::size_t>(c * 8);
      cp_async_16_kv<Cfg>(smem_addr(sK + (stage * N + r) * LD + c * 8), kb + off, ok, hinted, policy);
      cp_async_16_kv<Cfg>(smem_addr(sV + (stage * N + r) * LD + c * 8), vb + off, ok, hinted, policy);
    }
  };
  fetch_pages(0);
#pragma unroll
  for (int s = 0; s < ST - 1; ++s) {
    if (s < ntiles) {
      load_tile(s, s);
      if (s + 1 < ntiles) fetch_pages(s + 1);
    }
    cp_async_commit();  // the first group carries Q too
  }
  if constexpr (Fused) {
    // The copies above may read the new token's row before this kernel writes it: the loop patches
    // that row of the tile from registers.
    const float* row = p.fq.qkv + static_cast<std::size_t>(b) * static_cast<std::size_t>(p.fq.qkv_ld);
    const int pos = ctx - 1;
    // Q first, every element's loads in flight together (the K/V stores below would order them).
    static_assert(RB * D % NT == 0, "mlkv: the fused Q rows must divide among the threads");
#pragma unroll
    for (int i = 0; i < RB * D / NT; ++i) {
      const int e = tid + i * NT;
      const int r = e / D, d = e - r * D;
      sQ[r * LD + d] = r < nh ? to_bits<T>(decode_rotate(row, p.fq.bias, (head0 + r) * D + d, d, pos, p.fq))
                              : std::uint16_t{0};
    }
    if (p.fq.write_kv != 0 && pos >= t0 && pos < t1) {
      has_new = true;
      if (tid < D) {
        const int kv_dim = p.kv.kv_heads * D;
        const int ke = p.fq.q_dim + hk * D + tid;
        knew = to_bits<T>(decode_rotate(row, p.fq.bias, ke, tid, pos, p.fq));
        vnew = to_bits<T>(row[ke + kv_dim] + p.fq.bias[ke + kv_dim]);
        if (hb == 0) {
          // The view hands out const rows because attention only reads; this layer owns the slot.
          const std::size_t off = p.kv.offset(b, hk, pos) + static_cast<std::size_t>(tid);
          reinterpret_cast<std::uint16_t*>(const_cast<T*>(kbase(p.kv)))[off] = knew;
          reinterpret_cast<std::uint16_t*>(const_cast<T*>(vbase(p.kv)))[off] = vnew;
        }
      }
    }
  }
  cp_async_wait<ST - 2>();
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
      cp_async_wait<ST - 2>();
      __syncthreads();  // tile's data visible; every warp is done with tile - 1's stage
    }
    if constexpr (Fused) {
      // The new token is this CTA's last row: its K/V from registers over whatever the copy read
      // (the cache row may be written by this very kernel).
      if (has_new && tile == ntiles - 1) {
        const int r = ctx - 1 - (t0 + tile * N);
        if (tid < D) {
          sK[(stage * N + r) * LD + tid] = knew;
          sV[(stage * N + r) * LD + tid] = vnew;
        }
        __syncthreads();
      }
    }
    {
      const int next = tile + ST - 1;
      if (next < ntiles) {
        load_tile(next, next % ST);
        if (next + 1 < ntiles) fetch_pages(next + 1);
      }
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
  if (warp == 0) {
    const std::size_t slot = (static_cast<std::size_t>(b) * gridDim.y + blockIdx.y) * static_cast<std::size_t>(p.max_splits) +
                             static_cast<std::size_t>(split);
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int row = mt * 16 + (lane >> 2) + h * 8;
        if (row >= nh) continue;
        const float inv = 1.f / l[mt][h];  // l >= 1: the row's maximum weighs exactly 1
        if (nsplit == 1) {
          T* dst = p.out + (static_cast<std::size_t>(b) * p.q_heads + head0 + row) * D + 2 * (lane & 3);
#pragma unroll
          for (int dt = 0; dt < D / 8; ++dt) {
            *reinterpret_cast<std::uint32_t*>(dst + dt * 8) = pack2<T>(o[mt][dt][2 * h] * inv, o[mt][dt][2 * h + 1] * inv);
          }
        } else {
          float* dst = p.part_o + (slot * RB + row) * D + 2 * (lane & 3);
#pragma unroll
          for (int dt = 0; dt < D / 8; ++dt) {
            *reinterpret_cast<float2*>(dst + dt * 8) = make_float2(o[mt][dt][2 * h] * inv, o[mt][dt][2 * h + 1] * inv);
          }
          if ((lane & 3) == 0) p.part_lse[slot * RB + row] = m[mt][h] + __log2f(l[mt][h]);
        }
      }
    }
  }
  pdl_launch_dependents();
}

/// Merges the splits of one (sequence, KV head x head block, head row): out = sum_s w_s O_s with
/// w_s = 2^(lse_s - max) / sum. One warp per head row, four rows per CTA, one CTA row block per
/// work item (no CTA for the padding rows of a tile); the lanes split D into float4 columns, and
/// the splits when D / 4 < 32.
template <class T, int D, int MT, class View>
__global__ void __launch_bounds__(combine_threads) decode_combine_kernel(const decode_params<T, View> p, int rows) {
  constexpr int RB = 16 * MT, C4 = D / 4, G = C4 >= 32 ? 1 : 32 / C4, CW = C4 >= 32 ? (C4 + 31) / 32 : 1;
  __shared__ float s_w[combine_threads / 32][decode_max_splits];
  pdl_wait();  // the split kernel's partials are complete and visible
  // The next kernel may start now: what it reads or writes waits for this grid's end (pdl_wait);
  // what it does before that (a split kernel's L2 prefetches) overlaps this one.
  pdl_launch_dependents();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int item = blockIdx.x;
  const int r = blockIdx.y * (combine_threads / 32) + warp;
  const int per_seq = p.kv.kv_heads * p.head_blocks;
  const int b = item / per_seq;
  const int rem = item - b * per_seq;
  const int hk = rem / p.head_blocks, hb = rem - hk * p.head_blocks;
  const int nh = min(RB, p.group - hb * RB);
  if (r >= nh || r >= rows) return;
  const int ctx = p.context[b];
  if (decode_bad_context(p, b, ctx)) return;  // the split kernel wrote NaN
  const int chunk = decode_seq_chunk(p, ctx);
  const int nsplit = (ctx + chunk - 1) / chunk;
  if (nsplit <= 1) return;  // the split kernel wrote the output itself
  const std::size_t slot0 = static_cast<std::size_t>(item) * static_cast<std::size_t>(p.max_splits);

  float mx = -INFINITY;
  for (int s = lane; s < nsplit; s += 32) mx = fmaxf(mx, p.part_lse[(slot0 + s) * RB + r]);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
  float sum = 0.f;
  for (int s = lane; s < nsplit; s += 32) {
    const float w = fast_exp2(p.part_lse[(slot0 + s) * RB + r] - mx);
    s_w[warp][s] = w;
    sum += w;
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
  __syncwarp();
  const float inv = 1.f / sum;

  const int g = lane / (C4 < 32 ? C4 : 32);  // split group of this lane
#pragma unroll
  for (int cw = 0; cw < CW; ++cw) {
    const int c = (C4 < 32 ? lane % C4 : lane) + cw * 32;
    const bool active = c < C4 && g < G;
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
    if (active) {
#pragma unroll 4
      for (int s = g; s < nsplit; s += G) {
        const float4 x = __ldcg(reinterpret_cast<const float4*>(p.part_o + ((slot0 + s) * RB + r) * D) + c);
        const float w = s_w[warp][s];
        acc.x += w * x.x;
        acc.y += w * x.y;
        acc.z += w * x.z;
        acc.w += w * x.w;
      }
    }
    // Sum the split groups (lanes c, c + C4, ...; G > 1 only when C4 divides 32).
#pragma unroll
    for (int o = C4; G > 1 && o < 32; o <<= 1) {
      acc.x += __shfl_down_sync(0xffffffffu, acc.x, o);
      acc.y += __shfl_down_sync(0xffffffffu, acc.y, o);
      acc.z += __shfl_down_sync(0xffffffffu, acc.z, o);
      acc.w += __shfl_down_sync(0xffffffffu, acc.w, o);
    }
    if (active && g == 0) {
      const int head = hk * p.group + hb * RB + r;
      uint2 v;
      v.x = pack2<T>(acc.x * inv, acc.y * inv);
      v.y = pack2<T>(acc.z * inv, acc.w * inv);
      *(reinterpret_cast<uint2*>(p.out + (static_cast<std::size_t>(b) * p.q_heads + head) * D) + c) = v;
    }
  }
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

/// The launch shape of a decode call, a pure function of the host-side arguments and the device.
struct decode_plan {
  int head_blocks = 1;  // head blocks per KV head
  int chunk = 0;        // tokens per split
  int splits = 1;       // splits per (sequence, KV head, head block)
  int split_from_tiles = 0;  // > 0: only sequences of at least this many tiles are split
  std::size_t items = 0;
  std::size_t workspace = 0;  // bytes
};

/// Chooses the split: about two CTAs per SM in all (floor(2 x SMs / work items)), at most 64 splits
/// and two tiles per split at least (but for the last one of an odd count of 5 or more while the
/// grid stays within one CTA per SM: 17 tiles, a context of 2049-2176 tokens, make 9 splits, not
/// 6 of three tiles, for the CUDA model at batch 1, and at batch 4 with one KV head,
/// bench/cuda_model/NOTES.md v10); no split in two, though (work items between 2/3 and all of the
/// SMs): the unsplit grid already gives nearly every SM a CTA, and the second kernel and the
/// partials' round trip cost more than the second CTA per SM brings (NOTES.md v6: batch 128 x 1 KV
/// head at 2048 tokens and 32:8 d128 batch 16 at 16384, 4.5-6% faster unsplit on an H100).
/// The plan is made for max_context; each sequence then cuts its own context over the planned
/// splits (decode_seq_chunk), so a loose max_context costs idle CTAs, not the split's parallelism.
/// Long contexts over fewer than 1.5 work items per SM (16-row tiles, head dim <= 64) split in
/// four, but only the sequences of at least 128 tiles (split_from_tiles; shorter ones keep one
/// split, their other CTAs return at once): NOTES.md v9 measured four splits 3-6% faster at
/// 16384 and 32768 tokens, and v10 showed that splits of short contexts (a graph planned for far
/// longer ones) are 17-32% slower at about one work item per SM.
/// The 32-row tiles (MT = 2, groups of 17-32 query heads) aim at one CTA per SM instead, and may
/// split in two: each CTA carries twice the rows (NOTES.md v7: 32:1 d128 at batch 16 and 64,
/// 1.7-11% faster than at two CTAs per SM from 4096 tokens on).
/// bench/cuda's sweep over forced splits (NOTES.md, v3) found the best split of every measured
/// shape within one power of two of this rule, and a cost model (tail of long CTAs, per-CTA
/// streaming rate) that chose otherwise lost up to 35%.
template <class T, int D, int MT, class Cfg, class View>
decode_plan make_decode_plan(const View& kv, int q_heads, const attention_batch& ab) {
  decode_plan pl;
  const int group = q_heads / kv.kv_heads;
  pl.head_blocks = (group + 16 * MT - 1) / (16 * MT);
  pl.items = static_cast<std::size_t>(ab.batch) * static_cast<std::size_t>(kv.kv_heads) *
             static_cast<std::size_t>(pl.head_blocks);
  const int tiles = (ab.max_context + Cfg::tile - 1) / Cfg::tile;
  const kernel_occupancy occ = decode_occupancy<T, D, MT, Cfg, View>();
  const std::size_t per_sm = MT == 1 ? 2u : 1u;
  const std::size_t want = std::max<std::size_t>(1, per_sm * static_cast<std::size_t>(occ.sms) / pl.items);
  int s = static_cast<int>(std::min<std::size_t>(want, 64));
  if (s == 2 && MT == 1) s = 1;
  constexpr int long_tiles = 128;
  if (s == 1 && MT == 1 && D <= 64 && 2 * pl.items < 3 * static_cast<std::size_t>(occ.sms) && tiles >= long_tiles) {
    s = 4;
    pl.split_from_tiles = long_tiles;
  }
  // Two tiles per split; an odd count's last split has one while the grid stays one wave and the
  // plan splits anyway (from 5 tiles: 3 tiles stay one split, no combine kernel added).
  const int half = (tiles + 1) / 2;
  const bool round_up = tiles >= 5 && pl.items * static_cast<std::size_t>(half) <= static_cast<std::size_t>(occ.sms);
  s = std::min(s, std::max(1, round_up ? half : tiles / 2));
  const int forced = decode_force_splits.load(std::memory_order_relaxed);
  if (forced > 0) {
    s = std::min(forced, std::min(tiles, decode_max_splits));
    pl.split_from_tiles = 0;
  }
  const int ct = (tiles + s - 1) / s;  // tiles per split
  pl.splits = (tiles + ct - 1) / ct;
  pl.chunk = ct * Cfg::tile;
  if (pl.splits > 1) {
    const std::size_t part = pl.items * static_cast<std::size_t>(pl.splits) * static_cast<std::size_t>(16 * MT);
    pl.workspace = part * static_cast<std::size_t>(D) * sizeof(float) + part * sizeof(float);
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
  const long long hb = (q_heads / kv.kv_heads + 31) / 32;
  MLKV_CHECK(static_cast<long long>(kv.kv_heads) * hb <= max_grid_yz, "KV heads x head blocks (", kv.kv_heads * hb,
             ") must be at most ", max_grid_yz);
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
                   void* workspace, std::size_t workspace_bytes, cudaStream_t stream,
                   const decode_fused_qkv* fused = nullptr, const decode_walk& walk = {}) {
  const decode_plan pl = make_decode_plan<T, D, MT, Cfg>(kv, q_heads, ab);
  MLKV_CHECK(workspace_bytes >= pl.workspace, "decode workspace holds ", workspace_bytes, " bytes; this call needs ",
             pl.workspace, " (decode_workspace_bytes)");
  MLKV_CHECK(pl.workspace == 0 || (workspace != nullptr && aligned16(workspace)),
             "decode workspace must be a 16-byte aligned device pointer");
  decode_params<T, View> p{};
  p.kv = kv;
  p.q = q;
  p.out = out;
  p.context = ab.context;
  p.q_heads = q_heads;
  p.group = q_heads / kv.kv_heads;
  p.head_blocks = pl.head_blocks;
  p.chunk = pl.chunk;
  p.tile = Cfg::tile;
  p.max_splits = pl.splits;
  p.split_from_tiles = pl.split_from_tiles;
  p.scale_log2 = scale * 1.4426950408889634f;
  p.walk = walk;
  p.part_o = static_cast<float*>(workspace);
  p.part_lse = pl.workspace != 0
                   ? p.part_o + pl.items * static_cast<std::size_t>(pl.splits) * (16 * MT) * static_cast<std::size_t>(D)
                   : nullptr;
  // A split call over a contiguous view starts its split kernel early (programmatic dependent
  // launch) and its CTAs prefetch their first tiles into the L2 before they wait for the previous
  // kernel (NOTES.md v8: 3-18% faster on split calls of 16-row tiles). Not over a paged view (the
  // addresses need the block table, which the previous kernel may write), nor for unsplit calls
  // and 32-row tiles: early CTAs are placed wherever the previous kernel leaves room, and a grid
  // meant as one CTA per SM, or one starting behind a kernel whose CTAs end together, loses more
  // to that packing than the prefetch brings (v8: 32:1 d128 +17-34%, unsplit 12:4 B64 +3%).
  // The combine kernel follows it with programmatic dependent launch (it waits before reading).
  // Nor for a plan that splits only long sequences (split_from_tiles): before the lengths are
  // read, a CTA cannot tell whether its split reads the rows at its planned start.
  const bool early = std::is_same_v<View, contiguous_slot_view<T>> && fused == nullptr && MT == 1 && pl.splits > 1 &&
                     pl.split_from_tiles == 0 && decode_early_start.load(std::memory_order_relaxed) != 0;
  p.early_rows = early ? Cfg::stages * Cfg::tile : 0;
  if (fused != nullptr) {
    p.fq = *fused;
    // decode_occupancy raised the plain kernel's limit; this one's (host-side, legal in a capture).
    MLKV_CUDA_CHECK(cudaFuncSetAttribute(decode_split_kernel<T, D, MT, Cfg, View, true>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(decode_smem_bytes<D, MT, Cfg>())));
  }
  // Sequences are the grid's z: one launch per part of at most max_grid_yz (the combine below
  // covers them all).
  for_each_grid_part(ab.batch, [&](int b0, int n) {
    p.batch0 = b0;
    const dim3 grid(static_cast<unsigned>(pl.splits), static_cast<unsigned>(kv.kv_heads * pl.head_blocks),
                    static_cast<unsigned>(n));
    if (fused != nullptr) {
      launch_pdl(decode_split_kernel<T, D, MT, Cfg, View, true>, grid, dim3(Cfg::threads),
                 decode_smem_bytes<D, MT, Cfg>(), stream, /*programmatic=*/false, p);
    } else {
      launch_pdl(decode_split_kernel<T, D, MT, Cfg, View>, grid, dim3(Cfg::threads), decode_smem_bytes<D, MT, Cfg>(),
                 stream, /*programmatic=*/early, p);
    }
  });
  if (pl.splits > 1) {
    MLKV_CHECK(pl.items <= static_cast<std::size_t>(INT_MAX), "decode batch x heads too large");
    const int rows = std::min(p.group, 16 * MT);
    launch_pdl(decode_combine_kernel<T, D, MT, View>,
               dim3(static_cast<unsigned>(pl.items), static_cast<unsigned>((rows + 3) / 4)), dim3(combine_threads), 0,
               stream, /*programmatic=*/true, p, rows);
  }
}

}  // namespace detail

/// Bytes of device workspace decode_attention needs for these arguments on the current device
/// (0 when it needs none). Zero-initialisation is not required.
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
///   workspace: decode_workspace_bytes(kv, q_heads, ab) bytes of device memory (may be null when 0)
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

namespace detail {

/// decode_attention whose query rows come from the f32 Q/K/V projection of the new tokens (bias
/// and rotary applied inside the kernel), and on an owner layer (fq.write_kv) whose new token's K
/// and V are computed there too and written into the slot at position context[b] - 1: the CUDA
/// model's decode step without a separate split kernel (NOTES.md v6 of bench/cuda_model). Every
/// context[b] must lie in [1, the view's capacity for b]; a sequence outside it gets NaN rows and
/// no K/V write, as decode_attention.
///   fq.qkv: [ab.batch, fq.qkv_ld] f32, 4-byte aligned; out: [ab.batch, q_heads, head_dim]
template <class View>
void decode_attention_qkv(const View& kv, int q_heads, const decode_fused_qkv& fq, typename View::value_type* out,
                          const attention_batch& ab, float scale, void* workspace, std::size_t workspace_bytes,
                          cudaStream_t stream, const decode_walk& walk = {}) {
  using T = typename View::value_type;
  static_assert(is_cuda_storage_v<T>, "mlkv: CUDA caches store mlkv::f16 or mlkv::bf16");
  check_decode_args(kv, q_heads, out, out, ab, scale);  // q is not read (out stands in for its checks)
  MLKV_CHECK(fq.qkv != nullptr && fq.bias != nullptr, "fused decode: the Q/K/V rows and the bias must be set");
  MLKV_CHECK(fq.q_dim == q_heads * kv.head_dim, "fused decode: q_dim (", fq.q_dim, ") must be q_heads x head_dim (",
             q_heads * kv.head_dim, ")");
  MLKV_CHECK(fq.qkv_ld >= fq.q_dim + (fq.write_kv != 0 ? 2 * kv.kv_heads * kv.head_dim : 0),
             "fused decode: qkv_ld (", fq.qkv_ld, ") is shorter than the Q/K/V row");
  MLKV_CHECK(fq.rotary_dims >= 0 && fq.rotary_dims <= kv.head_dim && fq.rotary_dims % 2 == 0 && fq.rotary_dims <= 128,
             "fused decode: rotary dims (", fq.rotary_dims, ") must be even and at most the head dim");
  if (ab.batch == 0) return;
  with_decode_config(kv, q_heads, [&](auto d, auto mt) {
    constexpr int D = decltype(d)::value;
    decode_launch<T, D, decltype(mt)::value, decode_default_cfg<D>>(kv, q_heads, static_cast<const T*>(nullptr), out,
                                                                   ab, scale, workspace, workspace_bytes, stream, &fq,
                                                                   walk);
  });
}

}  // namespace detail

}  // namespace mlkv::cuda
