#pragma once
/// \file cpu/simd_avx512.hpp
/// The AVX-512 paths of the CPU attention kernels (16 lanes), compiled with per-function target
/// attributes whatever the target flags, so one binary can pick them at run time:
///  - `avx512`: AVX-512 F/BW/VL/DQ + FMA; f32 arithmetic throughout (bf16/f16 rows are
///    converted exactly to f32);
///  - `avx512_bf16`: the same plus VDPBF16PS for both products over bf16 storage: one
///    instruction does two products per lane (twice the FMA rate on AMD Zen 4 and Intel
///    Sapphire Rapids). q.K multiplies K as stored by the query rounded to bf16; P.V multiplies
///    V as stored by the softmax weights rounded to bf16 (each relative 2^-9, as on the GPU's
///    tensor cores), with f32 sums; the normaliser sums the rounded weights.
/// Each path compiles the kernel body twice, for 32- and 64-token tiles (detail::wide_tiles picks
/// per task), and puts the queries in the lanes for groups of 16 or 32 query heads (kt_heads_*).
/// Without GCC/Clang on x86-64 this header declares nothing.

#include "isa.hpp"

#if defined(MLKV_CPU_X86)
#include <immintrin.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "../dtype.hpp"
#include "detail/task.hpp"

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c,bmi2"))), \
                             apply_to = function)
#else
#pragma GCC diagnostic push
// GCC 12's AVX-512 intrinsics read _mm512_undefined_ps() (self-initialised), which
// -W(maybe-)uninitialized reports once they are inlined (GCC bug 105593, fixed in GCC 13).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c,bmi2")
#endif

namespace mlkv::cpu::detail::avx512 {

/// The AVX-512 SIMD policy of kernel_body.inc.
struct ops {
  using vf = __m512;
  using vi = __m512i;
  static constexpr int W = 16;   // lanes
  static constexpr int TV = 2;   // 32-token tiles (64 in tiles64: see wide_tiles)
  static constexpr int QB = 12;  // 12 x 2 score accumulators + 2 K^T + 1 broadcast of 32 registers
  static constexpr int PB = 12;  // 12 x 2 output accumulators + 2 V + 1 broadcast
  static constexpr bool bf16_dot = false;
  static constexpr bool f16_pairs = true;  // VPMOVDW + VCVTPH2PS split the transposed f16 pairs
  static constexpr bool f16_pair_scores = true;  // kt_f16_pairs: few queries per KV head
  static constexpr bool sum_lanes_fast = true;   // kt_rows_*: one query per KV head
  static constexpr bool heads_lanes = true;      // kt_heads_*: 16 or 32 query heads per KV head
  static constexpr tile_use tiles = tile_use::every_task;

  /// Prefetches the line at p into L2. An asm statement: GCC deletes a loop of nothing but
  /// __builtin_prefetch calls (it treats the loop as free of side effects).
  static MLKV_SIMD_INLINE void prefetch(const char* p) { __asm__ volatile("prefetcht1 %0" : : "m"(*p)); }
  static MLKV_SIMD_INLINE vf zero() { return _mm512_setzero_ps(); }
  /// Keeps x in a register: an empty asm statement the compiler cannot see through, so that a
  /// vector loaded once and used by several FMAs is not reloaded as each FMA's memory operand
  /// (GCC 12 folds the load into every use: N loads per K^T vector in q.K^T).
  static MLKV_SIMD_INLINE void pin(vf& x) { __asm__("" : "+v"(x)); }
  static MLKV_SIMD_INLINE vf set1(float x) { return _mm512_set1_ps(x); }
  static MLKV_SIMD_INLINE vf load(const float* p) { return _mm512_load_ps(p); }
  static MLKV_SIMD_INLINE void store(float* p, vf x) { _mm512_store_ps(p, x); }
  static MLKV_SIMD_INLINE vf add(vf a, vf b) { return _mm512_add_ps(a, b); }
  static MLKV_SIMD_INLINE vf sub(vf a, vf b) { return _mm512_sub_ps(a, b); }
  static MLKV_SIMD_INLINE vf mul(vf a, vf b) { return _mm512_mul_ps(a, b); }
  static MLKV_SIMD_INLINE vf max(vf a, vf b) { return _mm512_max_ps(a, b); }
  static MLKV_SIMD_INLINE vf fma(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }
  static MLKV_SIMD_INLINE float hmax(vf x) { return _mm512_reduce_max_ps(x); }
  static MLKV_SIMD_INLINE vi bits(vf x) { return _mm512_castps_si512(x); }
  static MLKV_SIMD_INLINE vf floats(vi x) { return _mm512_castsi512_ps(x); }
  static MLKV_SIMD_INLINE vi load_bits(const float* p) { return _mm512_load_si512(p); }
  static MLKV_SIMD_INLINE void store_bits(float* p, vi x) { _mm512_store_si512(p, x); }
  static MLKV_SIMD_INLINE vi broadcast_bits(const float* p) {
    std::int32_t u;
    std::memcpy(&u, p, sizeof u);
    return _mm512_set1_epi32(u);
  }
  static MLKV_SIMD_INLINE vf dot_bf16(vf acc, vi, vi) { return acc; }  // never used here: bf16_dot is false

  static MLKV_SIMD_INLINE __mmask16 first(int n) {
    return n >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << std::max(n, 0)) - 1u);
  }
  /// Lanes of x greater than y, as a mask.
  static MLKV_SIMD_INLINE __mmask16 greater(vf x, vf y) { return _mm512_cmp_ps_mask(x, y, _CMP_GT_OQ); }
  /// True when some lane of x is greater than y.
  static MLKV_SIMD_INLINE bool any_greater(vf x, float y) { return greater(x, _mm512_set1_ps(y)) != 0; }
  /// Lanes of x equal to y.
  static MLKV_SIMD_INLINE __mmask16 equal(vf x, vf y) { return _mm512_cmp_ps_mask(x, y, _CMP_EQ_OQ); }
  /// Lanes of mask k from b, the others from a.
  static MLKV_SIMD_INLINE vf blend(__mmask16 k, vf a, vf b) { return _mm512_mask_mov_ps(a, k, b); }
  /// The least whole numbers not below x.
  static MLKV_SIMD_INLINE vf ceil(vf x) { return _mm512_roundscale_ps(x, _MM_FROUND_TO_POS_INF | _MM_FROUND_NO_EXC); }
  /// Lanes 0..n-1 of x, the rest from fill.
  static MLKV_SIMD_INLINE vf keep_first(vf x, int n, vf fill) { return blend(first(n), fill, x); }

  /// 2^r for |r| <= 1/2 by its Taylor polynomial of degree 6 (error < 1.3e-7).
  static MLKV_SIMD_INLINE vf exp2_poly(vf r) {
    vf p = _mm512_set1_ps(1.5403530393381609e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3333558146428443e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(9.6181291076284772e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.5504108664821580e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(2.4022650695910071e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(6.9314718055994531e-1f));
    return _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
  }
  /// 2^x for x <= 0 (scores minus their running max); about 1 ulp. x = n + r, |r| <= 1/2,
  /// 2^r by exp2_poly, then VSCALEFPS multiplies by 2^n.
  static MLKV_SIMD_INLINE vf exp2(vf x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-127.f));
    const vf n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    return _mm512_scalef_ps(exp2_poly(_mm512_sub_ps(x, n)), n);
  }

  /// n (1..16) values of storage type T as f32; lanes n.. are zero. Masked loads never touch
  /// memory past the row.
  template <class T>
  static MLKV_SIMD_INLINE vf load_f32(const T* p, int n) {
    if constexpr (std::is_same_v<T, float>) {
      return _mm512_maskz_loadu_ps(first(n), p);
    } else if constexpr (std::is_same_v<T, bf16>) {
      const __m256i h = _mm256_maskz_loadu_epi16(first(n), p);
      return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    } else {
      return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(first(n), p));
    }
  }
  /// Whether load_v gives the (even, odd) dims of a chunk rather than its two halves.
  template <class T>
  static constexpr bool v_pairs = std::is_same_v<T, bf16>;
  /// nd (1..32) values of a V row as two f32 vectors: the halves of the chunk, or for bf16 its
  /// even and odd dims (one load, two integer operations); lanes past nd are zero.
  template <class T>
  static MLKV_SIMD_INLINE void load_v(const T* p, int nd, vf& a, vf& b) {
    if constexpr (std::is_same_v<T, bf16>) {
      split_bf16(_mm512_maskz_loadu_epi32(first((nd + 1) / 2), p), a, b);
    } else if constexpr (std::is_same_v<T, float>) {
      a = _mm512_maskz_loadu_ps(first(nd), p);
      b = _mm512_maskz_loadu_ps(first(nd - 16), p + 16);
    } else {
      a = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(first(nd), p));
      b = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(first(nd - 16), p + 16));
    }
  }
  /// n (1..16) 32-bit (d, d+1) pairs of a 16-bit row; the rest zero.
  template <class T>
  static MLKV_SIMD_INLINE vi load_pairs(const T* p, int n) {
    return _mm512_maskz_loadu_epi32(first(n), p);
  }
  /// W/2 transposed f16 (d, d+1) pairs (32 bytes, 32-byte aligned) as f32, d and d+1 of a
  /// token in adjacent lanes.
  static MLKV_SIMD_INLINE vf load_f16_pairs(const float* p) {
    return _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(p)));
  }
  /// (p[0], p[1]) repeated over the lanes.
  static MLKV_SIMD_INLINE vf broadcast_pair(const float* p) {
    double d;
    std::memcpy(&d, p, sizeof d);
    return _mm512_castpd_ps(_mm512_set1_pd(d));
  }
  /// Sums of adjacent lanes: lanes 0..W/2-1 from lo, W/2..W-1 from hi.
  static MLKV_SIMD_INLINE vf pair_sum(vf lo, vf hi) {
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i odd = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
    return _mm512_add_ps(_mm512_permutex2var_ps(lo, even, hi), _mm512_permutex2var_ps(lo, odd, hi));
  }
  /// bf16 pairs -> (even dims, odd dims) as f32: bf16 is the upper half of an f32.
  static MLKV_SIMD_INLINE void split_bf16(vi x, vf& even, vf& odd) {
    even = _mm512_castsi512_ps(_mm512_slli_epi32(x, 16));
    odd = _mm512_castsi512_ps(_mm512_and_si512(x, _mm512_set1_epi32(static_cast<int>(0xffff0000u))));
  }
  /// f16 pairs -> (even dims, odd dims) as f32 (exact).
  static MLKV_SIMD_INLINE void split_f16(vi x, vf& even, vf& odd) {
    even = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(x));
    odd = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(x, 16)));
  }

  /// Lane i of the result: the sum of the lanes of v[i] (45 operations for 16 vectors: adds of
  /// interleaved pairs within 128-bit lanes, then across them).
  static MLKV_SIMD_INLINE vf sum_lanes(const vf (&v)[16]) {
    vf t[8], u[4];
    MLKV_UNROLL
    for (int k = 0; k < 8; ++k) {  // t[k], lane L: (v[2k].0+2, v[2k+1].0+2, v[2k].1+3, v[2k+1].1+3)
      t[k] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * k], v[2 * k + 1]), _mm512_unpackhi_ps(v[2 * k], v[2 * k + 1]));
    }
    MLKV_UNROLL
    for (int k = 0; k < 4; ++k) {  // u[k], lane L: the lane-L sums of v[4k..4k+3]
      const __m512d a = _mm512_castps_pd(t[2 * k]), b = _mm512_castps_pd(t[2 * k + 1]);
      u[k] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)), _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
    }
    const vf a = _mm512_add_ps(_mm512_shuffle_f32x4(u[0], u[1], 0x44), _mm512_shuffle_f32x4(u[0], u[1], 0xee));
    const vf b = _mm512_add_ps(_mm512_shuffle_f32x4(u[2], u[3], 0x44), _mm512_shuffle_f32x4(u[2], u[3], 0xee));
    return _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x88), _mm512_shuffle_f32x4(a, b, 0xdd));
  }

  /// In-place transpose of 16 x 16 32-bit elements: r[i][j] -> r[j][i] (64 shuffles).
  static MLKV_SIMD_INLINE void transpose(vi (&r)[16]) {
    vi t[16], u[16];
    MLKV_UNROLL
    for (int i = 0; i < 8; ++i) {
      t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
      t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    MLKV_UNROLL
    for (int i = 0; i < 4; ++i) {
      u[4 * i + 0] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
      u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
      u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
      u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
    }
    // u[4i + k], 128-bit lane L: column 4L + k of rows 4i..4i+3.
    MLKV_UNROLL
    for (int k = 0; k < 4; ++k) {
      const vi a0 = _mm512_shuffle_i32x4(u[k], u[4 + k], 0x88), a1 = _mm512_shuffle_i32x4(u[k], u[4 + k], 0xdd);
      const vi b0 = _mm512_shuffle_i32x4(u[8 + k], u[12 + k], 0x88), b1 = _mm512_shuffle_i32x4(u[8 + k], u[12 + k], 0xdd);
      r[k] = _mm512_shuffle_i32x4(a0, b0, 0x88);
      r[8 + k] = _mm512_shuffle_i32x4(a0, b0, 0xdd);
      r[4 + k] = _mm512_shuffle_i32x4(a1, b1, 0x88);
      r[12 + k] = _mm512_shuffle_i32x4(a1, b1, 0xdd);
    }
  }
};

// The kernel body for 32- and 64-token tiles, and this path's attend (detail/two_tile_widths.inc).
using base_ops = ops;
#include "detail/two_tile_widths.inc"

}  // namespace mlkv::cpu::detail::avx512

#if defined(__clang__)
#pragma clang attribute pop
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c,bmi2,avx512bf16"))), \
                             apply_to = function)
#else
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c,bmi2,avx512bf16")
#endif

namespace mlkv::cpu::detail::avx512_bf16 {

/// The AVX-512 policy plus VDPBF16PS for q.K and P.V over bf16 storage.
struct ops : avx512::ops {
  static constexpr bool bf16_dot = true;
  /// acc + k[2i] * q[0] + k[2i+1] * q[1] per lane i (bf16 products, f32 sums).
  static MLKV_SIMD_INLINE vf dot_bf16(vf acc, vi k, vi q) { return _mm512_dpbf16_ps(acc, (__m512bh)k, (__m512bh)q); }
  /// Tokens 0..15 (lo) and 16..31 (hi) as bf16 (round to nearest even), in token order: 32-bit
  /// unit i holds the pair (token 2i, token 2i + 1).
  static MLKV_SIMD_INLINE vi pack_bf16(vf lo, vf hi) { return (__m512i)_mm512_cvtne2ps_pbh(hi, lo); }
  /// 2^(s - m) for a whole number m, a weight that pack_bf16 rounds to bf16 next: 2^(s - n)
  /// times 2^(n - m), n the nearest whole number to s. s - n and n - m are exact, so the result
  /// is the same digits whatever m is, bit for bit (2^(s - m) would round s - m first,
  /// differently for each m): splits of the context round a weight to the same bf16. 2^(s - n)
  /// by a degree-4 minimax polynomial on [-1/2, 1/2]: relative error below 3.7e-6 in f32
  /// (measured over 3.2e8 values), against bf16's half-ulp of 2^-9; the oracle allows 2^-17
  /// (tests/oracle.hpp). No clamp: scores far below m (masked ones hold the lowest finite
  /// value) give exactly 0; a score of -inf would give NaN and raise FE_INVALID.
  static MLKV_SIMD_INLINE vf exp2_weight(vf s, vf m) {
    const vf n = _mm512_roundscale_ps(s, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const vf r = _mm512_sub_ps(s, n);
    vf p = _mm512_set1_ps(9.7829122096e-03f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.5976882577e-02f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(2.4020710588e-01f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(6.9311362505e-01f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
    return _mm512_scalef_ps(p, _mm512_sub_ps(n, m));
  }
  /// Lane i of lo and of hi as bf16 (round to nearest even), as the pair (lo[i], hi[i]) in
  /// 32-bit unit i: the weights of one query at tokens t (lo) and t + 1 (hi), when the lanes are
  /// queries (kt_heads_bf16).
  static MLKV_SIMD_INLINE vi pack_bf16_lanes(vf lo, vf hi) {
    const __m512i zip = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21,
                                         5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    return _mm512_permutexvar_epi16(zip, pack_bf16(lo, hi));
  }
  /// acc + both bf16 values of each 32-bit unit of x, in f32 (one VDPBF16PS against ones): the
  /// running sum of pack_bf16's rounded weights.
  static MLKV_SIMD_INLINE vf add_pairs(vf acc, vi x) {
    return _mm512_dpbf16_ps(acc, (__m512bh)x, (__m512bh)_mm512_set1_epi32(0x3f803f80));
  }
  /// The first nd (1..32) 16-bit values of a chunk, for zip_v.
  static MLKV_SIMD_INLINE __mmask32 v_mask(int nd) {
    return nd >= 32 ? ~__mmask32{0} : static_cast<__mmask32>((1u << nd) - 1u);
  }
  /// The values of v_mask of two V rows (b may be null: zeros) as (a[d], b[d]) pairs: lo holds
  /// dims 8L..8L+3 of each 128-bit lane L, hi dims 8L+4..8L+7 (one shuffle each; chunk_out_dot).
  static MLKV_SIMD_INLINE void zip_v(const bf16* a, const bf16* b, __mmask32 m, vi& lo, vi& hi) {
    const vi x = _mm512_maskz_loadu_epi16(m, a);
    const vi y = b != nullptr ? _mm512_maskz_loadu_epi16(m, b) : _mm512_setzero_si512();
    lo = _mm512_unpacklo_epi16(x, y);
    hi = _mm512_unpackhi_epi16(x, y);
  }
  /// dst[d] = o * scale for d < nd: a chunk of pv_block_dot's outputs (zip_v's lo lanes in
  /// o[0..15], hi lanes in o[16..31]; lane 4L + k holds dim 8L + k, resp. 8L + 4 + k) back in
  /// head-dim order.
  static MLKV_SIMD_INLINE void chunk_out_dot(const float* o, int nd, float scale, float* dst) {
    const vf lo = _mm512_load_ps(o), hi = _mm512_load_ps(o + 16), sc = _mm512_set1_ps(scale);
    const __m512i first = _mm512_set_epi32(23, 22, 21, 20, 7, 6, 5, 4, 19, 18, 17, 16, 3, 2, 1, 0);
    const __m512i second = _mm512_set_epi32(31, 30, 29, 28, 15, 14, 13, 12, 27, 26, 25, 24, 11, 10, 9, 8);
    _mm512_mask_storeu_ps(dst, avx512::ops::first(nd), _mm512_mul_ps(_mm512_permutex2var_ps(lo, first, hi), sc));
    _mm512_mask_storeu_ps(dst + 16, avx512::ops::first(nd - 16), _mm512_mul_ps(_mm512_permutex2var_ps(lo, second, hi), sc));
  }
  /// The query as bf16 (d, d+1) pairs: dst[i] = bf16(src[2i]) | bf16(src[2i+1]) << 16 for
  /// i < D/2, rounded as from_float<bf16> rounds (to nearest even, NaN kept quiet); writes
  /// whole vectors of 16 pairs (callers' rows hold head_dim rounded up to 16 floats).
  static MLKV_SIMD_INLINE void query_pairs(const float* src, int D, float* dst) {
    for (int d = 0; d < D; d += 32) {
      const __m256i a = round_bf16(_mm512_maskz_loadu_ps(first(D - d), src + d));
      const __m256i b = round_bf16(_mm512_maskz_loadu_ps(first(D - d - 16), src + d + 16));
      _mm512_store_si512(dst + d / 2, _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1));
    }
  }
  /// 16 floats -> 16 bf16 (bits), to nearest even; NaN stays a quiet NaN (dtype.hpp's rule).
  static MLKV_SIMD_INLINE __m256i round_bf16(vf x) {
    const __m512i u = _mm512_castps_si512(x);
    const __m512i r = _mm512_srli_epi32(
        _mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1)))), 16);
    const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
    const __m512i q = _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
    return _mm512_cvtepi32_epi16(_mm512_mask_mov_epi32(r, nan, q));
  }
};

// The kernel body for both tile widths, as on the avx512 path.
using base_ops = ops;
#include "detail/two_tile_widths.inc"

}  // namespace mlkv::cpu::detail::avx512_bf16

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#pragma GCC diagnostic pop
#endif

#endif  // MLKV_CPU_X86
