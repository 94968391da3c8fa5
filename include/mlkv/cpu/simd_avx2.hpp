#pragma once
/// \file cpu/simd_avx2.hpp
/// The AVX2 + FMA + F16C path of the CPU attention kernels (8 lanes, 16 registers), compiled
/// with per-function target attributes whatever the target flags. f32 arithmetic throughout.
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
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC diagnostic push
// GCC 12's AVX-512 intrinsics read _mm512_undefined_ps() (self-initialised), which
// -W(maybe-)uninitialized reports once they are inlined (GCC bug 105593, fixed in GCC 13).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif

namespace mlkv::cpu::detail::avx2 {

/// The AVX2 SIMD policy of kernel_body.inc.
struct ops {
  using vf = __m256;
  using vi = __m256i;
  static constexpr int W = 8;
  static constexpr int TV = 2;   // 16-token tiles
  static constexpr int QB = 6;   // 6 x 2 score accumulators + 2 K^T + 1 broadcast of 16 registers
  static constexpr int PB = 6;   // 6 x 2 output accumulators + 2 V + 1 broadcast
  static constexpr bool bf16_dot = false;
  static constexpr bool f16_pairs = false;  // f16 rows: VCVTPH2PS, then an f32 transpose
  static constexpr bool f16_pair_scores = false;
  static constexpr bool sum_lanes_fast = false;
  static constexpr bool heads_lanes = false;
  static constexpr tile_use tiles = tile_use::every_task;

  /// Prefetches the line at p into L2. An asm statement: GCC deletes a loop of nothing but
  /// __builtin_prefetch calls (it treats the loop as free of side effects).
  static MLKV_SIMD_INLINE void prefetch(const char* p) { __asm__ volatile("prefetcht1 %0" : : "m"(*p)); }
  static MLKV_SIMD_INLINE vf zero() { return _mm256_setzero_ps(); }
  /// Keeps x in a register: an empty asm statement the compiler cannot see through, so that a
  /// vector loaded once and used by several FMAs is not reloaded as each FMA's memory operand
  /// (GCC 12 folds the load into every use: N loads per K^T vector in q.K^T).
  static MLKV_SIMD_INLINE void pin(vf& x) { __asm__("" : "+x"(x)); }
  static MLKV_SIMD_INLINE vf set1(float x) { return _mm256_set1_ps(x); }
  static MLKV_SIMD_INLINE vf load(const float* p) { return _mm256_load_ps(p); }
  static MLKV_SIMD_INLINE void store(float* p, vf x) { _mm256_store_ps(p, x); }
  static MLKV_SIMD_INLINE vf add(vf a, vf b) { return _mm256_add_ps(a, b); }
  static MLKV_SIMD_INLINE vf sub(vf a, vf b) { return _mm256_sub_ps(a, b); }
  static MLKV_SIMD_INLINE vf mul(vf a, vf b) { return _mm256_mul_ps(a, b); }
  static MLKV_SIMD_INLINE vf max(vf a, vf b) { return _mm256_max_ps(a, b); }
  static MLKV_SIMD_INLINE vf fma(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
  static MLKV_SIMD_INLINE float hmax(vf x) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
  }
  static MLKV_SIMD_INLINE vi bits(vf x) { return _mm256_castps_si256(x); }
  static MLKV_SIMD_INLINE vf floats(vi x) { return _mm256_castsi256_ps(x); }
  static MLKV_SIMD_INLINE vi load_bits(const float* p) { return _mm256_load_si256(reinterpret_cast<const __m256i*>(p)); }
  static MLKV_SIMD_INLINE void store_bits(float* p, vi x) { _mm256_store_si256(reinterpret_cast<__m256i*>(p), x); }
  static MLKV_SIMD_INLINE vi broadcast_bits(const float* p) {
    std::int32_t u;
    std::memcpy(&u, p, sizeof u);
    return _mm256_set1_epi32(u);
  }
  static MLKV_SIMD_INLINE vf dot_bf16(vf acc, vi, vi) { return acc; }  // never used: bf16_dot is false

  /// All-ones in lanes 0..n-1.
  static MLKV_SIMD_INLINE vi first(int n) { return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)); }
  static MLKV_SIMD_INLINE bool any_greater(vf x, float y) {
    return _mm256_movemask_ps(_mm256_cmp_ps(x, _mm256_set1_ps(y), _CMP_GT_OQ)) != 0;
  }
  static MLKV_SIMD_INLINE vf keep_first(vf x, int n, vf fill) { return _mm256_blendv_ps(fill, x, _mm256_castsi256_ps(first(n))); }

  /// 2^x for x <= 0, about 1 ulp (see simd_avx512.hpp); 2^n built in the exponent field, so x
  /// is clamped at -126 (weights below 2^-126 of the maximum are negligible).
  static MLKV_SIMD_INLINE vf exp2(vf x) {
    x = _mm256_max_ps(x, _mm256_set1_ps(-126.f));
    const vf n = _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const vf r = _mm256_sub_ps(x, n);
    vf p = _mm256_set1_ps(1.5403530393381609e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3333558146428443e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(9.6181291076284772e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.5504108664821580e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(2.4022650695910071e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(6.9314718055994531e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
    const vi e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
  }

  /// n (1..8) values of storage type T as f32; lanes n.. are zero.
  template <class T>
  static MLKV_SIMD_INLINE vf load_f32(const T* p, int n) {
    if (n < 8) {  // head dims are multiples of 8, so only a defensive path
      alignas(32) T tmp[8] = {};
      std::memcpy(tmp, p, sizeof(T) * static_cast<std::size_t>(std::max(n, 0)));
      return load_f32<T>(tmp, 8);
    }
    if constexpr (std::is_same_v<T, float>) {
      return _mm256_loadu_ps(p);
    } else if constexpr (std::is_same_v<T, bf16>) {
      const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
      return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    } else {
      return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    }
  }
  /// Whether load_v gives the (even, odd) dims of a chunk rather than its two halves.
  template <class T>
  static constexpr bool v_pairs = std::is_same_v<T, bf16>;
  /// nd (8 or 16: head dims are multiples of 8) values of a V row as two f32 vectors: the
  /// halves of the chunk, or for bf16 its even and odd dims; lanes past nd are zero.
  template <class T>
  static MLKV_SIMD_INLINE void load_v(const T* p, int nd, vf& a, vf& b) {
    if constexpr (std::is_same_v<T, bf16>) {
      split_bf16(load_pairs(p, nd / 2), a, b);
    } else {
      a = load_f32<T>(p, 8);
      b = nd > 8 ? load_f32<T>(p + 8, 8) : zero();
    }
  }
  /// n (1..8) 32-bit (d, d+1) pairs of a 16-bit row; the rest zero (masked: no read past n).
  template <class T>
  static MLKV_SIMD_INLINE vi load_pairs(const T* p, int n) {
    if (n >= 8) return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return _mm256_maskload_epi32(reinterpret_cast<const int*>(p), first(n));
  }
  static MLKV_SIMD_INLINE void split_bf16(vi x, vf& even, vf& odd) {
    even = _mm256_castsi256_ps(_mm256_slli_epi32(x, 16));
    odd = _mm256_castsi256_ps(_mm256_and_si256(x, _mm256_set1_epi32(static_cast<int>(0xffff0000u))));
  }
  static MLKV_SIMD_INLINE void split_f16(vi x, vf& even, vf& odd) {
    // Gather the low (even) and high (odd) halves of each 32-bit pair, then convert.
    const vi lo = _mm256_shuffle_epi8(x, _mm256_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15, 0, 1,
                                                          4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15));
    const vi q = _mm256_permute4x64_epi64(lo, 0xd8);  // [even 0-3, even 4-7, odd 0-3, odd 4-7]
    even = _mm256_cvtph_ps(_mm256_castsi256_si128(q));
    odd = _mm256_cvtph_ps(_mm256_extracti128_si256(q, 1));
  }

  /// In-place transpose of 8 x 8 32-bit elements (24 shuffles).
  static MLKV_SIMD_INLINE void transpose(vi (&r)[8]) {
    vf t[8], u[8];
    MLKV_UNROLL
    for (int i = 0; i < 4; ++i) {
      t[2 * i] = _mm256_unpacklo_ps(floats(r[2 * i]), floats(r[2 * i + 1]));
      t[2 * i + 1] = _mm256_unpackhi_ps(floats(r[2 * i]), floats(r[2 * i + 1]));
    }
    MLKV_UNROLL
    for (int i = 0; i < 2; ++i) {
      u[4 * i + 0] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
      u[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0xee);
      u[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
      u[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xee);
    }
    MLKV_UNROLL
    for (int k = 0; k < 4; ++k) {
      r[k] = bits(_mm256_permute2f128_ps(u[k], u[4 + k], 0x20));
      r[4 + k] = bits(_mm256_permute2f128_ps(u[k], u[4 + k], 0x31));
    }
  }
};

#include "detail/kernel_body.inc"

}  // namespace mlkv::cpu::detail::avx2

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#pragma GCC diagnostic pop
#endif

#endif  // MLKV_CPU_X86
