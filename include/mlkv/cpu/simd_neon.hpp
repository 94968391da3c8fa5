#pragma once
/// \file cpu/simd_neon.hpp
/// The AArch64 NEON path of the CPU attention kernels (4 lanes, 32 registers); NEON is part of
/// the AArch64 base ISA, so no target attribute is needed. f32 arithmetic throughout (the BF16
/// dot product BFDOT is an optional Armv8.6 extension and is not used).
/// On other targets this header declares nothing.

#include "isa.hpp"

#if defined(MLKV_CPU_NEON)
#include <arm_neon.h>

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

namespace mlkv::cpu::detail::neon {

/// The NEON SIMD policy of kernel_body.inc.
struct ops {
  using vf = float32x4_t;
  using vi = uint32x4_t;
  static constexpr int W = 4;
  static constexpr int TV = 2;   // 8-token tiles
  static constexpr int QB = 12;  // 12 x 2 score accumulators + 2 K^T + 1 broadcast of 32 registers
  static constexpr int PB = 12;  // 12 x 2 output accumulators + 2 V + 1 broadcast
  static constexpr bool bf16_dot = false;
  static constexpr bool f16_pairs = true;
  static constexpr bool f16_pair_scores = false;
  static constexpr bool sum_lanes_fast = false;
  static constexpr bool heads_lanes = false;
  static constexpr tile_use tiles = tile_use::every_task;

  /// Prefetches the line at p into L2 (an asm statement: GCC may delete a loop of nothing but
  /// __builtin_prefetch calls).
  static MLKV_SIMD_INLINE void prefetch(const char* p) { __asm__ volatile("prfm pldl2keep, %0" : : "Q"(*p)); }
  static MLKV_SIMD_INLINE vf zero() { return vdupq_n_f32(0.f); }
  static MLKV_SIMD_INLINE void pin(vf&) {}  // NEON's FMLA takes no memory operand
  static MLKV_SIMD_INLINE vf set1(float x) { return vdupq_n_f32(x); }
  static MLKV_SIMD_INLINE vf load(const float* p) { return vld1q_f32(p); }
  static MLKV_SIMD_INLINE void store(float* p, vf x) { vst1q_f32(p, x); }
  static MLKV_SIMD_INLINE vf add(vf a, vf b) { return vaddq_f32(a, b); }
  static MLKV_SIMD_INLINE vf sub(vf a, vf b) { return vsubq_f32(a, b); }
  static MLKV_SIMD_INLINE vf mul(vf a, vf b) { return vmulq_f32(a, b); }
  static MLKV_SIMD_INLINE vf max(vf a, vf b) { return vmaxq_f32(a, b); }
  static MLKV_SIMD_INLINE vf fma(vf a, vf b, vf c) { return vfmaq_f32(c, a, b); }
  static MLKV_SIMD_INLINE float hmax(vf x) { return vmaxvq_f32(x); }
  static MLKV_SIMD_INLINE vi bits(vf x) { return vreinterpretq_u32_f32(x); }
  static MLKV_SIMD_INLINE vf floats(vi x) { return vreinterpretq_f32_u32(x); }
  static MLKV_SIMD_INLINE vi load_bits(const float* p) { return vreinterpretq_u32_f32(vld1q_f32(p)); }
  static MLKV_SIMD_INLINE void store_bits(float* p, vi x) { vst1q_f32(p, vreinterpretq_f32_u32(x)); }
  static MLKV_SIMD_INLINE vi broadcast_bits(const float* p) {
    std::uint32_t u;
    std::memcpy(&u, p, sizeof u);
    return vdupq_n_u32(u);
  }
  static MLKV_SIMD_INLINE vf dot_bf16(vf acc, vi, vi) { return acc; }  // never used: bf16_dot is false

  static MLKV_SIMD_INLINE bool any_greater(vf x, float y) { return vmaxvq_f32(x) > y; }
  static MLKV_SIMD_INLINE vf keep_first(vf x, int n, vf fill) {
    const int32_t idx[4] = {0, 1, 2, 3};
    return vbslq_f32(vcltq_s32(vld1q_s32(idx), vdupq_n_s32(n)), x, fill);
  }

  /// 2^x for x <= 0, about 1 ulp (see simd_avx512.hpp); x clamped at -126.
  static MLKV_SIMD_INLINE vf exp2(vf x) {
    x = vmaxq_f32(x, vdupq_n_f32(-126.f));
    const vf n = vrndnq_f32(x);
    const vf r = vsubq_f32(x, n);
    vf p = vdupq_n_f32(1.5403530393381609e-4f);
    p = vfmaq_f32(vdupq_n_f32(1.3333558146428443e-3f), p, r);
    p = vfmaq_f32(vdupq_n_f32(9.6181291076284772e-3f), p, r);
    p = vfmaq_f32(vdupq_n_f32(5.5504108664821580e-2f), p, r);
    p = vfmaq_f32(vdupq_n_f32(2.4022650695910071e-1f), p, r);
    p = vfmaq_f32(vdupq_n_f32(6.9314718055994531e-1f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.f), p, r);
    const int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23);
    return vmulq_f32(p, vreinterpretq_f32_s32(e));
  }

  /// n (1..4) values of storage type T as f32; lanes n.. are zero.
  template <class T>
  static MLKV_SIMD_INLINE vf load_f32(const T* p, int n) {
    if (n < 4) {  // head dims are multiples of 8, so only a defensive path
      T tmp[4] = {};
      std::memcpy(tmp, p, sizeof(T) * static_cast<std::size_t>(std::max(n, 0)));
      return load_f32<T>(tmp, 4);
    }
    if constexpr (std::is_same_v<T, float>) {
      return vld1q_f32(p);
    } else if constexpr (std::is_same_v<T, bf16>) {
      return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(reinterpret_cast<const std::uint16_t*>(p)), 16));
    } else {
      return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(reinterpret_cast<const std::uint16_t*>(p))));
    }
  }
  /// Whether load_v gives the (even, odd) dims of a chunk rather than its two halves.
  template <class T>
  static constexpr bool v_pairs = std::is_same_v<T, bf16>;
  /// nd (8: head dims are multiples of 8) values of a V row as two f32 vectors: the halves of
  /// the chunk, or for bf16 its even and odd dims.
  template <class T>
  static MLKV_SIMD_INLINE void load_v(const T* p, int nd, vf& a, vf& b) {
    if constexpr (std::is_same_v<T, bf16>) {
      split_bf16(load_pairs(p, nd / 2), a, b);
    } else {
      a = load_f32<T>(p, 4);
      b = nd > 4 ? load_f32<T>(p + 4, 4) : zero();
    }
  }
  /// n (1..4) 32-bit (d, d+1) pairs of a 16-bit row; the rest zero.
  template <class T>
  static MLKV_SIMD_INLINE vi load_pairs(const T* p, int n) {
    if (n < 4) {
      std::uint32_t tmp[4] = {};
      std::memcpy(tmp, p, 4 * static_cast<std::size_t>(std::max(n, 0)));
      return vld1q_u32(tmp);
    }
    return vreinterpretq_u32_u16(vld1q_u16(reinterpret_cast<const std::uint16_t*>(p)));
  }
  static MLKV_SIMD_INLINE void split_bf16(vi x, vf& even, vf& odd) {
    even = vreinterpretq_f32_u32(vshlq_n_u32(x, 16));
    odd = vreinterpretq_f32_u32(vandq_u32(x, vdupq_n_u32(0xffff0000u)));
  }
  static MLKV_SIMD_INLINE void split_f16(vi x, vf& even, vf& odd) {
    even = vcvt_f32_f16(vreinterpret_f16_u16(vmovn_u32(x)));
    odd = vcvt_f32_f16(vreinterpret_f16_u16(vshrn_n_u32(x, 16)));
  }

  /// In-place transpose of 4 x 4 32-bit elements.
  static MLKV_SIMD_INLINE void transpose(vi (&r)[4]) {
    const vi t0 = vtrn1q_u32(r[0], r[1]), t1 = vtrn2q_u32(r[0], r[1]);
    const vi t2 = vtrn1q_u32(r[2], r[3]), t3 = vtrn2q_u32(r[2], r[3]);
    r[0] = vreinterpretq_u32_u64(vtrn1q_u64(vreinterpretq_u64_u32(t0), vreinterpretq_u64_u32(t2)));
    r[1] = vreinterpretq_u32_u64(vtrn1q_u64(vreinterpretq_u64_u32(t1), vreinterpretq_u64_u32(t3)));
    r[2] = vreinterpretq_u32_u64(vtrn2q_u64(vreinterpretq_u64_u32(t0), vreinterpretq_u64_u32(t2)));
    r[3] = vreinterpretq_u32_u64(vtrn2q_u64(vreinterpretq_u64_u32(t1), vreinterpretq_u64_u32(t3)));
  }
};

#include "detail/kernel_body.inc"

}  // namespace mlkv::cpu::detail::neon

#endif  // MLKV_CPU_NEON
