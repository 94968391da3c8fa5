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
///    exists. Pass it as `attention_options::isa`.
/// Asking for a path that is not compiled in or that the CPU lacks is an mlkv::error.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "../error.hpp"

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
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

/// The best path that is compiled in and that the running CPU supports (run-time choice).
inline isa best_isa() {
  isa best = isa::scalar;
  for (isa i : all_isas) {
    if (supported(i)) best = i;
  }
  return best;
}

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
