#pragma once
/// \file dtype.hpp
/// Storage types of the KV cache: f32, f16 (IEEE binary16) and bf16 (bfloat16).
///
/// f16 and bf16 are plain 16-bit containers with explicit conversions, usable on the host and
/// (under nvcc) on the device. Conversion from float rounds to nearest, ties to even; NaN stays
/// NaN (quieted, sign kept), infinities and signed zeros are kept, f16 subnormals are exact.

#include <bit>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <type_traits>

#include "config.hpp"

namespace mlkv {

/// IEEE 754 binary16 storage.
struct f16 {
  std::uint16_t bits;
};
/// bfloat16 storage: the upper half of an IEEE binary32.
struct bf16 {
  std::uint16_t bits;
};
/// 32-bit float storage.
using f32 = float;

/// A storage type named at run time (config files, command lines, dispatch).
enum class dtype : std::uint8_t { f32, f16, bf16 };

namespace detail {
MLKV_HOST_DEVICE constexpr std::uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  return std::bit_cast<std::uint32_t>(f);
#endif
}
MLKV_HOST_DEVICE constexpr float bits_float(std::uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  return std::bit_cast<float>(u);
#endif
}
}  // namespace detail

/// float -> binary16 bits, round to nearest even (pure integer arithmetic: no FTZ surprises).
MLKV_HOST_DEVICE constexpr std::uint16_t float_to_f16_bits(float f) {
  const std::uint32_t x = detail::float_bits(f);
  const std::uint32_t sign = (x >> 16) & 0x8000u;
  std::uint32_t ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) {  // NaN: keep the top payload bits, force quiet
    return static_cast<std::uint16_t>(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));
  }
  if (ax >= 0x477ff000u) {  // >= 65520 (halfway above 65504, ties to even go up) and inf
    return static_cast<std::uint16_t>(sign | 0x7c00u);
  }
  if (ax >= 0x38800000u) {  // normal half: >= 2^-14
    const std::uint32_t odd = (ax >> 13) & 1u;
    ax += 0xfffu + odd;
    ax -= static_cast<std::uint32_t>(127 - 15) << 23;
    return static_cast<std::uint16_t>(sign | (ax >> 13));
  }
  if (ax <= 0x33000000u) {  // <= 2^-25: rounds to zero (2^-25 is a tie, zero is even)
    return static_cast<std::uint16_t>(sign);
  }
  // Subnormal half: value = m * 2^(e-150); in units of 2^-24 that is m >> (126 - e).
  const std::uint32_t e = ax >> 23;
  const std::uint32_t m = (ax & 0x7fffffu) | 0x800000u;
  const std::uint32_t shift = 126u - e;  // 14..24
  std::uint32_t r = m >> shift;
  const std::uint32_t rem = m & ((1u << shift) - 1u);
  const std::uint32_t half = 1u << (shift - 1u);
  if (rem > half || (rem == half && (r & 1u))) ++r;
  return static_cast<std::uint16_t>(sign | r);
}

/// binary16 bits -> float (exact).
MLKV_HOST_DEVICE constexpr float f16_bits_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  std::int32_t e = (h >> 10) & 0x1f;
  std::uint32_t m = h & 0x3ffu;
  if (e == 0x1f) return detail::bits_float(sign | 0x7f800000u | (m << 13));
  if (e == 0) {
    if (m == 0) return detail::bits_float(sign);
    e = 1;
    while ((m & 0x400u) == 0) {
      m <<= 1;
      --e;
    }
    m &= 0x3ffu;
  }
  return detail::bits_float(sign | (static_cast<std::uint32_t>(e + 112) << 23) | (m << 13));
}

/// float -> bfloat16 bits, round to nearest even; NaN stays a quiet NaN.
MLKV_HOST_DEVICE constexpr std::uint16_t float_to_bf16_bits(float f) {
  const std::uint32_t x = detail::float_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((x >> 16) | 0x40u);
  return static_cast<std::uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

/// bfloat16 bits -> float (exact).
MLKV_HOST_DEVICE constexpr float bf16_bits_to_float(std::uint16_t b) {
  return detail::bits_float(static_cast<std::uint32_t>(b) << 16);
}

MLKV_HOST_DEVICE constexpr float to_float(float x) { return x; }
MLKV_HOST_DEVICE constexpr float to_float(f16 x) { return f16_bits_to_float(x.bits); }
MLKV_HOST_DEVICE constexpr float to_float(bf16 x) { return bf16_bits_to_float(x.bits); }

/// Converts a float to storage type T, rounding to nearest even.
template <class T>
MLKV_HOST_DEVICE constexpr T from_float(float x) {
  if constexpr (std::is_same_v<T, float>) {
    return x;
  } else if constexpr (std::is_same_v<T, f16>) {
    return f16{float_to_f16_bits(x)};
  } else {
    static_assert(std::is_same_v<T, bf16>, "mlkv: storage type must be float, mlkv::f16 or mlkv::bf16");
    return bf16{float_to_bf16_bits(x)};
  }
}

/// True for the three storage types.
template <class T>
inline constexpr bool is_storage_v =
    std::is_same_v<T, float> || std::is_same_v<T, f16> || std::is_same_v<T, bf16>;

/// The run-time tag of a storage type.
template <class T>
inline constexpr dtype dtype_of = std::is_same_v<T, float> ? dtype::f32
                                  : std::is_same_v<T, f16> ? dtype::f16
                                                           : dtype::bf16;

/// Bytes of one value of a storage type.
constexpr std::size_t size_of(dtype t) { return t == dtype::f32 ? 4 : 2; }

/// "f32", "f16" or "bf16".
constexpr std::string_view name_of(dtype t) {
  return t == dtype::f32 ? "f32" : t == dtype::f16 ? "f16" : "bf16";
}

/// Parses "f32" | "f16" | "bf16"; false when the name is none of them.
constexpr bool parse_dtype(std::string_view s, dtype& out) {
  if (s == "f32") { out = dtype::f32; return true; }
  if (s == "f16") { out = dtype::f16; return true; }
  if (s == "bf16") { out = dtype::bf16; return true; }
  return false;
}

/// Calls f(T{}) with the storage type named by t (f32 -> float).
template <class F>
decltype(auto) visit_dtype(dtype t, F&& f) {
  switch (t) {
    case dtype::f16: return f(f16{});
    case dtype::bf16: return f(bf16{});
    default: return f(float{});
  }
}

}  // namespace mlkv
