#pragma once
/// \file cpu/isa.hpp
/// The instruction-set paths of the CPU attention kernels, which of them are compiled in, which
/// the running CPU supports, and which one a call uses by default.
///
/// Two ways to choose a path:
///  - at compile time (the default): `default_isa()` is the best path the target flags enable
///    (`-march=native`, `-mavx512bf16`, ...), so a program built for its machine uses it with no
///    run-time check;
///  - at run time: on x86-64 with GCC or Clang every x86 path is compiled in whatever the target
///    flags are (per-function `target` attributes), and `best_isa()` picks the best one the CPU
///    reports through CPUID, so an engine that ships one binary still gets AVX-512 where it
///    exists. Pass it as `attention_options::isa`. Between avx512 and avx512_bf16 it also weighs
///    speed: VDPBF16PS does twice the FLOPs of an FMA per instruction, but some CPUs issue it at a
///    quarter of the FMA rate (measured on an Intel Xeon host: half the FMA's FLOP/s, and the
///    avx512 path 7% faster on 12:1 decode, 23% on prefill), so best_isa() times both
///    instructions once (`bf16_dot_gain()`, about 0.1 ms) and keeps avx512_bf16 only where
///    VDPBF16PS gives at least 1.5x the FMA's FLOP rate (AMD Zen 4: 2x).
/// Asking for a path that is not compiled in or that the CPU lacks is an mlkv::error.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "../error.hpp"

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>
/// Defined when the x86 SIMD paths (AVX2, AVX-512, AVX-512 BF16) are compiled in.
#define MLKV_CPU_X86 1
#endif
#if defined(__aarch64__) && defined(__ARM_NEON)
/// Defined when the NEON path is compiled in (AArch64: NEON is part of the base ISA).
#define MLKV_CPU_NEON 1
#endif

namespace mlkv::cpu {

/// An instruction-set path of the CPU kernels.
enum class isa : std::uint8_t {
  scalar,       ///< plain C++, any CPU; the portable fallback
  avx2,         ///< AVX2 + FMA + F16C, 8 lanes
  avx512,       ///< AVX-512 F/BW/VL/DQ + FMA, 16 lanes; exact f32 arithmetic like avx2
  avx512_bf16,  ///< avx512 plus VDPBF16PS for q.K over bf16 storage (queries rounded to bf16)
  neon,         ///< AArch64 Advanced SIMD, 4 lanes
};

/// Every path, in order of preference (best last).
inline constexpr isa all_isas[] = {isa::scalar, isa::neon, isa::avx2, isa::avx512, isa::avx512_bf16};

/// "scalar", "avx2", "avx512", "avx512_bf16" or "neon".
constexpr std::string_view name_of(isa i) {
  switch (i) {
    case isa::avx2: return "avx2";
    case isa::avx512: return "avx512";
    case isa::avx512_bf16: return "avx512_bf16";
    case isa::neon: return "neon";
    case isa::scalar:
    default: return "scalar";
  }
}

/// Parses a path name (as name_of prints it); false when it names none.
constexpr bool parse_isa(std::string_view s, isa& out) {
  for (isa i : all_isas) {
    if (name_of(i) == s) {
      out = i;
      return true;
    }
  }
  return false;
}

/// True when the kernels of path `i` are compiled into this program.
constexpr bool compiled(isa i) {
  switch (i) {
    case isa::scalar: return true;
#if defined(MLKV_CPU_X86)
    case isa::avx2:
    case isa::avx512:
    case isa::avx512_bf16: return true;
#endif
#if defined(MLKV_CPU_NEON)
    case isa::neon: return true;
#endif
    default: return false;
  }
}

/// The best path the compile-time target flags enable: what a call uses unless told otherwise.
constexpr isa default_isa() {
#if defined(MLKV_CPU_X86) && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && \
    defined(__AVX512DQ__) && defined(__FMA__) && defined(__AVX512BF16__)
  return isa::avx512_bf16;
#elif defined(MLKV_CPU_X86) && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && \
    defined(__AVX512DQ__) && defined(__FMA__)
  return isa::avx512;
#elif defined(MLKV_CPU_X86) && defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
  return isa::avx2;
#elif defined(MLKV_CPU_NEON)
  return isa::neon;
#else
  return isa::scalar;
#endif
}

namespace detail {
/// What the running CPU (and its operating system) supports, read once.
struct cpu_features {
  bool avx2 = false, avx512 = false, avx512_bf16 = false, neon = false;
};

inline cpu_features detect_cpu_features() {
  cpu_features f;
#if defined(MLKV_CPU_X86)
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid(1, &a, &b, &c, &d) == 0) return f;
  const bool fma = (c >> 12) & 1u, f16c = (c >> 29) & 1u, osxsave = (c >> 27) & 1u;
  if (!osxsave) return f;
  // XCR0: which register state the OS saves on a context switch (SSE|AVX = 0x6, + opmask and
  // the upper ZMM halves = 0xe6). Without it the instructions exist but must not be used.
  unsigned xlo = 0, xhi = 0;
  __asm__ volatile("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
  const bool os_avx = (xlo & 0x6u) == 0x6u, os_avx512 = (xlo & 0xe6u) == 0xe6u;
  unsigned a7 = 0, b7 = 0, c7 = 0, d7 = 0;
  if (__get_cpuid_count(7, 0, &a7, &b7, &c7, &d7) == 0) return f;
  const bool avx2 = (b7 >> 5) & 1u;
  const bool avx512f = (b7 >> 16) & 1u, avx512dq = (b7 >> 17) & 1u, avx512bw = (b7 >> 30) & 1u,
             avx512vl = (b7 >> 31) & 1u;
  unsigned a71 = 0, b71 = 0, c71 = 0, d71 = 0;
  const bool bf16 = a7 >= 1 && __get_cpuid_count(7, 1, &a71, &b71, &c71, &d71) != 0 && ((a71 >> 5) & 1u);
  f.avx2 = os_avx && avx2 && fma && f16c;
  f.avx512 = f.avx2 && os_avx512 && avx512f && avx512dq && avx512bw && avx512vl;
  f.avx512_bf16 = f.avx512 && bf16;
#endif
#if defined(MLKV_CPU_NEON)
  f.neon = true;
#endif
  return f;
}

inline const cpu_features& cpu() {
  static const cpu_features f = detect_cpu_features();
  return f;
}
}  // namespace detail

/// True when path `i` is compiled in and the running CPU supports it.
inline bool supported(isa i) {
  if (!compiled(i)) return false;
  const auto& f = detail::cpu();
  switch (i) {
    case isa::avx2: return f.avx2;
    case isa::avx512: return f.avx512;
    case isa::avx512_bf16: return f.avx512_bf16;
    case isa::neon: return f.neon;
    case isa::scalar:
    default: return true;
  }
}

namespace detail {
#if defined(MLKV_CPU_X86)
/// Nanoseconds for `iters` rounds of 12 independent VDPBF16PS (Dot) or FMA chains (12 chains
/// cover a 6-cycle latency at two instructions per cycle): the issue rate, not the latency.
template <bool Dot>
__attribute__((target("avx512f,avx512bf16"), noinline)) inline double dot_rate_probe_ns(int iters) {
  const __m512 a = _mm512_set1_ps(0.999f), b = _mm512_set1_ps(1e-3f);
  const __m512i k = _mm512_set1_epi32(0x3c003c00), q = _mm512_set1_epi32(0x3a803a80);  // bf16 pairs
  // Twelve named accumulators (an array stays in memory with GCC 12: a store-to-load chain).
  __m512 c0 = a, c1 = a, c2 = a, c3 = a, c4 = a, c5 = a, c6 = a, c7 = a, c8 = a, c9 = a, c10 = a, c11 = a;
  // (A macro: a lambda would not carry the function's target attributes.)
#define MLKV_PROBE_STEP(c)                                                        \
  do {                                                                            \
    if constexpr (Dot) {                                                          \
      c = _mm512_dpbf16_ps(c, (__m512bh)k, (__m512bh)q);                          \
    } else {                                                                      \
      c = _mm512_fmadd_ps(c, a, b);                                               \
    }                                                                             \
    __asm__ volatile("" : "+v"(c)); /* in a register every round, between the clock reads */ \
  } while (0)
  const auto t0 = std::chrono::steady_clock::now();
  for (int it = 0; it < iters; ++it) {
    MLKV_PROBE_STEP(c0);
    MLKV_PROBE_STEP(c1);
    MLKV_PROBE_STEP(c2);
    MLKV_PROBE_STEP(c3);
    MLKV_PROBE_STEP(c4);
    MLKV_PROBE_STEP(c5);
    MLKV_PROBE_STEP(c6);
    MLKV_PROBE_STEP(c7);
    MLKV_PROBE_STEP(c8);
    MLKV_PROBE_STEP(c9);
    MLKV_PROBE_STEP(c10);
    MLKV_PROBE_STEP(c11);
  }
#undef MLKV_PROBE_STEP
  const auto t1 = std::chrono::steady_clock::now();
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(c0, c1), _mm512_add_ps(c2, c3)),
                                       _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(c4, c5), _mm512_add_ps(c6, c7)),
                                                     _mm512_add_ps(_mm512_add_ps(c8, c9), _mm512_add_ps(c10, c11)))));
  volatile float sink = lanes[0];  // the chains' results are used
  (void)sink;
  return std::chrono::duration<double, std::nano>(t1 - t0).count();
}
#endif

/// The FLOP rate of VDPBF16PS (two products per lane) over that of FMA (one), measured once:
/// each instruction's best of 5 runs of 24,000. 0 where avx512_bf16 cannot run.
inline double measure_bf16_dot_gain() {
#if defined(MLKV_CPU_X86)
  if (!supported(isa::avx512_bf16)) return 0.0;
  constexpr int iters = 2000;
  double dot = 1e300, fma = 1e300;
  for (int r = 0; r < 5; ++r) {  // alternated, so that a clock change shows in both
    dot = std::min(dot, dot_rate_probe_ns<true>(iters));
    fma = std::min(fma, dot_rate_probe_ns<false>(iters));
  }
  return dot > 0.0 ? 2.0 * fma / dot : 0.0;
#else
  return 0.0;
#endif
}

/// Whether avx512_bf16 is worth its bf16-rounded queries for a measured gain (bf16_dot_gain()).
constexpr bool bf16_dot_pays(double gain) { return gain >= 1.5; }

/// best_isa() for a given VDPBF16PS gain.
inline isa pick_isa(double bf16_gain) {
  isa best = isa::scalar;
  for (isa i : all_isas) {
    if (supported(i)) best = i;
  }
  if (best == isa::avx512_bf16 && !bf16_dot_pays(bf16_gain)) best = isa::avx512;
  return best;
}
}  // namespace detail

/// The FLOP rate of VDPBF16PS over that of FMA on this CPU (2 on AMD Zen 4, 0.5 on the Intel
/// Xeon measured), measured on the first call (about 0.1 ms); 0 where avx512_bf16 cannot run.
inline double bf16_dot_gain() {
  static const double gain = detail::measure_bf16_dot_gain();
  return gain;
}

/// The best path that is compiled in and that the running CPU supports (run-time choice):
/// the last of all_isas that runs here, except avx512_bf16 where its VDPBF16PS is not at least
/// 1.5x faster than FMA (bf16_dot_gain()): then avx512, which computes exact f32 products.
inline isa best_isa() { return detail::pick_isa(supported(isa::avx512_bf16) ? bf16_dot_gain() : 0.0); }

/// Every path usable here (compiled in and supported), worst first.
inline std::vector<isa> supported_isas() {
  std::vector<isa> v;
  for (isa i : all_isas) {
    if (supported(i)) v.push_back(i);
  }
  return v;
}

/// Throws mlkv::error when path `i` cannot run here, naming the paths that can.
inline void require(isa i) {
  if (supported(i)) return;
  std::string usable;
  for (isa u : supported_isas()) usable += (usable.empty() ? "" : ", ") + std::string(name_of(u));
  mlkv::detail::fail("CPU path ", name_of(i), " is ", compiled(i) ? "not supported by this CPU" : "not compiled in",
               "; usable here: ", usable);
}

}  // namespace mlkv::cpu
