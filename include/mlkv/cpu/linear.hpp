#pragma once
/// \file cpu/linear.hpp
/// Linear layers for the CPU model: y[m, n] = x[m, k] . W[n, k]^T + b[n] (torch.nn.Linear),
/// f32 activations, f32 or bf16 weights, multi-threaded over output features on an executor.
///
/// Decoding reads every weight once per step, so the kernel is built around streaming W: each
/// weight row is loaded once and used for every row of x (up to 4 at a time in registers, the
/// tile then stays in L1/L2 for the next 4), and threads split the output features so every core
/// streams its own part of W.
///
/// Paths (chosen at compile time from the target flags):
///  - AVX-512 + AVX512_BF16, bf16 weights: VDPBF16PS. The activations are rounded to bf16 (as a
///    bf16 PyTorch model computes), products and sums in f32.
///  - AVX-512F, f32 weights (and bf16 weights without AVX512_BF16: widened to f32): FMA, exact f32.
///  - otherwise: plain loops (f32 accumulation) that the compiler vectorises.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "../dtype.hpp"
#include "../error.hpp"
#include "executor.hpp"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace mlkv::cpu {

namespace detail::linear_impl {

inline constexpr int max_rows = 4;  ///< rows of x per register tile
inline constexpr int tile_cols = 4;  ///< weight rows per register tile

/// Plain tile: y[i, j] = x[i, :] . w[j, :] + b[j] for i < rows, j < cols.
template <class W>
void tile_plain(const float* x, std::size_t ldx, int rows, const W* w, std::size_t ldw, int cols, int k,
                const float* bias, float* y, std::size_t ldy) {
  for (int i = 0; i < rows; ++i) {
    for (int j = 0; j < cols; ++j) {
      const float* xi = x + static_cast<std::size_t>(i) * ldx;
      const W* wj = w + static_cast<std::size_t>(j) * ldw;
      float s = 0.f;
      for (int t = 0; t < k; ++t) s += xi[t] * to_float(wj[t]);
      y[static_cast<std::size_t>(i) * ldy + static_cast<std::size_t>(j)] = s + (bias != nullptr ? bias[j] : 0.f);
    }
  }
}

#if defined(__AVX512F__)
/// 16 f32 values of a weight row from `p` (f32 or bf16 widened), lanes >= n zero.
template <class W>
MLKV_ALWAYS_INLINE __m512 load16(const W* p, int n) {
  const __mmask16 m = n >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << n) - 1u);
  if constexpr (std::is_same_v<W, float>) {
    return _mm512_maskz_loadu_ps(m, p);
  } else {
    static_assert(std::is_same_v<W, bf16>);
    const __m256i h = _mm256_maskz_loadu_epi16(m, p);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
}

/// Sum of the 16 lanes. (GCC 12's reduce/extract intrinsics trip -Wuninitialized inside their
/// own header, bug 105593, so the masked forms are used.)
MLKV_ALWAYS_INLINE float hsum(__m512 v) {
  const __m256 h = _mm256_add_ps(_mm512_maskz_extractf32x8_ps(0xff, v, 0), _mm512_maskz_extractf32x8_ps(0xff, v, 1));
  const __m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  const __m128 d = _mm_add_ps(q, _mm_movehl_ps(q, q));
  return _mm_cvtss_f32(_mm_add_ss(d, _mm_movehdup_ps(d)));
}

/// The four sums of a0..a3, lane j of the result holding the sum of aj: one shuffle tree for four
/// outputs instead of four reductions (a tile's reductions otherwise cost as much as its k loop
/// for k = 768).
MLKV_ALWAYS_INLINE __m128 hsum4(__m512 a0, __m512 a1, __m512 a2, __m512 a3) {
  const __mmask16 all = 0xffff;
  // Per 128-bit lane: [a0 0+2, a1 0+2, a0 1+3, a1 1+3] and the same for a2, a3.
  const __m512 t0 = _mm512_add_ps(_mm512_maskz_unpacklo_ps(all, a0, a1), _mm512_maskz_unpackhi_ps(all, a0, a1));
  const __m512 t1 = _mm512_add_ps(_mm512_maskz_unpacklo_ps(all, a2, a3), _mm512_maskz_unpackhi_ps(all, a2, a3));
  // Per 128-bit lane: [a0, a1, a2, a3] partial sums.
  const __m512d t0d = _mm512_castps_pd(t0), t1d = _mm512_castps_pd(t1);
  const __m512 u = _mm512_add_ps(_mm512_castpd_ps(_mm512_maskz_unpacklo_pd(0xff, t0d, t1d)),
                                 _mm512_castpd_ps(_mm512_maskz_unpackhi_pd(0xff, t0d, t1d)));
  // Sum the four 128-bit lanes.
  const __m256 h = _mm256_add_ps(_mm512_maskz_extractf32x8_ps(0xff, u, 0), _mm512_maskz_extractf32x8_ps(0xff, u, 1));
  return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

/// y[j] = sum(acc[j]) + bias[j] for the C accumulators of one tile row.
template <int C>
MLKV_ALWAYS_INLINE void store_row(const __m512 (&acc)[C], const float* bias, float* y) {
  if constexpr (C == 4) {
    __m128 s = hsum4(acc[0], acc[1], acc[2], acc[3]);
    if (bias != nullptr) s = _mm_add_ps(s, _mm_loadu_ps(bias));
    _mm_storeu_ps(y, s);
  } else {
#pragma GCC unroll 8
    for (int j = 0; j < C; ++j) y[j] = hsum(acc[j]) + (bias != nullptr ? bias[j] : 0.f);
  }
}

/// (Every loop over R and C is unrolled: the accumulators must live in registers, and GCC at -O2
/// otherwise keeps them on the stack.)
/// FMA tile, exact f32 products: R rows of x by C weight rows.
template <int R, int C, class W>
void tile_fma(const float* x, std::size_t ldx, const W* w, std::size_t ldw, int k, const float* bias, float* y,
              std::size_t ldy) {
  __m512 acc[R][C];
  #pragma GCC unroll 8
  for (int i = 0; i < R; ++i)
    #pragma GCC unroll 8
    for (int j = 0; j < C; ++j) acc[i][j] = _mm512_setzero_ps();
  for (int t = 0; t < k; t += 16) {
    const int n = k - t;
    __m512 wv[C];
    #pragma GCC unroll 8
    for (int j = 0; j < C; ++j) {
      _mm_prefetch(reinterpret_cast<const char*>(w + static_cast<std::size_t>(j + 2 * tile_cols) * ldw + t), _MM_HINT_T0);
      wv[j] = load16(w + static_cast<std::size_t>(j) * ldw + t, n);
    }
    #pragma GCC unroll 8
    for (int i = 0; i < R; ++i) {
      const __m512 xv = load16(x + static_cast<std::size_t>(i) * ldx + t, n);
      #pragma GCC unroll 8
      for (int j = 0; j < C; ++j) acc[i][j] = _mm512_fmadd_ps(xv, wv[j], acc[i][j]);
    }
  }
  #pragma GCC unroll 8
  for (int i = 0; i < R; ++i) store_row<C>(acc[i], bias, y + static_cast<std::size_t>(i) * ldy);
}
#endif

#if defined(__AVX512F__) && defined(__AVX512BF16__) && defined(__AVX512BW__)
/// 32 bf16 values from `p`, lanes >= n zero.
MLKV_ALWAYS_INLINE __m512bh load32(const bf16* p, int n) {
  const __mmask32 m = n >= 32 ? ~__mmask32{0} : static_cast<__mmask32>((1u << n) - 1u);
  return reinterpret_cast<__m512bh>(_mm512_maskz_loadu_epi16(m, p));
}

/// One row of x by C weight rows, each weight row read start to end before the next (two
/// accumulator chains per row). A matrix-vector product is a pure stream of W: read in address
/// order, the hardware prefetchers keep it going at 32-41 GB/s on the 2-core Zen 4 (1 thread:
/// 22 GB/s), where the interleaved 4-row walk of tile_dpbf16 reached 20-23 GB/s (12 with 1
/// thread) whatever the software prefetch distance.
template <int C>
void row_dpbf16(const bf16* xb, const bf16* w, std::size_t ldw, int k, const float* bias, float* y) {
  __m512 acc[C];
  #pragma GCC unroll 8
  for (int j = 0; j < C; ++j) {
    const bf16* wj = w + static_cast<std::size_t>(j) * ldw;
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    int t = 0;
    for (; t + 64 <= k; t += 64) {
      a0 = _mm512_dpbf16_ps(a0, load32(xb + t, 32), load32(wj + t, 32));
      a1 = _mm512_dpbf16_ps(a1, load32(xb + t + 32, 32), load32(wj + t + 32, 32));
    }
    for (; t < k; t += 32) a0 = _mm512_dpbf16_ps(a0, load32(xb + t, k - t), load32(wj + t, k - t));
    acc[j] = _mm512_add_ps(a0, a1);
  }
  store_row<C>(acc, bias, y);
}

/// VDPBF16PS tile: x already rounded to bf16 (xb), R rows by C weight rows. One row of x goes
/// to row_dpbf16; with several, each weight vector loaded feeds R products, and the interleaved
/// walk keeps the arithmetic dense.
template <int R, int C>
void tile_dpbf16(const bf16* xb, std::size_t ldx, const bf16* w, std::size_t ldw, int k, const float* bias, float* y,
                 std::size_t ldy) {
  if constexpr (R == 1) {
    (void)ldx;
    (void)ldy;
    return row_dpbf16<C>(xb, w, ldw, k, bias, y);
  }
  __m512 acc[R][C];
  #pragma GCC unroll 8
  for (int i = 0; i < R; ++i)
    #pragma GCC unroll 8
    for (int j = 0; j < C; ++j) acc[i][j] = _mm512_setzero_ps();
  for (int t = 0; t < k; t += 32) {
    const int n = k - t;
    __m512bh wv[C];
    #pragma GCC unroll 8
    for (int j = 0; j < C; ++j) {
      // The rows two tiles ahead: a lone core streaming W from DRAM is latency-bound
      // without it (measured 5.8 GB/s against 17.8 GB/s for a plain read on Zen 4).
      _mm_prefetch(reinterpret_cast<const char*>(w + static_cast<std::size_t>(j + 2 * tile_cols) * ldw + t), _MM_HINT_T0);
      wv[j] = load32(w + static_cast<std::size_t>(j) * ldw + t, n);
    }
    #pragma GCC unroll 8
    for (int i = 0; i < R; ++i) {
      const __m512bh xv = load32(xb + static_cast<std::size_t>(i) * ldx + t, n);
      #pragma GCC unroll 8
      for (int j = 0; j < C; ++j) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], xv, wv[j]);
    }
  }
  #pragma GCC unroll 8
  for (int i = 0; i < R; ++i) store_row<C>(acc[i], bias, y + static_cast<std::size_t>(i) * ldy);
}
#define MLKV_LINEAR_DPBF16 1
#endif

/// Dispatches a tile of `rows` (1..4) x `cols` (1..4) to the compile-time tile kernel.
template <class X, class W, class Tile>
void dispatch_tile(int rows, int cols, Tile&& tile) {
  auto by_cols = [&]<int R>(std::integral_constant<int, R>) {
    switch (cols) {
      case 1: tile.template operator()<R, 1>(); break;
      case 2: tile.template operator()<R, 2>(); break;
      case 3: tile.template operator()<R, 3>(); break;
      default: tile.template operator()<R, 4>(); break;
    }
  };
  switch (rows) {
    case 1: by_cols(std::integral_constant<int, 1>{}); break;
    case 2: by_cols(std::integral_constant<int, 2>{}); break;
    case 3: by_cols(std::integral_constant<int, 3>{}); break;
    default: by_cols(std::integral_constant<int, 4>{}); break;
  }
}

}  // namespace detail::linear_impl

/// Name of the arithmetic linear() uses for weights of type W on this build.
template <class W>
constexpr const char* linear_path() {
#if defined(MLKV_LINEAR_DPBF16)
  if constexpr (std::is_same_v<W, bf16>) return "avx512_bf16 (vdpbf16ps, activations rounded to bf16)";
#endif
#if defined(__AVX512F__)
  return "avx512 (fma, f32)";
#else
  return "scalar (f32)";
#endif
}

/// y[m, n] = x[m, k] . w[n, k]^T + bias[n] (bias may be null).
/// x: [m, k] f32, row stride ldx (>= k); w: [n, k] f32 or bf16, rows contiguous; y: [m, n] f32,
/// row stride ldy (>= n). Parallel over output features on `ex` (null: the calling thread).
template <class W>
void linear(const float* x, int m, int k, std::size_t ldx, const W* w, int n, const float* bias, float* y,
            std::size_t ldy, executor* ex = nullptr) {
  static_assert(std::is_same_v<W, float> || std::is_same_v<W, bf16>, "mlkv: linear weights must be float or bf16");
  MLKV_CHECK(m >= 0 && n >= 0 && k >= 1, "linear sizes m=", m, " n=", n, " k=", k, " (need m, n >= 0, k >= 1)");
  MLKV_CHECK(ldx >= static_cast<std::size_t>(k) && ldy >= static_cast<std::size_t>(n), "linear strides ldx=", ldx,
             " (>= k=", k, ") ldy=", ldy, " (>= n=", n, ")");
  if (m == 0 || n == 0) return;
  MLKV_CHECK(x != nullptr && w != nullptr && y != nullptr, "linear: null input, weight or output");
  namespace L = detail::linear_impl;

#if defined(MLKV_LINEAR_DPBF16)
  // Round the activations to bf16 once per call (RNE), then every tile streams bf16 x bf16.
  std::vector<bf16> xb;
  if constexpr (std::is_same_v<W, bf16>) {
    xb.resize(static_cast<std::size_t>(m) * static_cast<std::size_t>(k));
    for (int i = 0; i < m; ++i)
      for (int t = 0; t < k; ++t)
        xb[static_cast<std::size_t>(i) * k + t] = from_float<bf16>(x[static_cast<std::size_t>(i) * ldx + t]);
  }
#endif

  // Tasks own disjoint ranges of output features; each range is a multiple of the tile width.
  const int conc = ex != nullptr ? ex->concurrency() : 1;
  const int col_tiles = (n + L::tile_cols - 1) / L::tile_cols;
  const int tasks = std::max(1, std::min(col_tiles, conc * 8));
  const int tiles_per_task = (col_tiles + tasks - 1) / tasks;

  auto body = [&](int task) {
    const int j0 = task * tiles_per_task * L::tile_cols;
    const int j1 = std::min(n, j0 + tiles_per_task * L::tile_cols);
    for (int j = j0; j < j1; j += L::tile_cols) {
      const int cols = std::min(L::tile_cols, j1 - j);
      const W* wj = w + static_cast<std::size_t>(j) * static_cast<std::size_t>(k);
      const float* bj = bias != nullptr ? bias + j : nullptr;
      for (int i = 0; i < m; i += L::max_rows) {
        const int rows = std::min(L::max_rows, m - i);
        float* yij = y + static_cast<std::size_t>(i) * ldy + static_cast<std::size_t>(j);
#if defined(MLKV_LINEAR_DPBF16)
        if constexpr (std::is_same_v<W, bf16>) {
          const bf16* xi = xb.data() + static_cast<std::size_t>(i) * k;
          L::dispatch_tile<float, W>(rows, cols, [&]<int R, int C>() {
            L::tile_dpbf16<R, C>(xi, static_cast<std::size_t>(k), wj, static_cast<std::size_t>(k), k, bj, yij, ldy);
          });
          continue;
        }
#endif
        const float* xi = x + static_cast<std::size_t>(i) * ldx;
#if defined(__AVX512F__)
        L::dispatch_tile<float, W>(rows, cols, [&]<int R, int C>() {
          L::tile_fma<R, C>(xi, ldx, wj, static_cast<std::size_t>(k), k, bj, yij, ldy);
        });
#else
        L::tile_plain(xi, ldx, rows, wj, static_cast<std::size_t>(k), cols, k, bj, yij, ldy);
#endif
      }
    }
  };
  if (ex != nullptr && tasks > 1) {
    ex->parallel_for(tasks, task_ref(body));
  } else {
    for (int t = 0; t < tasks; ++t) body(t);
  }
}

/// linear() with dense rows (ldx = k, ldy = n).
template <class W>
void linear(const float* x, int m, int k, const W* w, int n, const float* bias, float* y, executor* ex = nullptr) {
  linear(x, m, k, static_cast<std::size_t>(k), w, n, bias, y, static_cast<std::size_t>(n), ex);
}

}  // namespace mlkv::cpu
