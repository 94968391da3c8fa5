#pragma once
/// \file cpu/simd_scalar.hpp
/// The portable path of the CPU attention kernels: the same tiled algorithm as the SIMD paths
/// (kernel_body.inc) with one-lane "vectors" of plain floats, for any CPU and compiler.

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

namespace mlkv::cpu::detail::scalar {

/// The one-lane SIMD policy of kernel_body.inc.
struct ops {
  using vf = float;
  using vi = std::uint32_t;
  static constexpr int W = 1;
  static constexpr int TV = 16;  // 16-token tiles
  static constexpr int QB = 4;
  static constexpr int PB = 4;
  static constexpr bool bf16_dot = false;
  static constexpr bool f16_pairs = false;
  static constexpr bool f16_pair_scores = false;
  static constexpr bool sum_lanes_fast = false;
  static constexpr bool heads_lanes = false;
  static constexpr tile_use tiles = tile_use::every_task;

  /// A prefetch hint (the compiler may drop it: the portable path does not rely on it).
  static MLKV_SIMD_INLINE void prefetch(const char* p) { __builtin_prefetch(p, 0, 2); }
  static MLKV_SIMD_INLINE vf zero() { return 0.f; }
  static MLKV_SIMD_INLINE void pin(vf&) {}
  static MLKV_SIMD_INLINE vf set1(float x) { return x; }
  static MLKV_SIMD_INLINE vf load(const float* p) { return *p; }
  static MLKV_SIMD_INLINE void store(float* p, vf x) { *p = x; }
  static MLKV_SIMD_INLINE vf add(vf a, vf b) { return a + b; }
  static MLKV_SIMD_INLINE vf sub(vf a, vf b) { return a - b; }
  static MLKV_SIMD_INLINE vf mul(vf a, vf b) { return a * b; }
  static MLKV_SIMD_INLINE vf max(vf a, vf b) { return std::max(a, b); }
  static MLKV_SIMD_INLINE vf fma(vf a, vf b, vf c) { return std::fma(a, b, c); }
  static MLKV_SIMD_INLINE float hmax(vf x) { return x; }
  static MLKV_SIMD_INLINE vi bits(vf x) { return std::bit_cast<vi>(x); }
  static MLKV_SIMD_INLINE vf floats(vi x) { return std::bit_cast<vf>(x); }
  static MLKV_SIMD_INLINE vi load_bits(const float* p) {
    vi u;
    std::memcpy(&u, p, sizeof u);
    return u;
  }
  static MLKV_SIMD_INLINE void store_bits(float* p, vi x) { std::memcpy(p, &x, sizeof x); }
  static MLKV_SIMD_INLINE vi broadcast_bits(const float* p) { return load_bits(p); }
  static MLKV_SIMD_INLINE vf dot_bf16(vf acc, vi, vi) { return acc; }  // never used: bf16_dot is false

  static MLKV_SIMD_INLINE bool any_greater(vf x, float y) { return x > y; }
  static MLKV_SIMD_INLINE vf keep_first(vf x, int n, vf fill) { return n >= 1 ? x : fill; }
  static MLKV_SIMD_INLINE vf exp2(vf x) { return std::exp2(x); }

  template <class T>
  static MLKV_SIMD_INLINE vf load_f32(const T* p, int) {
    return to_float(*p);
  }
  template <class T>
  static MLKV_SIMD_INLINE vi load_pairs(const T* p, int) {
    vi u;
    std::memcpy(&u, p, sizeof u);
    return u;
  }
  /// A chunk of two values is its own (even, odd) split: plain order.
  template <class T>
  static constexpr bool v_pairs = false;
  template <class T>
  static MLKV_SIMD_INLINE void load_v(const T* p, int nd, vf& a, vf& b) {
    a = to_float(p[0]);
    b = nd > 1 ? to_float(p[1]) : 0.f;
  }
  static MLKV_SIMD_INLINE void split_bf16(vi x, vf& even, vf& odd) {
    even = bf16_bits_to_float(static_cast<std::uint16_t>(x & 0xffffu));
    odd = bf16_bits_to_float(static_cast<std::uint16_t>(x >> 16));
  }
  static MLKV_SIMD_INLINE void split_f16(vi x, vf& even, vf& odd) {
    even = f16_bits_to_float(static_cast<std::uint16_t>(x & 0xffffu));
    odd = f16_bits_to_float(static_cast<std::uint16_t>(x >> 16));
  }
  static MLKV_SIMD_INLINE void transpose(vi (&)[1]) {}
};

#include "detail/kernel_body.inc"

}  // namespace mlkv::cpu::detail::scalar
